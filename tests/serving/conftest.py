"""What the API's integration tests on real Kafka and Redis share: settings with the test's verify key and
one key for the score, ingest and read scopes, and Rivulet's topics created for the test (deleted after)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings
from tests.support.serving_env import serving_settings

OPS_KEY = "ops-key"  # the score, ingest and read scopes (their separation is tested in test_security.py)


@pytest.fixture
def env(settings: Settings, kafka_up: str, redis_client: Any) -> Iterator[Settings]:
    s = serving_settings(
        settings,
        serve_poll_s=0.5,
        scoring_api_keys=[OPS_KEY],
        ingest_api_keys=[OPS_KEY],
        read_api_keys=[OPS_KEY],
    )
    with TopicAdmin(s) as admin:
        admin.create()
        yield s
        admin.delete(s.topics.all())
