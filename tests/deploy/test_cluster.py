"""Rivulet on the local cluster of ``scripts/services up --cluster``: three KRaft brokers and a Redis Cluster
of three primaries with a replica each. Marked ``cluster``: it runs only under ``scripts/test -m cluster``.

The fixture runs the script itself (idempotent: it starts only what does not run, and a node a test killed
comes back), so the module also proves that ``up --cluster`` yields a usable cluster. A missing prerequisite
(java, mvn, redis-server) makes the script fail, and so the tests: nothing here is skipped.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis
from kafka import TopicPartition
from redis.cluster import RedisCluster

from features.engine import EntityState
from features.redis_store import state_key, vector_key
from features.store import FeatureRow, StateUpdate
from streaming import clients
from streaming.errors import DeliveryError
from streaming.ingest.producer import Producer
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings
from tests.support.cluster import services_up_cluster
from tests.support.streams import stream

if TYPE_CHECKING:
    import localservices

pytestmark = pytest.mark.cluster  # fixtures ``cluster`` and ``on_cluster``: tests/deploy/conftest.py


@pytest.fixture
def topic(on_cluster: Settings) -> Iterator[str]:
    name = f"{on_cluster.topic_prefix}events"
    with TopicAdmin(on_cluster) as admin:
        assert admin.create([name], partitions=3) == {name: True}
        yield name
        admin.delete([name])


def _produce(settings: Settings, topic: str, n: int, seed: int) -> list[str]:
    """``n`` events sent with Rivulet's producer (acks=all, idempotent); their ids, every one acknowledged
    (``send_many`` raises DeliveryError naming any that was not)."""
    events = stream(n, entities=7, seed=seed, step_ms=1_000)
    producer = Producer(settings, events_topic=topic)
    try:
        assert producer.send_many(events) == n
    finally:
        producer.close()
    return [e.event_id for e in events]


def _read_all(settings: Settings, topic: str, expected: int, timeout_s: float = 60.0) -> list[str]:
    """Every record of the topic from the start (read_committed), as event ids, once ``expected`` arrived
    and nothing more came for a second."""
    import orjson

    consumer = clients.kafka_consumer(settings, client_id="cluster-test")
    try:
        parts = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ids: list[str] = []
        deadline = time.monotonic() + timeout_s
        quiet_since = None
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            got = [orjson.loads(r.value)["event_id"] for records in batch.values() for r in records]
            ids.extend(got)
            if len(ids) >= expected:
                quiet_since = quiet_since if not got else time.monotonic()
                if time.monotonic() - quiet_since > 1.0:
                    break
        return ids
    finally:
        consumer.close()


def test_an_rf3_topic_survives_a_broker_killed(
    cluster: localservices.LocalCluster, on_cluster: Settings, topic: str
) -> None:
    with TopicAdmin(on_cluster) as admin:
        info = admin.describe(topic)
    assert info.configs.get("min.insync.replicas") == "2"
    for p in info.partitions:
        assert sorted(p.replicas) == [1, 2, 3] and sorted(p.isr) == [1, 2, 3], p

    # a topic that needs all three replicas for a write: with one broker gone no acks=all write may succeed
    strict = f"{on_cluster.topic_prefix}strict"
    with TopicAdmin(on_cluster) as admin:
        admin.create([strict], partitions=1, configs={"min.insync.replicas": "3"})

    first = _produce(on_cluster, topic, 300, seed=1)
    assert Counter(_read_all(on_cluster, topic, len(first))) == Counter(first)

    # kill -9 the leader of partition 0: its partitions move to the two others, ISR 2 = min.insync
    victim = next(n for n in cluster.kafka_nodes() if n.node_id == info.partitions[0].leader)
    victim.kill()
    try:
        second = _produce(on_cluster, topic, 300, seed=2)
        # every acknowledged event is there once: none lost with the broker, none duplicated by retries
        assert Counter(_read_all(on_cluster, topic, 600)) == Counter(first + second)
        with TopicAdmin(on_cluster) as admin:
            after = admin.describe(topic)
        for p in after.partitions:
            assert p.leader != victim.node_id and victim.node_id not in p.isr and len(p.isr) == 2, p
        # min.insync.replicas is enforced against the shrunk ISR, and the refusal reaches the caller
        quick = on_cluster.model_copy(
            update={"kafka_delivery_timeout_ms": 8_000, "kafka_request_timeout_ms": 4_000}
        )
        with TopicAdmin(on_cluster) as admin:
            (lone,) = admin.describe(strict).partitions
        # a live leader with two in-sync replicas: what keeps the write out is min.insync.replicas=3 alone
        # (the broker answers NOT_ENOUGH_REPLICAS, retriable: kafka-python retries until the delivery timeout)
        assert lone.leader in {1, 2, 3} - {victim.node_id} and len(lone.isr) == 2, lone
        with pytest.raises(
            DeliveryError, match=re.escape("5 record(s) not delivered (0 delivered)")
        ) as refused:
            _produce(quick, strict, 5, seed=3)
        assert len(refused.value.failures) == 5
    finally:
        out = services_up_cluster()  # idempotent: starts the killed broker alone, waits for a full ISR
        assert f"kafka node {victim.node_id} started" in out, out
        with TopicAdmin(on_cluster) as admin:
            admin.delete([strict])


def _role_of(port: int) -> str:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()


def _update(entity: str, ts: int, offset: int) -> StateUpdate:
    state = EntityState(
        watermark=ts,
        seq=1,
        tiles={"lifetime@1000": [[ts // 1000, [offset]]]},
        settled={"n": [0]},
        position={"t": "events", "p": 0, "o": offset},
        bounds={},
    )
    return StateUpdate(entity, state, FeatureRow("v", entity, {"n": offset}, ts, 600))


def test_redis_cluster_survives_a_primary_killed(
    cluster: localservices.LocalCluster, on_cluster: Settings
) -> None:
    entities = [f"user-{i}" for i in range(200)]  # spread over the three primaries' slots
    nodes = {n.port: n for n in cluster.redis_nodes()}
    some_port = next(iter(nodes))
    plain = redis.Redis(host="127.0.0.1", port=some_port, socket_timeout=2.0, socket_connect_timeout=2.0)
    slot = plain.cluster("KEYSLOT", vector_key(on_cluster.redis_prefix, "v", entities[0]))
    owner = next((int(r[2][1]), r[3:]) for r in plain.cluster("SLOTS") if int(r[0]) <= slot <= int(r[1]))
    plain.close()
    victim_port, replicas = owner
    assert _role_of(victim_port) == "master" and len(replicas) == 1
    replica_port = int(replicas[0][1])

    async def write_then_read_after_failover() -> tuple[list[FeatureRow | None], float]:
        store = clients.feature_store(on_cluster)  # the cluster client Rivulet's workers and API use
        try:
            refused = await store.commit("v", [_update(e, 1_000 + i, i) for i, e in enumerate(entities)])
            assert refused == 0
            # Redis replicates asynchronously: wait until the victim's replica has everything it acknowledged
            victim = redis.Redis(host="127.0.0.1", port=victim_port, socket_timeout=2.0)
            assert victim.wait(1, 5_000) == 1
            victim.close()
            nodes[victim_port].kill()
            t0 = time.monotonic()
            while _role_of(replica_port) != "master":
                assert time.monotonic() - t0 < 30, "the replica was not promoted in 30 s"
                await asyncio.sleep(0.2)
            promoted = time.monotonic() - t0
            # the same client, no restart by hand: it finds the new owner of the slots (a row it could not
            # read, the dead node's, is None until then: the store's pipeline does not raise per command)
            deadline = time.monotonic() + 30
            rows = await store.read("v", entities)
            while None in rows and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                rows = await store.read("v", entities)
            return rows, promoted
        finally:
            await store.close()

    try:
        rows, promoted = asyncio.run(write_then_read_after_failover())
        for i, (entity, row) in enumerate(zip(entities, rows, strict=True)):
            assert row is not None and (row.entity, row.ts, row.values) == (entity, 1_000 + i, {"n": i})
        assert promoted < 30
    finally:
        # the killed node rejoins from its nodes.conf, as a replica of the promoted one; up waits for 6 nodes
        services_up_cluster()
        client = RedisCluster.from_url(cluster.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        for entity in entities:
            client.delete(vector_key(on_cluster.redis_prefix, "v", entity))
            client.delete(state_key(on_cluster.redis_prefix, "v", entity))
        client.close()
    assert _role_of(victim_port) == "slave" and _role_of(replica_port) == "master"
