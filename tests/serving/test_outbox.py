"""The API's outbox of predictions (serving.outbox) on real Kafka: every prediction lands where
``producer.send`` would put it, a topic Kafka never serves releases what it held, counted unpublished."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from serving.metrics import UNPUBLISHED
from serving.outbox import Outbox
from streaming.clients import async_kafka_producer
from streaming.settings import Settings
from tests.streaming.runtime.test_feature_publisher import murmur2_partition
from tests.support.kafka_read import read_all

pytestmark = pytest.mark.integration


def unpublished(model: str) -> float:
    return float(UNPUBLISHED.labels(model)._value.get())


async def _with_producer(settings: Settings, go: Callable[[Any], Any], **overrides: Any) -> Any:
    producer = async_kafka_producer(settings, client_id="test-outbox", **overrides)
    await producer.start()
    try:
        return await go(producer)
    finally:
        await producer.stop()


def test_every_prediction_lands_once_where_send_would_put_it(
    settings: Settings, make_topic: Callable[..., str]
) -> None:
    """Predictions handed over in batches per partition: each key on the partition kafka-python's murmur2
    (the Java client's) gives it, in the order sent, none lost or doubled, nothing held afterwards."""
    topic = make_topic("predictions", partitions=3)
    keys = [f"entity-{i}".encode() for i in range(40)]
    sent = [(keys[i % len(keys)], b"%d" % i, f"model-{i % 2}") for i in range(600)]
    before = [unpublished("model-0"), unpublished("model-1")]

    async def go(producer: Any) -> tuple[int, int]:
        outbox = Outbox(linger_s=0.002)
        for i, (key, value, model) in enumerate(sent):
            outbox.send(producer, topic, value, key, model)
            if i % 7 == 0:  # requests arriving over several loop iterations: several flushes
                await asyncio.sleep(0.001)
        return await outbox.drain(30), outbox.held

    assert asyncio.run(_with_producer(settings, go)) == (0, 0)
    got = read_all(settings.kafka_bootstrap, topic)
    assert sorted(r.value for r in got) == sorted(v for _, v, _ in sent)
    partitions = sorted({r.partition for r in got})
    assert partitions == [0, 1, 2]
    for r in got:
        assert r.partition == murmur2_partition(r.key, partitions), r.key
    for key in keys:  # per key, the order of the sends
        assert [r.value for r in got if r.key == key] == [v for k, v, _ in sent if k == key]
    assert [unpublished("model-0"), unpublished("model-1")] == before


def test_a_topic_kafka_never_serves_releases_the_outbox_counted_unpublished(
    settings: Settings, make_topic: Callable[..., str]
) -> None:
    """The predictions topic missing (no auto-creation): the sender waits for its metadata up to the
    request timeout, then counts every prediction it held unpublished, for its model, and holds none; the
    outbox then publishes to a topic that exists."""
    missing = f"{settings.topic_prefix}never-created"
    present = make_topic("predictions", partitions=2)
    before = unpublished("missing-model")

    async def go(producer: Any) -> tuple[int, float, int]:
        outbox = Outbox(linger_s=0.002)
        for i in range(25):
            outbox.send(producer, missing, b"%d" % i, b"k%d" % i, "missing-model")
        for _ in range(300):  # the request timeout is 2 s: well within 30 s
            if outbox.held == 0:
                break
            await asyncio.sleep(0.1)
        held, lost = outbox.held, unpublished("missing-model") - before
        for i in range(5):
            outbox.send(producer, present, b"ok%d" % i, b"k%d" % i, "present-model")
        return held + await outbox.drain(30), lost, outbox.held

    held, lost, after = asyncio.run(_with_producer(settings, go, request_timeout_ms=2_000))
    assert (held, lost, after) == (0, 25.0, 0)
    assert sorted(r.value for r in read_all(settings.kafka_bootstrap, present)) == [
        b"ok%d" % i for i in range(5)
    ]


def _value_of(key: bytes, size: int) -> bytes:
    """A value that makes a batch of ``size`` bytes with ``key``, alone (aiokafka's estimate)."""
    n = size - DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"", [])
    while DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"v" * n, []) > size:  # the length's varint
        n -= 1
    value = b"v" * n
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []) == size
    return value


def test_a_prediction_too_large_for_the_topic_is_counted_and_its_partition_goes_on(
    settings: Settings, make_topic: Callable[..., str]
) -> None:
    """Before: a prediction larger than the topic's ``max.message.bytes`` went to Kafka in a batch of its
    own (``send_batch`` checks no size, where ``send`` checks ``max_request_size``); the broker refused it,
    which left aiokafka's idempotent producer with a gap in its sequence numbers, and every later batch of
    the partition failed with ``OutOfOrderSequenceNumber``: the 10 predictions sent around it and every later
    one counted unpublished until the API restarted. Now a prediction larger than ``max_bytes`` is counted
    and not sent; one of exactly ``max_bytes`` is published, and so is everything around them, in order."""
    topic = make_topic("predictions", partitions=1)  # max.message.bytes: settings.max_message_bytes
    limit = settings.max_message_bytes
    key = b"entity-1"
    small = [b"small-%d" % i for i in range(15)]
    fits = _value_of(key, limit)
    before = unpublished("large-model")

    async def go(producer: Any) -> tuple[int, int]:
        outbox = Outbox(linger_s=0.002, max_bytes=limit)
        for value in [*small[:5], b"v" * limit, *small[5:10], fits]:  # the broker refuses the first
            outbox.send(producer, topic, value, key, "large-model")
        await asyncio.sleep(0.5)  # a later flush of the same partition
        for value in small[10:]:
            outbox.send(producer, topic, value, key, "large-model")
        return await outbox.drain(30), outbox.held

    assert asyncio.run(_with_producer(settings, go)) == (0, 0)
    got = [r.value for r in read_all(settings.kafka_bootstrap, topic)]
    assert got == [*small[:10], fits, *small[10:]]
    assert unpublished("large-model") - before == 1.0
