"""Settings for the API tests: the test's own prefixes, a verify key, test feature views, an admin key."""

from __future__ import annotations

from typing import Any

from streaming.learning.keys import SigningKey
from streaming.settings import Settings

SIGNER = SigningKey(bytes(range(100, 132)))  # signs the tests' snapshots; the API holds its public key only
ADMIN_KEY = "admin-key"


def serving_settings(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(
        update={
            "verify_keys": [SIGNER.public.encoded],
            "features_module": "tests.support.feature_defs",
            "admin_api_keys": [ADMIN_KEY],
            **update,
        }
    )
