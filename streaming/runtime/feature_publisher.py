"""Publishing many records from async code and waiting for Kafka's acknowledgement of all of them.

Adapters on an event loop (the feature worker) use this instead of sending record by record: records are
grouped per partition (the same murmur2 key hashing as the Java and kafka-python clients) into batches
that go out whole, and ``publish`` returns once every batch is acknowledged (``acks=all``, idempotent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from streaming.clients import async_kafka_producer
from streaming.settings import Settings

__all__ = ["AsyncPublisher", "Outgoing"]

# (key, value, headers, timestamp in ms): what AsyncPublisher.send sends
Outgoing = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None, int | None]
KEYS_KEPT = 100_000  # keys whose partition a publisher remembers, per topic


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
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        # per topic, the partition of each key seen (murmur2 in Python costs about 2 us a record; an
        # entity's key comes back batch after batch); at most KEYS_KEPT a topic, then no more are kept
        self._keys: dict[str, dict[bytes, int]] = {}
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
        producer = self._producer
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await producer.partitions_for(topic))
        batches: dict[int, Any] = {}
        futures = []
        known = self._keys.setdefault(topic, {})
        for key, value, headers, timestamp in records:
            p = known.get(key) if key is not None else None
            if p is None:
                p = self._partitioner(key, partitions, partitions)
                if key is not None and len(known) < KEYS_KEPT:  # no key: a random partition each time
                    known[key] = p
            batch = batches.get(p)
            if batch is None:
                batch = batches[p] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=timestamp, headers=headers or []) is None:
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=timestamp, headers=headers or [])
        for p, batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*futures)
