"""Two of issue 15's drills on the local cluster, under load: the SIGSTOP fencing drill of the learners
(tests/support/fencing_drill.py) and the three-API-workers drill (tests/support/api_workers_drill.py), each
the same code as its single-node test, here on three KRaft brokers (RF 3, min.insync.replicas 2) and a Redis
Cluster of six nodes, with events produced at a steady rate by the SDK while the fault happens. Every event
the SDK acknowledged must be on the events topic afterwards, and none may fail.

Marked ``cluster``: it runs under ``scripts/test -m cluster``; fixtures in tests/deploy/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streaming.clients import registry_redis
from streaming.ingest.topics import TopicAdmin
from streaming.learning.registry import RedisRegistry
from streaming.settings import Settings
from tests.serving.conftest import OPS_KEY
from tests.serving.test_serving import trained_state
from tests.support.api_workers_drill import three_api_workers_drill
from tests.support.chaos import LoadProducer, topic_events
from tests.support.cluster import cluster_env
from tests.support.fencing_drill import fencing_drill
from tests.support.learning import learning_topics
from tests.support.serving_env import SIGNER, serving_settings
from tests.support.streams import stream

pytestmark = pytest.mark.cluster


def _load(s: Settings, seed: int) -> LoadProducer:
    """100 events/s (10 every 0.1 s) through the SDK, 40 entities: enough for ten minutes."""
    return LoadProducer(s, stream(60_000, entities=40, seed=seed, step_ms=1_000), batch=10, interval_s=0.1)


def _check_load(load: LoadProducer, s: Settings) -> None:
    """The load ran through the fault: it sent, every send was acknowledged, and every acknowledged event is
    on the events topic (once)."""
    assert load.sent > 0
    assert load.clean() and len(load.acked) == load.sent, (load.errors[:3], load.crashed)
    ids = [e.event_id for e in topic_events(s)]
    assert len(ids) == len(set(ids)) and set(ids) == set(load.acked), (len(ids), len(load.acked))


@pytest.fixture
def learning(on_cluster: Settings) -> Iterator[Settings]:
    """The learner tests' topics and signing key, on the cluster."""
    with learning_topics(on_cluster) as s:
        yield s


@pytest.fixture
def serving(on_cluster: Settings) -> Iterator[Settings]:
    """The API tests' settings (their verify key and scoring key) and topics, on the cluster."""
    s = serving_settings(on_cluster, serve_poll_s=0.5, scoring_api_keys=[OPS_KEY], read_api_keys=[OPS_KEY])
    with TopicAdmin(s) as admin:
        admin.create()
        try:
            yield s
        finally:
            admin.delete(s.topics.all())


def test_a_paused_owner_is_fenced_on_the_cluster_under_load(learning: Settings, tmp_path: Path) -> None:
    load = _load(learning, seed=62)
    versions = fencing_drill(learning, tmp_path, env=cluster_env(learning), load=load)
    assert {v.header["epoch"] for v in versions} == {1, 2}
    _check_load(load, learning)


def test_three_api_workers_follow_versions_and_a_rollback_on_the_cluster_under_load(
    serving: Settings, tmp_path: Path
) -> None:
    reg = RedisRegistry(registry_redis(serving), serving.redis_prefix, signer=SIGNER)
    load = _load(serving, seed=63)
    responses = three_api_workers_drill(
        serving,
        reg,
        lambda seed, n: trained_state(n, seed=seed),
        OPS_KEY,
        tmp_path,
        env=cluster_env(serving),
        load=load,
    )
    assert responses
    _check_load(load, serving)
