"""Attack on the feature worker's own batches (issue 13, round b): crashes, a Redis outage and rebalances.

Two and then three workers share four partitions while one is SIGKILLed mid-batch (its partitions move in
a rebalance), another loses Redis in the middle of its commits (through a TCP proxy that is cut: the
process must exit, never ack the failed batch, and start again), and a third is killed later. Whatever
happened, every event is counted exactly once (the oracle's vectors, on the features topic and in Redis)
and every re-emitted feature record is byte for byte the first one. A crash re-forwards records into the
re-keyed view's repartition topic at new positions, up to a commit interval of them (once a duplicate 330
records of its zipcode behind its original, beyond the 256 event ids an entity keeps: counted twice before
the worker carried source positions through the repartition topic, attack-13b).

To read a failure afterwards: RIVULET_TEST_WORKER_LOG_LEVEL=DEBUG (each worker's batches and seeks in its
log) and RIVULET_TEST_KEEP_TOPICS=1 (the topics stay: the repartition lineage and the published records).
Issue 15, run d8 (zip '8' counted 529 where the check's oracle had 530): the first record of the 992
repartition records a worker skipped after a rebalance (no committed offset, not rewound), published by
the next owner after the skipping worker's records of the later events; one of those was an hour late,
older than it, and the check's oracle, which applies the first records in their order on the features
topic, counted it. Reconstructed from the events to the last digit of the vector.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from features.events import Event
from streaming.clients import redis_client
from streaming.ingest.producer import Producer
from streaming.settings import Settings
from tests.streaming.runtime.test_feature_worker import (  # noqa: F401 (topics: a fixture)
    check_direct_view,
    check_rekeyed_view,
    events_for,
    topics,
)
from tests.support.feature_defs import ALL, ZIP
from tests.support.kafka_read import read_all
from tests.support.lineage import diagnose
from tests.support.workers import KILL_DRILL_ENV, Worker, wait_caught_up, wait_records

pytestmark = pytest.mark.integration


class Proxy:
    """A TCP proxy to Redis in a thread of its own; ``cut()`` closes the listener and every connection
    (Redis is unreachable for whoever uses the proxy), ``restore()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: Any = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.restore()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        if not self.server.is_serving():  # cut while this connection was being made: it is cut too
            writer.close()
            up_writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        for _ in range(3):  # let the transports run their connection_lost: closed, not left to the GC
            await asyncio.sleep(0)  # (an unclosed transport's ResourceWarning failed a drill)

    def restore(self) -> None:
        self._call(self._start())

    def cut(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


def proxied_worker(settings: Settings, log: Path, proxy: Proxy) -> Worker:
    """A feature worker whose Redis is behind ``proxy``."""
    url = f"redis://127.0.0.1:{proxy.port}/0"
    return Worker(settings, "tests.support.feature_defs", log, RIVULET_REDIS_URL=url, **KILL_DRILL_ENV)


def _repartition_duplicates(settings: Settings) -> dict[str, Any]:
    """The records duplicated into the re-keyed view's repartition topic (a crash re-forwards what was
    forwarded but not committed): how many, and the most records of the same key between an event and its
    duplicate (one further than MAX_IDS of them was not recognised by its id before the worker wrote source
    positions). Every repartition record carries exactly one ``rivulet-src`` header: the position on the
    events topic of a record with the same bytes (so a duplicate has the position of its original)."""
    from kafka import KafkaAdminClient

    from features.state import MAX_IDS

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        (topic,) = [t for t in admin.list_topics() if settings.topic_prefix in t and "by-zip" in t]
    finally:
        admin.close()
    source = {
        (r.topic, r.partition, r.offset): r.value
        for r in read_all(settings.kafka_bootstrap, settings.topics.events)
    }
    seen: dict[tuple[int, bytes], dict[str, int]] = {}
    positions: dict[str, list[Any]] = {}
    partition_of: dict[bytes, int] = {}
    dups, far = 0, 0
    for r in read_all(settings.kafka_bootstrap, topic):
        (src,) = [orjson.loads(v) for k, v in r.headers if k == "rivulet-src"]
        assert source[tuple(src)] == r.value, src
        # one key, one partition: else its entity's state has two lineages, positions on two partitions
        # (the commit's position check compares positions on one partition only)
        assert partition_of.setdefault(r.key, r.partition) == r.partition, (r.key, r.partition)
        ids = seen.setdefault((r.partition, r.key), {})
        event_id = orjson.loads(r.value)["event_id"]
        if event_id in ids:
            dups += 1
            far = max(far, len(ids) - ids[event_id])
            assert positions[event_id] == src, event_id  # re-forwarded: the position of the first
        else:
            ids[event_id] = len(ids)
            positions[event_id] = src
    return {"duplicates": dups, "farthest": far, "MAX_IDS": MAX_IDS}


def test_kills_a_redis_outage_and_rebalances_count_every_event_once_and_reemit_identical_bytes(
    topics: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = topics
    events: list[Event] = events_for(seed=31, n=8_000)
    # the last 1,500 after the cut: a worker reads Redis only for a batch, and one cut from it with nothing
    # left to process kept running (the first 6,500 were all processed before the cut in one run)
    later = 6_500
    with Producer(settings) as producer:
        producer.send_many(events[:later])
    proxy = Proxy(settings.redis_address)
    workers: list[Worker] = []
    try:
        behind = proxied_worker(settings, tmp_path / "proxied-0.log", proxy)
        direct = Worker(settings, "tests.support.feature_defs", tmp_path / "direct-0.log", **KILL_DRILL_ENV)
        workers += [behind, direct]
        wait_records(settings, 1_500, [behind, direct])
        direct.kill()  # SIGKILL mid-batch: its partitions move to the proxied worker, then back
        direct = Worker(settings, "tests.support.feature_defs", tmp_path / "direct-1.log", **KILL_DRILL_ENV)
        workers.append(direct)
        wait_records(settings, 3_500, [behind, direct])
        proxy.cut()  # Redis unreachable for one worker: its batch fails, the process exits
        with Producer(settings) as producer:
            producer.send_many(events[later:])
        deadline = time.monotonic() + 60
        while behind.alive():
            assert time.monotonic() < deadline, "a worker without Redis kept running"
            time.sleep(0.1)
        proxy.restore()
        behind = proxied_worker(settings, tmp_path / "proxied-1.log", proxy)  # what a supervisor does
        workers.append(behind)
        wait_records(settings, 5_500, [behind, direct])
        direct.kill()
        direct = Worker(settings, "tests.support.feature_defs", tmp_path / "direct-2.log", **KILL_DRILL_ENV)
        workers.append(direct)
        wait_caught_up(settings, [behind, direct], timeout_s=300)
    finally:
        for w in workers:
            w.stop()
        proxy.close()
    try:
        check_direct_view(settings, events)
        print("repartition duplicates:", _repartition_duplicates(settings))
        check_rekeyed_view(settings, events)
    except AssertionError:  # what each worker did is in its log; what they left is explained here
        print("drill failed; logs in", tmp_path, "\n" + diagnose(settings, events, ALL, ZIP))
        raise
    first: dict[tuple[str, str], bytes] = {}
    repeats = 0
    for r in read_all(settings.kafka_bootstrap, settings.topics.features):
        rec = orjson.loads(r.value)
        key = (rec["view"], rec["event"]["event_id"])
        if key in first:
            repeats += 1
            assert r.value == first[key], key  # bytes: -0.0 and 0.0 are equal as numbers, not as JSON
        first.setdefault(key, r.value)
    print("re-emitted records:", repeats)
    # offset_gaps: records skipped within an epoch (no transactions here: a record never processed)
    client = redis_client(settings)
    stats = client.hgetall(f"{settings.redis_prefix}stats:features")
    client.close()
    print("worker counters:", {k.decode(): int(v) for k, v in sorted(stats.items())})
