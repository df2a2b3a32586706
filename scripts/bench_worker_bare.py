"""The bare baseline of the feature worker benchmark: the worker's I/O for the same events, written as a
person would, with no Faust and no feature engine. It is the "limit of this machine" against which
``scripts/bench_features.py --only worker`` prints the worker's ratio (the house rule: every bench prints
Rivulet's ratio against a bare baseline doing the same work).

One asyncio loop, aiokafka for both sides (the client Faust uses), in a consumer group of its own:

1. ``getmany`` up to ``batch`` records from the events topic (what the worker's ``take`` gathers);
2. decode each record with ``orjson.loads`` and fold it into a small per-entity aggregate (a count, a sum,
   the last values: the "engine" costs almost nothing here, on purpose);
3. one record per event to the output topic (the event and a vector of the same number of features as the
   ``customer`` view's, about the size of the worker's feature record), in one batch per partition, and
   every acknowledgement awaited (``acks=all``, idempotent: the worker's producer settings);
4. one Redis pipeline per batch: for each touched entity its vector hash (``HSET`` of ``fields`` values)
   and its state hash (a blob of ``state_bytes``, the size of the worker's state, and the position);
5. the offsets committed.

    >>> fold({}, {"entity": "a", "ts": 5, "fields": {"x": 2.0, "y": "s"}})["a"]["n"]
    1
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from streaming.clients import async_kafka_producer, async_redis_node
from streaming.settings import Settings

__all__ = ["FIELDS", "STATE_BYTES", "bare_loop", "fold", "run_bare"]

# the customer view's stored vector: 11 features; its state: about 2.2 kB of JSON (measured on the bench's
# stream, 1,000 entities, 30,000 events)
FIELDS = 11
STATE_BYTES = 2_200


def fold(aggregates: dict[str, dict[str, Any]], event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fold one decoded event into its entity's aggregate (count, sum of numbers, time, last values)."""
    agg = aggregates.get(event["entity"])
    if agg is None:
        agg = aggregates[event["entity"]] = {"n": 0, "sum": 0.0, "ts": 0, "last": {}}
    agg["n"] += 1
    agg["ts"] = max(agg["ts"], event["ts"])
    for name, value in event["fields"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            agg["sum"] += value
        agg["last"][name] = value
    return aggregates


def _vector(agg: dict[str, Any]) -> dict[str, Any]:
    """``FIELDS`` values: the aggregate's own, then its last values, padded with the count."""
    values: dict[str, Any] = {"count": agg["n"], "sum": agg["sum"]}
    for name, value in agg["last"].items():
        if len(values) == FIELDS:
            break
        values[f"last_{name}"] = value
    while len(values) < FIELDS:
        values[f"pad_{len(values)}"] = agg["n"]
    return values


async def _produce(producer: Any, topic: str, partitions: Sequence[int], values: list[bytes]) -> None:
    """One batch per partition (round robin, no keys), every acknowledgement awaited."""
    open_batches = [producer.create_batch() for _ in partitions]
    sent = []
    for i, value in enumerate(values):
        slot = i % len(partitions)
        if open_batches[slot].append(key=None, value=value, timestamp=None) is None:
            sent.append(await producer.send_batch(open_batches[slot], topic, partition=partitions[slot]))
            open_batches[slot] = producer.create_batch()
            open_batches[slot].append(key=None, value=value, timestamp=None)
    for slot, batch in enumerate(open_batches):
        if batch.record_count():
            sent.append(await producer.send_batch(batch, topic, partition=partitions[slot]))
    await asyncio.gather(*sent)


def bare_clients(settings: Settings, group: str) -> tuple[AIOKafkaConsumer, Any, Any]:
    """The bare loop's consumer (a member of ``group``, committing by hand), producer and Redis."""
    consumer = AIOKafkaConsumer(
        settings.topics.events,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = async_kafka_producer(
        settings, client_id="rivulet-bare", linger_ms=0, max_batch_size=settings.producer_batch_bytes
    )
    return consumer, producer, async_redis_node(settings)


async def bare_batch(
    records: list[Any],
    aggregates: dict[str, dict[str, Any]],
    producer: Any,
    redis: Any,
    prefix: str,
    out: str,
    partitions: Sequence[int],
    state: bytes,
    done: int,
) -> Any:
    """One batch of the bare loop: fold, produce the vectors, and a pipeline holding the Redis writes (the
    caller adds its own and executes it)."""
    touched: dict[str, Any] = {}
    values = []
    for r in records:
        event = orjson.loads(r.value)
        agg = fold(aggregates, event)[event["entity"]]
        vector = touched[event["entity"]] = _vector(agg)
        values.append(orjson.dumps({"entity": event["entity"], "event": event, "features": vector}))
    await _produce(producer, out, partitions, values)
    pipe = redis.pipeline(transaction=False)
    for entity, vector in touched.items():
        mapping = {"_ts": aggregates[entity]["ts"], **{k: orjson.dumps(v) for k, v in vector.items()}}
        pipe.hset(f"{prefix}bare:v:{{{entity}}}", mapping=mapping)
        pipe.hset(f"{prefix}bare:s:{{{entity}}}", mapping={"s": state, "t": out, "p": 0, "o": done})
    return pipe


async def bare_loop(settings: Settings, n: int, *, batch: int = 2000, wait_ms: int = 5) -> tuple[int, float]:
    """Consume ``n`` events from ``settings.topics.events`` and do the worker's I/O for them; returns
    (events done, seconds from the first batch received to the last batch committed)."""
    consumer, producer, redis = bare_clients(settings, f"{settings.topic_prefix}bare")
    state = b"x" * STATE_BYTES
    prefix, out = settings.redis_prefix, settings.topics.features
    await consumer.start()
    await producer.start()
    done, first = 0, 0.0
    try:
        partitions = sorted(await producer.partitions_for(out))
        aggregates: dict[str, dict[str, Any]] = {}
        while done < n:
            got = await consumer.getmany(timeout_ms=wait_ms, max_records=batch)
            records = [r for rs in got.values() for r in rs]
            if not records:
                continue
            first = first or time.perf_counter()
            pipe = await bare_batch(
                records, aggregates, producer, redis, prefix, out, partitions, state, done
            )
            await pipe.execute()
            await consumer.commit()
            done += len(records)
        return done, time.perf_counter() - first
    finally:
        await consumer.stop()
        await producer.stop()
        await redis.aclose()


def run_bare(settings: Settings, n: int) -> float:
    """Events per second of the bare loop over ``n`` events already in ``settings.topics.events``."""
    done, seconds = asyncio.run(bare_loop(settings, n, batch=settings.features_batch_size))  # the worker's
    return done / seconds if seconds > 0 else float("nan")
