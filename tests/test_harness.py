"""The test harness: live services per test; a missing service fails under CI instead of skipping."""

from __future__ import annotations

import os
import subprocess

import pytest
import redis

from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings
from tests.support.processes import pytest_child

pytestmark = pytest.mark.integration


def test_fixtures_give_fresh_topics_and_redis_prefixes(
    rivulet_topics: Settings, redis_client: redis.Redis
) -> None:
    with TopicAdmin(rivulet_topics) as admin:
        assert admin.list_topics() == sorted(rivulet_topics.topics.all())
        assert all(admin.describe(t).messages == 0 for t in rivulet_topics.topics.all())
    key = f"{rivulet_topics.redis_prefix}probe"
    assert redis_client.exists(key) == 0
    redis_client.set(key, b"1")
    assert redis_client.get(key) == b"1"


def _run_with_dead_kafka(require: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "RIVULET_REQUIRE_SERVICES")}
    env["RIVULET_KAFKA_BOOTSTRAP"] = "127.0.0.1:1"  # nothing listens on port 1
    if require:
        env["RIVULET_REQUIRE_SERVICES"] = "1"
    return pytest_child(
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "tests/test_harness.py::test_fixtures_give_fresh_topics_and_redis_prefixes",
        env=env,
    )


def test_an_unreachable_service_fails_when_services_are_required(redis_up: str) -> None:
    required = _run_with_dead_kafka(require=True)
    assert required.returncode == 1, required.stdout
    assert "1 error" in required.stdout
    assert "a missing service is a failure" in required.stdout

    optional = _run_with_dead_kafka(require=False)
    assert optional.returncode == 0, optional.stdout
    assert "1 skipped" in optional.stdout
