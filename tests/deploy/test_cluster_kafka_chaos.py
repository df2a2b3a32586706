"""Kafka chaos under load on the local cluster (issue 15): events are produced at a steady rate with the SDK
while brokers are killed -9 and restarted, or while feature workers join and die; afterwards every vector
is compared with the brute-force oracle of what the events topic holds, and the learner with a crash-free
run over the same features.

Marked ``cluster``: it runs under ``scripts/test -m cluster`` (three KRaft brokers with RF 3 and
min.insync.replicas 2, a Redis Cluster of six nodes); fixtures in tests/deploy/conftest.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from features.events import Event
from streaming.clients import registry_reader, registry_redis
from streaming.ingest.producer import Producer
from streaming.ingest.topics import TopicAdmin
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.support.chaos import (
    LoadProducer,
    check_features,
    feature_records,
    topic_events,
    wait_feature_records,
)
from tests.support.cluster import cluster_env, services_up_cluster
from tests.support.feature_defs import ALL
from tests.support.learning import SIGNER, learn, learner_process, registry, river_data
from tests.support.model_defs import LR
from tests.support.streams import stream
from tests.support.workers import KILL_DRILL_ENV, Worker, group_members, wait_caught_up

if TYPE_CHECKING:
    import localservices

pytestmark = pytest.mark.cluster

DIRECT = "tests.support.feature_defs:DIRECT"  # view ``all`` alone: no repartition topic


@pytest.fixture
def topics(on_cluster: Settings) -> Iterator[Settings]:
    """Rivulet's topics on the cluster (RF 3, min.insync 2), events on six partitions; the features topic
    has one, so that the learner's order is the order of that topic alone (a live learner's merge over
    several partitions releases a record when the others are read to their end, which depends on how
    far the feature worker has got: a crash-free run afterwards would merge them otherwise)."""
    s = on_cluster.model_copy(
        update={
            "partitions": 6,
            "signing_key": SecretStr(SIGNER.encoded),
            "verify_keys": [SIGNER.public.encoded],
        }
    )
    t = s.topics
    with TopicAdmin(s) as admin:
        admin.create([t.events, t.labels, t.predictions, t.dead_letters])
        admin.create([t.features], partitions=1)
        try:
            yield s
        finally:
            admin.delete([name for name in admin.list_topics(all_topics=True) if s.topic_prefix in name])


def _load(settings: Settings, seed: int) -> LoadProducer:
    """200 events/s (20 every 0.1 s) from a stream with out-of-order and late events, 40 entities."""
    events = stream(60_000, entities=40, seed=seed, late_every=97, shuffle_every=11, step_ms=1_000)
    return LoadProducer(settings, events, batch=20, interval_s=0.1)


def _node(cluster: localservices.LocalCluster, node_id: int) -> localservices.ClusterKafkaNode:
    return next(n for n in cluster.kafka_nodes() if n.node_id == node_id)


def _leader(settings: Settings, topic: str) -> int:
    with TopicAdmin(settings) as admin:
        return admin.describe(topic).partitions[0].leader


def _check_produced(load: LoadProducer, settings: Settings) -> list[Event]:
    """The load's account of its sends against the events topic; the topic's events."""
    assert not load.crashed, load.crashed
    assert len(load.acked) + len(load.failed) == load.sent  # every send answered: acknowledged or raised
    on_topic = topic_events(settings)
    ids = {e.event_id for e in on_topic}
    assert not set(load.acked) - ids, "an acknowledged event is not on the events topic"
    return on_topic


def test_two_brokers_killed_and_restarted_under_load(
    cluster: localservices.LocalCluster, topics: Settings, tmp_path: Path
) -> None:
    s = topics
    env = cluster_env(s)
    worker = Worker(s, DIRECT, tmp_path / "features.log", **env)
    learner = learner_process(s, "tests.support.model_defs", tmp_path / "learn.log", **env)
    try:
        _drill_two_brokers(cluster, s, worker, learner, tmp_path)
    finally:
        worker.stop()
        if learner.poll() is None:
            os.killpg(learner.pid, signal.SIGKILL)
            learner.wait()


def _drill_two_brokers(
    cluster: localservices.LocalCluster,
    s: Settings,
    worker: Worker,
    learner: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    load = _load(s, seed=61).start()
    killed: list[int] = []
    try:
        done = wait_feature_records(s, 1_000, [worker])
        # first the leader of the events' partition 0, then the leader of the features topic (another one)
        for topic in (s.topics.events, s.topics.features):
            leader = _leader(s, topic)
            victim = _node(cluster, leader if leader not in killed else ({1, 2, 3} - {*killed, leader}).pop())
            victim.kill()
            killed.append(victim.node_id)
            # the load goes on with the broker down: the feature worker and the learner keep up
            done = wait_feature_records(s, done + 1_000, [worker])
            out = services_up_cluster()  # restarts the killed node alone, waits for it to be in sync
            assert f"kafka node {victim.node_id} started" in out, out
            done = wait_feature_records(s, done + 1_000, [worker])
            assert learner.poll() is None, (tmp_path / "learn.log").read_text()[-3000:]
    finally:
        load.stop()
    on_topic = _check_produced(load, s)
    assert len(set(killed)) == 2
    wait_caught_up(s, [worker])
    worker.stop()
    check = check_features(s, ALL, on_topic)
    assert check.vectors > 5_000

    # the live learner learned every record once, through both faults
    reg = registry(s)
    deadline = time.monotonic() + 180
    while not (versions := reg.versions("lr")) or versions[0].header.get("n_learned") != check.vectors:
        assert learner.poll() is None, (tmp_path / "learn.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"learner at {versions[0].header if versions else None}"
        time.sleep(0.2)
    os.killpg(learner.pid, signal.SIGTERM)
    assert learner.wait(timeout=60) == 0, (tmp_path / "learn.log").read_text()[-3000:]
    live = learn(s).core.models["lr"]  # the live run's last checkpoint, nothing left to learn
    clean = learn(s, prefix=f"{s.redis_prefix}clean:").core.models["lr"]  # crash-free, over the same topic
    assert live.n_learned == clean.n_learned == check.vectors
    probes = [x for x, _ in river_data(s, {e.event_id: e for e in on_topic})[:300]]
    predicted = [live.model.predict_proba_one(x) for x in probes]
    assert predicted == [clean.model.predict_proba_one(x) for x in probes]
    assert [m.get() for m in live.metrics] == [m.get() for m in clean.metrics]
    print(
        f"brokers killed {killed}; sent {load.sent}, acknowledged {len(load.acked)}, "
        f"produce errors {len(load.errors)} ({len(load.failed)} events); {check}"
    )


def test_a_learner_keeps_its_registry_and_lease_on_the_cluster(topics: Settings, tmp_path: Path) -> None:
    """The learner's registry and lease client follows the cluster's slots. It was a plain client on the
    URL's node, so every key of another primary's slot got MOVED (the learner exited with ``error: 6811
    127.0.0.1:7502``): here the URL names a primary that does not own model ``lr``'s slot."""
    slots = registry_redis(topics)
    owner = slots.nodes_manager.get_node_from_slot(slots.keyslot("{lr}"))  # type: ignore[attr-defined]
    other = next(n for n in slots.get_primaries() if n.port != owner.port)  # type: ignore[attr-defined]
    slots.close()
    s = topics.model_copy(update={"redis_url": f"redis://127.0.0.1:{other.port}"})
    evs = stream(400, entities=20, seed=63, step_ms=1_000)
    with Producer(s) as sdk:
        assert sdk.send_many(evs) == len(evs)
    worker = Worker(s, DIRECT, tmp_path / "features.log", **cluster_env(s))
    try:
        wait_caught_up(s, [worker])
    finally:
        worker.stop()
    learner = LearnerWorker(s, [LR])  # the registry and the leases Rivulet's learner makes for itself
    learner.run(max_idle_s=1.5, install_signals=False)
    assert learner.core.models["lr"].n_learned == len(evs)
    opened, rejected = registry_reader(s).load_latest("lr")
    assert not rejected and opened.header["n_learned"] == len(evs)


