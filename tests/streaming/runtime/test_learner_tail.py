"""The live learner's tail (KafkaTail) on real Kafka: a partition counts as read to its end only when the
broker holds nothing more for it, so the merge never lets another partition's later record go first.

kafka-python leaves a partition out of its fetches while records of it wait in the consumer, and keeps the
high watermark of that partition's last fetch: read to it, the partition counted as exhausted while the
broker held earlier records for it, and a learner that tailed records arriving under load (or across a
takeover's sessions) learned them in an order no clean run has. Pausing the partition in the consumer
leaves it out of the fetches in the same way, deterministically."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest
from kafka import TopicPartition

from streaming import clients
from streaming.learning.loop import MergeLoop
from streaming.runtime.learner import KafkaTail
from streaming.settings import Settings

pytestmark = pytest.mark.integration


def features(event_id: str, ts: int) -> bytes:
    return orjson.dumps({"view": "v", "features": {"x": 1.0}, "event": {"event_id": event_id, "ts": ts}})


def test_a_partition_left_out_of_the_fetches_holds_back_the_later_records_of_the_others(
    settings: Settings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("tail", partitions=2)
    producer = clients.kafka_producer(settings)

    def produce(partition: int, event_id: str, ts: int) -> None:
        producer.send(topic, features(event_id, ts), partition=partition).get(timeout=30)

    produce(0, "a", 10)
    produce(1, "b", 10)
    consumer = clients.kafka_consumer(settings, client_id="test-learner-tail")
    try:
        tail = KafkaTail(consumer, [topic], lambda t, p: 0)
        loop = MergeLoop(tail, {topic: 0})
        merged: list[tuple[int, int]] = []

        def turn_until(ok: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 30
            while not ok():
                assert time.monotonic() < deadline, merged
                merged.extend((r.partition, r.ts) for r in loop.round())

        turn_until(lambda: len(merged) == 2)  # both read to their end: each partition's watermark known
        consumer.pause(TopicPartition(topic, 0))  # as the consumer does while records of it wait unread
        produce(0, "c", 20)  # on the broker before the next record of partition 1
        produce(1, "d", 30)
        turn_until(lambda: consumer.position(TopicPartition(topic, 1)) == 2)  # d fetched, c not
        for _ in range(5):
            merged.extend((r.partition, r.ts) for r in loop.round())
        assert merged == [(0, 10), (1, 10)]  # d waits: partition 0 may (and does) hold an earlier record
        consumer.resume(TopicPartition(topic, 0))
        turn_until(lambda: len(merged) == 4)
        assert merged == [(0, 10), (1, 10), (0, 20), (1, 30)]  # the clean order: by event time
    finally:
        consumer.close()
        producer.close()
