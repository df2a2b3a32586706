"""Running real feature worker processes in tests, and knowing when they have caught up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from features.events import Event
from features.store import FeatureRow
from streaming.clients import feature_store, kafka_admin, kafka_consumer, kafka_producer, redis_client
from streaming.ingest.producer import Producer
from streaming.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTLE_S = 1.0  # wait_caught_up: how long the lag must stay zero
POLL_S = 0.2  # wait_caught_up: how often the lag is read
# for drills that SIGKILL feature workers: a killed member holds its partitions until its session lapses,
# and every rebalance meanwhile waits for it; 6 s (the broker's group.min.session.timeout.ms default, the
# lowest it accepts) instead of the workers' 10 s
KILL_DRILL_ENV = {"RIVULET_FEATURES_SESSION_TIMEOUT_S": "6"}


def rivulet_process(settings: Settings, args: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``python -m streaming.cli <args>`` in a session of its own (killed as a group), under the settings'
    topic and key prefixes plus ``env``, its output appended to ``log``."""
    full = {
        **os.environ,
        "RIVULET_TOPIC_PREFIX": settings.topic_prefix,
        "RIVULET_REDIS_PREFIX": settings.redis_prefix,
        # RIVULET_TEST_WORKER_LOG_LEVEL=INFO: the rebalances and dropped batches of a drill in its logs;
        # unbuffered: a SIGKILLed worker's last lines are in its log
        "RIVULET_LOG_LEVEL": os.environ.get("RIVULET_TEST_WORKER_LOG_LEVEL", "WARNING"),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streaming.cli", *args],
            cwd=ROOT,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class Worker:
    """``rivulet features run`` in a child process, logging to a file."""

    def __init__(self, settings: Settings, features: str, log: Path, **env: str) -> None:
        self.log = log
        self.proc = rivulet_process(
            settings,
            ["features", "run", "--features", features],
            log,
            RIVULET_PARTITIONS=str(settings.partitions),
            RIVULET_DATA_DIR=str(log.parent / "data"),
            **env,
        )

    def kill(self) -> None:
        """SIGKILL: a crash, no cleanup."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc.poll() is None


def _lag(settings: Settings, admin: KafkaAdminClient, consumer: KafkaConsumer) -> int:
    group = f"{settings.topic_prefix}features"
    try:
        committed = admin.list_group_offsets(group).get(group, {})
    except KafkaError as exc:  # e.g. the coordinator is still being created on a fresh broker
        if getattr(exc, "retriable", False):
            return -1
        raise
    parts = consumer.partitions_for_topic(settings.topics.events) or set()
    tps = [TopicPartition(settings.topics.events, p) for p in parts]
    tps += [tp for tp in committed if "repartition" in tp.topic and settings.topic_prefix in tp.topic]
    end = consumer.end_offsets(tps)
    return sum(end[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)


def wait_caught_up(settings: Settings, workers: list[Worker], timeout_s: float = 180.0) -> None:
    """Until the worker group has committed every record of the events (and repartition) topics; a worker
    that exits meanwhile fails the test (with the end of its log)."""
    admin = kafka_admin(settings, client_id="rivulet-tests")
    consumer = kafka_consumer(settings, client_id="rivulet-tests", isolation_level="read_uncommitted")
    try:
        deadline = time.monotonic() + timeout_s
        # caught up: no lag at every check over at least SETTLE_S (a repartition topic may still be
        # filling); checked every POLL_S, so the wait ends soon after the window instead of a second later
        zero_since: float | None = None
        while True:
            for w in workers:
                assert w.alive(), f"worker exited:\n{w.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"workers did not catch up; lag {_lag(settings, admin, consumer)}"
            )
            consumer.topics()  # refresh metadata
            now = time.monotonic()
            if _lag(settings, admin, consumer) != 0:  # -1: not known yet
                zero_since = None
            elif zero_since is None:
                zero_since = now
            elif now - zero_since >= SETTLE_S:
                break
            time.sleep(POLL_S)
    finally:
        admin.close()
        consumer.close()


def run_worker(
    settings: Settings,
    events: Sequence[Event],
    log: Path,
    *,
    raw: Sequence[tuple[bytes, bytes]] = (),
    features: str = "tests.support.feature_defs",
    timeout_s: float = 180.0,
) -> list[Any]:
    """Raw ``(key, value)`` records, then ``events``, onto the events topic, and one feature worker over
    them until it has caught up (then stopped); returns the raw records' metadata (their positions)."""
    producer = kafka_producer(settings)
    try:
        # the idempotent producer keeps them in order without waiting for each
        futures = [producer.send(settings.topics.events, value=v, key=k) for k, v in raw]
        producer.flush()
        positions = [f.get(timeout=30) for f in futures]
    finally:
        producer.close()
    produce(settings, events)
    worker = Worker(settings, features, log)
    try:
        wait_caught_up(settings, [worker], timeout_s)
    finally:
        worker.stop()
    return positions


def produce(settings: Settings, events: Sequence[Event]) -> None:
    """``events`` onto the events topic, through the producer Rivulet's users have."""
    with Producer(settings) as sdk:
        sdk.send_many(events)


def group_members(settings: Settings) -> int:
    admin = kafka_admin(settings, client_id="rivulet-tests")
    try:
        group = f"{settings.topic_prefix}features"
        return len(admin.describe_groups([group])[group]["members"])
    finally:
        admin.close()


def wait_records(settings: Settings, target: int, live: list[Worker], timeout_s: float = 180.0) -> None:
    """Until the workers have produced ``target`` feature records in all (the stats hash's
    ``records:all``), or have nothing left to read (the group's lag stays 0 for ``SETTLE_S``); a worker of
    ``live`` that exits meanwhile fails the test (with the end of its log).

    The counters are added after a batch's Redis commit: a worker killed between the two (or cut from
    Redis in the middle of its commit) loses its batch's counts, and the next owner skips those records as
    applied, so ``records:all`` can stay below a target for ever with every record processed (attack13b
    stalled so here, lag 0 and 5,234 of 5,500: its batches were 3,000-4,000 records). A lag that never
    ends is still a stall."""
    client = redis_client(settings)
    stats = f"{settings.redis_prefix}stats:features"
    deadline = time.monotonic() + timeout_s
    admin = kafka_admin(settings, client_id="rivulet-tests")
    consumer = kafka_consumer(settings, client_id="rivulet-tests", isolation_level="read_uncommitted")
    try:
        next_lag, idle_since = time.monotonic() + 1.0, None
        while int(client.hget(stats, "records:all") or 0) < target:
            for w in live:
                assert w.alive(), w.log.read_text()[-3000:]
            if time.monotonic() >= deadline:  # a stall: stuck with a lag
                raise AssertionError(f"the workers made no progress: {_stall(settings, target, stats)}")
            if time.monotonic() >= next_lag:  # every second: nothing left to read for SETTLE_S is done
                consumer.topics()
                idle = _lag(settings, admin, consumer) == 0
                idle_since = (idle_since or time.monotonic()) if idle else None
                if idle_since is not None and time.monotonic() - idle_since >= SETTLE_S:
                    return
                next_lag = time.monotonic() + 1.0
            time.sleep(0.05)
    finally:
        admin.close()
        consumer.close()
        client.close()


def _stall(settings: Settings, target: int, stats: str) -> str:
    """The group's lag, the stats hash and the end of each worker's log, for a stalled wait_records."""
    admin = kafka_admin(settings, client_id="rivulet-tests")
    consumer = kafka_consumer(settings, client_id="rivulet-tests", isolation_level="read_uncommitted")
    try:
        consumer.topics()
        lag = _lag(settings, admin, consumer)
    finally:
        admin.close()
        consumer.close()
    counts = {k.decode(): v.decode() for k, v in redis_client(settings).hgetall(stats).items()}
    return f"target {target} records:all, group lag {lag} (-1: unknown), stats {counts}"


def read_redis(settings: Settings, view: str, entities: list[str]) -> list[FeatureRow | None]:
    """The online rows of ``entities`` in ``view``, through the feature store Rivulet's API reads."""

    async def go() -> list[FeatureRow | None]:
        store = feature_store(settings)
        try:
            return await store.read(view, entities)
        finally:
            await store.close()

    return asyncio.run(go())
