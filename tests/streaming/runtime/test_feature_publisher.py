"""The feature worker's publisher (streaming.runtime.feature_publisher) on real Kafka."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewPartitions
from kafka.partitioner.default import murmur2

from streaming.ingest.topics import TopicAdmin
from streaming.runtime import feature_publisher
from streaming.runtime.feature_publisher import AsyncPublisher
from streaming.settings import Settings
from tests.support.kafka_read import read_all

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(settings: Settings, kafka_up: str, redis_client: Any) -> Any:
    with TopicAdmin(settings) as admin:
        admin.create()
        yield settings
        admin.delete([t for t in admin.list_topics(all_topics=True) if settings.topic_prefix in t])


def test_the_first_publishes_of_two_agents_at_once_start_the_producer_once(topics: Settings) -> None:
    """The worker's agents (a direct one and a re-keyed one) share one publisher, and their first batches
    may publish at the same time. Both started the producer: aiokafka's second start set its producer id
    twice and raised ``InvalidStateError`` in the agent, which crashed the worker (seen with the eager
    consumer in CI, and in ``rivulet up``)."""
    topic = topics.topics.features

    async def go() -> None:
        publisher = AsyncPublisher(topics)
        try:
            await asyncio.gather(
                *(publisher.publish(topic, [(f"k{i}".encode(), f"v{i}".encode())]) for i in range(4))
            )
        finally:
            await publisher.stop()

    asyncio.run(go())
    assert sorted(r.value for r in read_all(topics.kafka_bootstrap, topic)) == [
        f"v{i}".encode() for i in range(4)
    ]


def test_each_key_goes_to_the_partition_murmur2_gives_it_remembered_or_not(
    topics: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publisher remembers a key's partition (at most ``KEYS_KEPT`` keys a topic): a key sent again, or
    sent once the memory is full, lands where kafka-python's murmur2 partitioner (the Java client's) puts
    it, and a record without a key is still sent."""
    monkeypatch.setattr(feature_publisher, "KEYS_KEPT", 3)
    topic = topics.topics.features
    keys = [f"entity-{i}".encode() for i in range(12)]

    async def go() -> None:
        publisher = AsyncPublisher(topics)
        try:
            for round_ in range(3):  # the first sends, then the remembered and the forgotten keys again
                await publisher.publish(topic, [(k, b"%d" % round_) for k in keys] + [(None, b"none")])
        finally:
            await publisher.stop()

    asyncio.run(go())
    got = read_all(topics.kafka_bootstrap, topic)
    partitions = sorted({r.partition for r in got})
    assert len(partitions) > 1 and sum(r.key is None for r in got) == 3
    want = {k: murmur2_partition(k, partitions) for k in keys}
    assert len(set(want.values())) > 1  # the keys are spread: a wrong partition cannot pass by chance
    for r in got:
        if r.key is not None:
            assert r.partition == want[r.key], r.key
    assert sorted(r.value for r in got if r.key == keys[0]) == [b"0", b"1", b"2"]


def murmur2_partition(key: bytes, partitions: list[int]) -> int:
    """kafka-python's DefaultPartitioner (the Java client's: murmur2 of the key, positive, modulo)."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def test_keys_follow_the_topics_partitions_when_they_grow(
    settings: Settings, make_topic: Callable[..., str]
) -> None:
    """Before: the publisher read a topic's partitions once and kept them, so after the topic grew from 2
    to 4 partitions every key still went to partition 0 or 1 until the worker restarted, where the Java
    and kafka-python producers spread keys over the 4. Now each publish takes the producer's metadata."""
    topic = make_topic("grown", partitions=2)
    keys = [f"entity-{i}".encode() for i in range(24)]

    async def go() -> None:
        publisher = AsyncPublisher(settings)
        try:
            await publisher.publish(topic, [(k, b"before") for k in keys])
            admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
            try:
                admin.create_partitions({topic: NewPartitions(total_count=4)})
            finally:
                admin.close()
            await publisher._producer.client.force_metadata_update()
            await publisher.publish(topic, [(k, b"after") for k in keys])
        finally:
            await publisher.stop()

    asyncio.run(go())
    got = read_all(settings.kafka_bootstrap, topic)
    assert len(got) == 48
    for r in got:
        want = murmur2_partition(r.key, [0, 1] if r.value == b"before" else [0, 1, 2, 3])
        assert r.partition == want, (r.key, r.value)
    assert {r.partition for r in got if r.value == b"after"} == {0, 1, 2, 3}


def test_the_keys_a_publisher_remembers_are_bounded_in_bytes(
    settings: Settings, make_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a publisher remembered the partition of up to ``KEYS_KEPT`` (100,000) keys a topic whatever
    their size: the API's outbox, sent predictions of 100,000 entities of 1 KB (the longest an entity may
    be), kept 110 MB for as long as the process ran. Now the keys it keeps hold ``KEY_BYTES_KEPT`` (8 MB) at
    most; here 200 kB, and 1,000 keys of 1 kB that each publish makes and drops: 1.2 MB kept before, 0.34 MB
    now (the keys and what the producer keeps)."""
    monkeypatch.setattr(feature_publisher, "KEY_BYTES_KEPT", 200_000)
    topic = make_topic("long-keys", partitions=3)

    async def go() -> int:
        publisher = AsyncPublisher(settings)
        try:
            await publisher.start()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for chunk in range(10):
                keys = [b"%07d" % (chunk * 100 + i) * 147 for i in range(100)]
                await publisher.publish(topic, [(key, b"v") for key in keys])
            del keys
            gc.collect()
            return int(tracemalloc.get_traced_memory()[0] - before)
        finally:
            tracemalloc.stop()
            await publisher.stop()

    kept = asyncio.run(go())
    assert kept < 600_000, kept
