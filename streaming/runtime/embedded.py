"""Embedded defaults: an in-process log in place of Kafka and the in-memory stores in place of Redis, wired
to the same feature pipeline, learner and scoring API as the real stack (``rivulet demo``).

:class:`EmbeddedStack` runs one stream through it: events are appended to the log, the
:class:`~features.pipeline.FeaturePipeline` turns them into features records (state and online rows in a
:class:`~features.store.MemoryStore`), the :class:`~streaming.runtime.learner.Learner` consumes the
features, labels and predictions topics in the same deterministic merge as the Kafka learner and
checkpoints to a :class:`~streaming.learning.registry.MemoryRegistry`; the API reads the same store and
registry and appends its predictions to the log.

A bad record (a label the models cannot take, a value out of the numeric domain, bytes that are not JSON)
is rejected by the learner's router as in the real stack: counted, and its dead letter appended to the
log's dead-letter topic; it never stops the demo.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from features.definitions import FeatureView
from features.events import Event
from features.pipeline import FeaturePipeline, RawRecord
from features.store import MemoryStore
from streaming.learning.deadletters import DeadLetter
from streaming.learning.evidence import decision_record
from streaming.learning.keys import SigningKey
from streaming.learning.loop import Record
from streaming.learning.registry import MemoryRegistry
from streaming.learning.router import TopicRoles
from streaming.learning.spec import ModelSpec
from streaming.runtime.learner import Learner
from streaming.settings import Settings

__all__ = ["EmbeddedStack", "MemoryLog", "MemoryTail"]


class MemoryLog:
    """An append-only log per topic (one partition each), shared by threads. Like Kafka's retention, only
    the newest ``retain`` records of a topic are kept; offsets keep counting."""

    def __init__(self, retain: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._topics: dict[str, list[tuple[bytes | None, bytes, int]]] = {}
        self._base: dict[str, int] = {}  # offset of each topic's first retained record
        self.retain = retain

    def append(self, topic: str, value: bytes, key: bytes | None = None) -> int:
        with self._lock:
            records = self._topics.setdefault(topic, [])
            records.append((key, value, int(time.time() * 1000)))
            base = self._base.setdefault(topic, 0)
            offset = base + len(records) - 1
            if len(records) > self.retain * 1.25:
                drop = len(records) - self.retain
                del records[:drop]
                self._base[topic] = base + drop
            return offset

    def read(
        self, topic: str, offset: int, limit: int = 10_000
    ) -> list[tuple[int, bytes | None, bytes, int]]:
        """Records from ``offset`` on (from the first retained one if that is later)."""
        with self._lock:
            base = self._base.get(topic, 0)
            start = max(offset, base)
            records = self._topics.get(topic, [])[start - base : start - base + limit]
        return [(start + i, k, v, ts) for i, (k, v, ts) in enumerate(records)]

    def end(self, topic: str) -> int:
        with self._lock:
            return self._base.get(topic, 0) + len(self._topics.get(topic, []))


class MemoryTail:
    """A :class:`MemoryLog`'s topics tailed from their start (a :class:`~streaming.learning.loop.RecordLog`,
    as the live learner's :class:`~streaming.runtime.learner.KafkaTail`): each poll reads everything new."""

    def __init__(self, log: MemoryLog, topics: Sequence[str]) -> None:
        self.log = log
        self.positions = dict.fromkeys(topics, 0)

    def assigned(self) -> list[tuple[str, int]]:
        return [(topic, 0) for topic in self.positions]

    def poll(self) -> list[Record]:
        out = []
        for topic, position in self.positions.items():
            for offset, key, value, ts in self.log.read(topic, position, limit=1_000_000):
                out.append(Record(topic, 0, offset, value, key, ts))
                self.positions[topic] = offset + 1
        return out

    def exhausted(self, tp: tuple[str, int]) -> bool:
        return self.positions[tp[0]] >= self.log.end(tp[0])

    def finished(self) -> bool:
        return False  # the API may append more

    def throttle(self, sizes: Mapping[tuple[str, int], int]) -> None:
        pass


class LogSink:
    """The learner's dead letters to the log's dead-letter topic (the demo's in-process Kafka)."""

    def __init__(self, log: MemoryLog, topic: str) -> None:
        self.log, self.topic = log, topic
        self.sent = 0

    def send(self, letter: DeadLetter) -> None:
        self.log.append(self.topic, letter.to_json(), letter.record.key)
        self.sent += 1

    def flush(self) -> None:
        pass


