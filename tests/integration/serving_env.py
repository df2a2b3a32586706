"""Settings for the API tests: the test's own prefixes, a signing secret, test feature views, an admin key."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from streaming.settings import Settings

SECRET = "serving-test-secret"
ADMIN_KEY = "admin-key"


def serving_settings(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(
        update={
            "signing_secret": SecretStr(SECRET),
            "features_module": "tests.feature_defs",
            "admin_api_keys": [ADMIN_KEY],
            **update,
        }
    )