def test_three_workers_one_added_one_killed_under_load(topics: Settings, tmp_path: Path) -> None:
    s = topics
    env = {**cluster_env(s), **KILL_DRILL_ENV}
    for i in range(4):
        (tmp_path / f"w{i}").mkdir()
    workers = [Worker(s, DIRECT, tmp_path / f"w{i}" / "features.log", **env) for i in range(3)]
    started = list(workers)
    load = _load(s, seed=62).start()
    try:
        done = wait_feature_records(s, 1_500, workers)
        assert group_members(s) == 3
        added = Worker(s, DIRECT, tmp_path / "w3" / "features.log", **env)
        workers.append(added)
        started.append(added)  # a rebalance to four members, under load
        done = wait_feature_records(s, done + 1_500, workers)
        victim = workers.pop(0)
        victim.kill()  # -9 mid-stream: its partitions move once its session lapses (6 s)
        done = wait_feature_records(s, done + 1_500, workers)
        wait_feature_records(s, feature_records(s) + 1_000, workers)
        load.stop()
        on_topic = _check_produced(load, s)
        wait_caught_up(s, workers)
        assert group_members(s) == 3
    finally:
        load.stop()
        for w in started:
            w.stop()
    check = check_features(s, ALL, on_topic)
    assert check.vectors > 4_000
    print(f"sent {load.sent}, acknowledged {len(load.acked)}; {check}")
