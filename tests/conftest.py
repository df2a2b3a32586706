"""Fixtures shared by every test: settings, and live Kafka and Redis with per-test isolation.

Tests mirror the packages (``tests/features``, ``tests/serving``, ``tests/streaming/<package>``); a
marker, not a folder, says what a test needs: every test module sets ``pytestmark = pytest.mark.unit``
(pure logic, no services) or ``pytest.mark.integration`` (the real services that ``scripts/services up``
starts) or ``pytest.mark.cluster`` (the local cluster of ``scripts/services up --cluster``, selected only
by a ``-m`` naming it: ``scripts/test -m cluster``); doctests are unit tests. A test with none of these
markers, or two, is a collection error. With ``CI=true`` or ``RIVULET_REQUIRE_SERVICES=1`` an unreachable
service fails the test; otherwise it is skipped with the reason.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from streaming import clients
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import localservices  # noqa: E402  (scripts/localservices.py: probes and the private KafkaNode)


def require_services() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("RIVULET_REQUIRE_SERVICES") == "1"


def _unavailable(what: str) -> None:
    message = f"{what} is not reachable; start it with scripts/services up"
    if require_services():
        pytest.fail(f"{message} (CI=true / RIVULET_REQUIRE_SERVICES=1: a missing service is a failure)")
    pytest.skip(message)


KINDS = ("unit", "integration", "cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = []
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            item.add_marker(pytest.mark.unit)
            continue
        kinds = {mark.name for mark in item.iter_markers() if mark.name in KINDS}
        if len(kinds) != 1:
            unmarked.append(f"{item.nodeid}: {sorted(kinds) or 'no unit/integration marker'}")
    if unmarked:
        raise pytest.UsageError(
            "every test is marked unit, integration or cluster, once:\n  " + "\n  ".join(unmarked)
        )
    # the cluster suite needs scripts/services up --cluster (three brokers, six Redis nodes): it runs when a
    # -m expression names it (scripts/test -m cluster), never in the default run
    if "cluster" not in (config.option.markexpr or ""):
        skipped = [item for item in items if item.get_closest_marker("cluster")]
        if skipped:
            config.hook.pytest_deselected(items=skipped)
            items[:] = [item for item in items if not item.get_closest_marker("cluster")]


@pytest.fixture(scope="session", autouse=True)
def _lag_watcher_off() -> Iterator[None]:
    """``RIVULET_SERVE_LAG_S=0`` for the whole session: every API a test builds, in this process or as a
    child process, runs without the lag watcher (``serving.lag``), which measures against Kafka on a thread
    and which an API's shutdown waits for (5 s and more when the test's Kafka does not answer). The tests of
    the lag turn it on themselves (``tests/serving/test_lag*.py``, ``tests/deploy/test_alerts_e2e.py``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RIVULET_SERVE_LAG_S", "0")
        yield


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def kafka_up(base_settings: Settings) -> str:
    if not localservices.kafka_ready(base_settings.kafka_bootstrap):
        _unavailable(f"Kafka at {base_settings.kafka_bootstrap}")
    return base_settings.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_cluster_up() -> str:
    """The one-node Redis Cluster of ``scripts/services`` (``RIVULET_REDIS_CLUSTER_URL``); fails under CI."""
    url = os.environ.get("RIVULET_REDIS_CLUSTER_URL", "redis://127.0.0.1:7001")
    if not localservices.redis_cluster_ready(url):
        _unavailable(f"Redis Cluster at {url}")
    return url


@pytest.fixture(scope="session")
def redis_up(base_settings: Settings) -> str:
    if not localservices.redis_ready(base_settings.redis_url):
        _unavailable(f"Redis at {base_settings.redis_url}")
    return base_settings.redis_url


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    """Settings whose topic prefix and Redis key prefix are unique to this test."""
    run = uuid.uuid4().hex[:10]
    return base_settings.model_copy(update={"topic_prefix": f"test.{run}.", "redis_prefix": f"test:{run}:"})


@pytest.fixture
def make_topic(settings: Settings, kafka_up: str) -> Iterator[Callable[..., str]]:
    """Factory: create a fresh, uniquely named topic with the admin client; all are deleted afterwards."""
    created: list[str] = []
    admin = TopicAdmin(settings)

    def factory(name: str = "t", partitions: int = 3, configs: dict[str, str] | None = None) -> str:
        full = f"{settings.topic_prefix}{name}.{len(created)}"
        admin.create([full], partitions=partitions, configs=configs)
        created.append(full)
        return full

    yield factory
    admin.delete(created)
    admin.close()


@pytest.fixture
def rivulet_topics(settings: Settings, kafka_up: str) -> Iterator[Settings]:
    """Rivulet's five topics created under this test's prefix; deleted afterwards."""
    with TopicAdmin(settings) as admin:
        admin.create()
        yield settings
        admin.delete(settings.topics.all())


@pytest.fixture
def redis_client(base_settings: Settings, redis_up: str, settings: Settings) -> Iterator[redis.Redis]:
    """A live Redis client; every key under this test's prefix is removed afterwards."""
    client = clients.redis_client(base_settings)
    yield client
    keys = list(client.scan_iter(match=f"{settings.redis_prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def node(redis_up: str, tmp_path: Path) -> Iterator[localservices.RedisNode]:
    """A ``redis-server`` of the test's own, for what acts on a whole server (a restart, SIGSTOP, ``CLIENT
    KILL`` of every tracking connection, ``CLIENT PAUSE``, command counts): on the shared one it would reach
    the connections, writes and counts of the tests that run beside this one."""
    from tests.support.api_env import free_port

    own = localservices.RedisNode(tmp_path / "redis", port=free_port())
    own.start()
    try:
        yield own
    finally:
        own.stop()
