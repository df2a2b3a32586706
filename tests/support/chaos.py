"""Load and checks for the cluster drills (issue 15): the producer at a steady rate while a fault happens
(every drill's: the Kafka, Redis, learner and API ones) and the feature oracle over what the events topic
holds. The child-process environment of the local cluster is ``cluster_env`` in tests/support/cluster.py.

The oracle is fed the events as the events topic holds them (each partition in offset order: one entity's
events are on one partition, so that is the order its worker applied them), not as the test generated them:
a send that failed may still have been written (Kafka cannot tell), and only the topic knows.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.cluster import RedisCluster

from features.definitions import FeatureView
from features.events import Event
from streaming.errors import DeliveryError
from streaming.ingest.producer import Producer
from streaming.settings import Settings
from tests.support.kafka_read import read_all
from tests.support.oracle import Oracle, diff
from tests.support.workers import Worker, read_redis

__all__ = [
    "FeatureCheck",
    "LoadProducer",
    "check_features",
    "feature_records",
    "topic_events",
    "wait_feature_records",
]


@dataclass
class LoadProducer:
    """Sends ``events`` through Rivulet's producer SDK in a thread, ``batch`` every ``interval_s`` (a steady
    rate, whatever the brokers do), until :meth:`stop` or the events run out. Each batch is sent with
    ``send_many`` (send, then flush): an event is acknowledged when its batch returned, or when it is not
    among the failures of the DeliveryError the batch raised; any other exception is kept in ``crashed``.
    The rate is a schedule, not a sleep per batch: a slow send does not lower the rate after it."""

    settings: Settings
    events: Sequence[Event]
    batch: int = 20
    interval_s: float = 0.1
    acked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[DeliveryError] = field(default_factory=list)
    crashed: list[BaseException] = field(default_factory=list)
    sent: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-producer", daemon=True)

    def start(self) -> LoadProducer:
        self._thread.start()
        return self

    def run_here(self) -> LoadProducer:
        """Every event sent in the calling thread, at the same rate (a warm-up before the drill)."""
        self._run()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout_s: float = 300.0) -> LoadProducer:
        """Until the events run out (or ``timeout_s``); a load never started is done already."""
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        return self

    def stop(self, timeout_s: float = 120.0) -> LoadProducer:
        self._stop.set()
        self.join(timeout_s)
        assert not self._thread.is_alive(), "the load producer did not stop"
        return self

    def clean(self) -> bool:
        """No send failed and nothing crashed so far (a batch in flight is neither acknowledged nor failed
        yet: once the load has stopped, every event sent is acknowledged)."""
        return not self.errors and not self.failed and not self.crashed

    def rate(self) -> float:
        return self.batch / self.interval_s

    def _run(self) -> None:
        try:
            with Producer(self.settings) as sdk:
                next_at = time.monotonic()
                for start in range(0, len(self.events), self.batch):
                    if self._stop.is_set():
                        return
                    chunk = self.events[start : start + self.batch]
                    ids = [e.event_id for e in chunk]
                    self.sent += len(chunk)
                    try:
                        written = sdk.send_many(chunk)
                        assert written == len(chunk), (written, len(chunk))  # else kept in ``crashed``
                        self.acked.extend(ids)
                    except DeliveryError as exc:
                        self.errors.append(exc)
                        lost = {f.record_id for f in exc.failures}
                        self.failed.extend(i for i in ids if i in lost)
                        self.acked.extend(i for i in ids if i not in lost)
                    next_at += self.interval_s
                    time.sleep(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # the test reads it: nothing may stop the load but stop()
            self.crashed.append(exc)


def topic_events(settings: Settings) -> list[Event]:
    """The events topic's events, each partition in offset order."""
    return [Event.from_json(r.value) for r in read_all(settings.kafka_bootstrap, settings.topics.events)]


@dataclass
class FeatureCheck:
    events: int  # distinct events on the events topic
    vectors: int  # of them, those the oracle gives a vector (not late)
    records: int  # records of the view on the features topic (re-emitted ones included)
    entities: int


def check_features(settings: Settings, view: FeatureView, events: list[Event]) -> FeatureCheck:
    """The view's records on the features topic and its vectors in Redis equal the oracle over ``events``:
    every event has its record (none lost), each equal to the oracle's vector (an event counted twice or
    missed would change the later vectors of its entity), a re-emitted record identical to the first; every
    entity's online vector is the oracle's at its watermark."""
    counts = Counter(e.event_id for e in events)
    assert not [i for i, n in counts.items() if n > 1], "an event is twice on the events topic"
    oracle = Oracle(view).feed(events)
    seen: dict[str, dict[str, Any]] = {}
    records = 0
    for r in read_all(settings.kafka_bootstrap, settings.topics.features):
        rec = orjson.loads(r.value)
        if rec["view"] != view.name:
            continue
        records += 1
        event_id = rec["event"]["event_id"]
        expected = oracle.vectors[event_id]
        assert not oracle.diff(rec["features"], expected), (event_id, oracle.diff(rec["features"], expected))
        assert rec["entity"] == oracle.entity_of[event_id]
        first = seen.setdefault(event_id, rec)
        assert first == rec, (event_id, "re-emitted with another vector")
    assert seen.keys() == oracle.vectors.keys(), (
        f"{len(oracle.vectors.keys() - seen.keys())} event(s) without a record"
    )
    online = oracle.online()
    entities = sorted(online)
    for entity, row in zip(entities, read_redis(settings, view.name, entities), strict=True):
        assert row is not None, entity
        wm, aggs = online[entity]
        assert row.ts == wm and not diff(row.values, aggs), (entity, diff(row.values, aggs))
    return FeatureCheck(len(counts), len(oracle.vectors), records, len(entities))


def feature_records(settings: Settings) -> int:
    """How many feature records the workers have produced (their stats hash, on the Redis Cluster)."""
    client = RedisCluster.from_url(settings.redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        return int(client.hget(f"{settings.redis_prefix}stats:features", "records:all") or 0)
    finally:
        client.close()


def wait_feature_records(
    settings: Settings, target: int, live: Sequence[Worker], timeout_s: float = 180.0
) -> int:
    """Until the workers have produced ``target`` feature records (a worker of ``live`` that exits
    meanwhile fails the test, with the end of its log); the count reached."""
    deadline = time.monotonic() + timeout_s
    while (got := feature_records(settings)) < target:
        for w in live:
            assert w.alive(), w.log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"the workers made no progress ({got} of {target} records)"
        time.sleep(0.1)
    return got
