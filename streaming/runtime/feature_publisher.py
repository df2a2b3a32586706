"""Publishing many records from async code and waiting for Kafka's acknowledgement of all of them.

Adapters on an event loop (the feature worker) use this instead of sending record by record: records are
grouped per partition (the same murmur2 key hashing as the Java and kafka-python clients) into batches
that go out whole, and ``publish`` returns once every batch is acknowledged (``acks=all``, idempotent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streaming.clients import async_kafka_producer
from streaming.settings import Settings

__all__ = ["AsyncPublisher", "Outgoing", "PartitionedBatches"]

# (key, value, headers, timestamp in ms): what AsyncPublisher.send sends
Outgoing = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None, int | None]
KEYS_KEPT = 100_000  # keys whose partition a publisher remembers, per topic
# and their bytes, at most: 100,000 entities of 1 KB (the API's longest) held 110 MB for as long as the
# process ran, in each worker, where entities of the usual tens of bytes make a few MB
KEY_BYTES_KEPT = 8_000_000


class PartitionedBatches:
    """Records grouped per partition into aiokafka batches, each partition chosen as ``producer.send`` would
    (murmur2 of the key over the topic's partitions; a record without key: a random one). One batch per
    partition goes out whole, where ``send`` costs a call, a batch append and a wake of aiokafka's sender per
    record (the API's predictions: a fifth of its event loop at 3,000 predictions/s).

    A record larger on its own than ``max_bytes`` (the topic's ``max.message.bytes``) is not sent.
    ``send_batch``, unlike ``send``, does not check a record's size, and a batch the broker refuses leaves
    aiokafka's idempotent producer with a gap in its sequence numbers: every later batch of that partition
    failed with ``OutOfOrderSequenceNumber`` for as long as the process ran (one prediction of 1.2 MB: the 10
    sent next to it and every later one of its partition lost)."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._partitioner = DefaultPartitioner()
        # per topic, its partitions and the partition of each key seen (murmur2 in Python costs about 2 us a
        # record; an entity's key comes back batch after batch); at most KEYS_KEPT keys and KEY_BYTES_KEPT
        # bytes of them a topic, then no more are kept; forgotten when the topic's partitions change
        self._keys: dict[str, _Keys] = {}

    async def submit(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        records: Sequence[Outgoing],
        handed: Callable[[asyncio.Future[Any], list[int]], None],
    ) -> list[int]:
        """Queue ``records`` in the producer, calling ``handed(future, indices)`` for each batch as Kafka's
        producer takes it (its delivery future, the indices in ``records`` of what it holds); returns the
        indices of the records larger than ``max_bytes``, not sent. Raises as the producer does (the topic's
        metadata not coming, the producer closed): the records of no ``handed`` call were not sent."""
        partitions = sorted(await producer.partitions_for(topic))
        cached = self._keys.get(topic)
        if cached is None or cached.partitions != partitions:
            cached = self._keys[topic] = _Keys(partitions)
        known = cached.partition
        batches: dict[int, tuple[Any, list[int]]] = {}
        refused: list[int] = []
        for i, (key, value, headers, timestamp) in enumerate(records):
            if self.max_bytes is not None and _alone(key, value, headers) > self.max_bytes:
                refused.append(i)
                continue
            p = known.get(key) if key is not None else None
            if p is None:
                p = self._partitioner(key, partitions, partitions)
                if key is not None:  # no key: a random partition each time
                    cached.keep(key, p)
            open_ = batches.get(p)
            if open_ is None:
                open_ = batches[p] = (producer.create_batch(), [])
            if open_[0].append(key=key, value=value, timestamp=timestamp, headers=headers or []) is None:
                handed(await producer.send_batch(open_[0], topic, partition=p), open_[1])
                open_ = batches[p] = (producer.create_batch(), [])  # a first record always fits
                open_[0].append(key=key, value=value, timestamp=timestamp, headers=headers or [])
            open_[1].append(i)
        for p, (batch, held) in batches.items():
            handed(await producer.send_batch(batch, topic, partition=p), held)
        return refused


class _Keys:
    """A topic's partitions, and the partition of each key seen (``KEYS_KEPT`` and ``KEY_BYTES_KEPT``)."""

    __slots__ = ("partition", "partitions", "size")

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions
        self.partition: dict[bytes, int] = {}
        self.size = 0  # the bytes of the keys kept

    def keep(self, key: bytes, partition: int) -> None:
        if len(self.partition) < KEYS_KEPT and self.size + len(key) <= KEY_BYTES_KEPT:
            self.partition[key] = partition
            self.size += len(key)


def _alone(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None) -> int:
    """The size of a batch holding this record alone, at most (aiokafka's estimate, which ``send`` checks
    against ``max_request_size``)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or []))


class AsyncPublisher:
    """The feature worker's producer: ``publish`` sends records in whole batches per partition and returns
    once Kafka acknowledged all of them."""

    def __init__(self, settings: Settings) -> None:
        self._producer = async_kafka_producer(
            settings,
            client_id="rivulet-features",
            linger_ms=0,  # batches are built explicitly and complete when sent
            max_batch_size=settings.producer_batch_bytes,
            max_request_size=max(settings.max_event_bytes * 2, 1_048_576),
        )
        self._batches = PartitionedBatches()
        self._started = False
        # the worker's agents share this publisher and may publish their first batches at once: the second
        # producer.start() made aiokafka set its producer id twice (InvalidStateError, the agent crashed)
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        async with self._starting:
            if not self._started:
                await self._producer.start()
                self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._producer.stop()
            self._started = False

    async def publish(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Send ``(key, value)`` records and wait until Kafka has acknowledged every one (or raise)."""
        await self.send(topic, [(key, value, None, None) for key, value in records])

    async def send(self, topic: str, records: Sequence[Outgoing]) -> None:
        """Send ``(key, value, headers, timestamp in ms)`` records (None: no headers, the send time) and
        wait until Kafka has acknowledged every one (or raise)."""
        if not records:
            return
        await self.start()
        futures: list[asyncio.Future[Any]] = []
        await self._batches.submit(self._producer, topic, records, lambda future, _: futures.append(future))
        await asyncio.gather(*futures)