@dataclass
class Stats:
    events: int = 0
    features: int = 0
    dead_letters: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: bool = False

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.events / elapsed if elapsed > 0 else 0.0


class EmbeddedStack:
    def __init__(
        self,
        settings: Settings,
        views: Sequence[FeatureView],
        specs: Sequence[ModelSpec],
        signer: SigningKey,
        *,
        batch: int = 500,
    ) -> None:
        self.settings = settings
        self.views = list(views)
        self.log = MemoryLog()
        self.store = MemoryStore()
        self.registry = MemoryRegistry(signer=signer)
        self.pipeline = FeaturePipeline(self.views, self.store, cache_entities=100_000)
        t = settings.topics
        self.topics = t
        self.dead_letters = LogSink(self.log, t.dead_letters)
        self.learner = Learner(
            specs, self.registry, TopicRoles(t.features, t.labels, t.predictions), sink=self.dead_letters
        )
        self.batch = batch
        self.stats = Stats()
        # the features, labels and predictions topics in the live learner's merge
        self._merge = self.learner.merge_loop(MemoryTail(self.log, [t.features, t.labels, t.predictions]))
        self._stop = threading.Event()
        # made by the first batch: a stack that never runs holds no event loop to leak
        self._loop: asyncio.AbstractEventLoop | None = None

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Release the event loop the feature pipeline runs on (after :meth:`run` has returned)."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(
        self,
        events: Iterable[Event],
        *,
        rate: float | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        """Stream ``events`` through the stack until they end or :meth:`stop`; then checkpoint. Blocking
        (a thread of its own in the demo)."""
        start = time.monotonic()
        chunk: list[Event] = []
        try:
            for event in events:
                if self._stop.is_set():
                    break
                chunk.append(event)
                if on_event is not None:
                    on_event(event)
                if rate:
                    ahead = start + (self.stats.events + len(chunk)) / rate - time.monotonic()
                    if ahead > 0:
                        self._step(chunk)
                        chunk = []
                        self._stop.wait(ahead)  # Ctrl-C does not wait for the next event
                        continue
                if len(chunk) >= self.batch:
                    self._step(chunk)
                    chunk = []
            if chunk:
                self._step(chunk)
            self._learn()
            self.learner.checkpoint()
        finally:
            self.stats.finished = True

    def idle(self) -> None:
        """After the stream: keep learning from what the API publishes (predictions, labels)."""
        while not self._stop.wait(0.25):
            self._learn()
            if self.learner.due(time.monotonic()):
                self.learner.checkpoint()
        self.learner.checkpoint()

    def _step(self, events: list[Event]) -> None:
        t = self.topics
        raws = []
        for e in events:
            value = e.to_json()
            offset = self.log.append(t.events, value, e.entity.encode())
            raws.append(RawRecord(value, t.events, 0, offset, e.entity.encode()))
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        result = self._loop.run_until_complete(self.pipeline.process(raws))
        for rec in result.records:
            self.log.append(t.features, rec.to_json(), rec.entity.encode())
        for dead in result.dead_letters:
            self.log.append(t.dead_letters, dead.to_json())
        self._loop.run_until_complete(result.commit(self.store))
        self.stats.events += len(events)
        self.stats.features += len(result.records)
        self.stats.dead_letters += len(result.dead_letters)
        self._learn()
        if self.learner.due(time.monotonic()):
            self.learner.checkpoint()

    def _learn(self) -> None:
        """Everything new on the features, labels and predictions topics, in the learner's merge order."""
        for rec in self._merge.round():
            self.learner.process(rec)

    def metrics(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "metrics": state.metric_values(),
                "learned": state.n_learned,
                "drifts": state.counters["drifts"],
                "rejected": dict(state.rejected),
                "status": state.status,
                "role": state.role if self.learner.core.specs[state.spec].promotion is not None else None,
                "version": self.registry.current_version(name),
                "last_drift": state.drifts[-1].ts if state.drifts else None,
            }
            for name, state in list(self.learner.core.models.items())
        }

    def decisions(self) -> list[dict[str, Any]]:
        """The learner's lifecycle decisions so far (streaming.learning.evidence.decision_record)."""
        return [decision_record(d) for d in list(self.learner.core.decisions)]
