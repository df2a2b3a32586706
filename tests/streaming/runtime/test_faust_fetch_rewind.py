"""The worker's consumer seeks back to the committed offsets after a rebalance even where nothing is
committed (issue 15, kill drill run d8): aiokafka's ``seek_to_committed`` leaves a partition without a
committed offset (or with 0) where it is, and the records Faust handed out between the assignment and the
resumed flow, dropped by the worker, were never read again (see streaming/runtime/faust_fetch.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from features.examples import customer
from streaming.runtime.faust_fetch import rewind_to_committed
from streaming.runtime.feature_worker import create_app
from streaming.settings import Settings

pytestmark = pytest.mark.integration

N = 10


async def _produce(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(N):
            await producer.send_and_wait(topic, f"v{i}".encode(), partition=0)
    finally:
        await producer.stop()


async def _read_to_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> list[int]:
    """The offsets the consumer hands out until its position is the end of the partition (never committed:
    what Faust's consumer does with a fetch taken while its flow is stopped)."""
    offsets: list[int] = []
    while await consumer.position(tp) < N:
        got = await consumer.getmany(tp, timeout_ms=1000)
        offsets += [m.offset for m in got.get(tp, [])]
    return offsets


async def _positions_after_rewind(
    settings: Settings, topic: str, committed: int | None, rewind: Callable[[AIOKafkaConsumer], Any]
) -> tuple[list[int], int, int]:
    """(offsets read before the rewind, the position after it, the first offset read after it)."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.topic_prefix}rewind-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        if committed is not None:
            await consumer.commit({tp: OffsetAndMetadata(committed, "")})
        read = await _read_to_end(consumer, tp)
        await rewind(consumer)
        position = await consumer.position(tp)
        got = await consumer.getmany(tp, timeout_ms=5000)
        first = got[tp][0].offset if got.get(tp) else -1
        return read, position, first
    finally:
        await consumer.stop()


@pytest.mark.parametrize("committed", [None, 0, 4])
def test_rewind_to_committed_goes_back_to_the_committed_offset_or_the_reset_one(
    settings: Settings, make_topic: Callable[..., str], committed: int | None
) -> None:
    topic = make_topic("rewind", partitions=1)

    async def go() -> tuple[list[int], int, int]:
        await _produce(settings, topic)
        return await _positions_after_rewind(
            settings, topic, committed, lambda c: rewind_to_committed(c, "earliest")
        )

    read, position, first = asyncio.run(go())
    start = committed or 0
    assert read == list(range(start, N))
    assert (position, first) == (start, start)  # aiokafka's seek_to_committed alone: (10, -1) without one


def test_the_worker_consumers_seek_to_committed_rewinds_a_partition_without_a_committed_offset(
    settings: Settings, make_topic: Callable[..., str]
) -> None:
    """What Faust's recovery calls after each rebalance (``Consumer.perform_seek``), on the worker app's
    consumer thread (the call made on this loop instead of the thread's: the thread is not started)."""
    topic = make_topic("rewind", partitions=1)

    async def go() -> tuple[list[int], int, int]:
        await _produce(settings, topic)
        app = create_app(settings, [customer], app_id=f"{settings.topic_prefix}rewind-app")
        thread = app.consumer._thread  # type: ignore[attr-defined]

        async def here(fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return await fun(*args, **kwargs)

        thread.call_thread = here

        async def rewind(consumer: AIOKafkaConsumer) -> Any:
            thread._consumer = consumer
            return await thread.seek_to_committed()

        try:
            return await _positions_after_rewind(settings, topic, None, rewind)
        finally:
            thread.thread_loop.close()  # made with the thread, never run

    read, position, first = asyncio.run(go())
    assert read == list(range(N))
    assert (position, first) == (0, 0)
