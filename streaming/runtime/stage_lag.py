"""Each stage's lag measured from outside the stage (issue 18): what ``rivulet status`` prints and what the
API exports and shows on its dashboard, so both hold while the stage itself is stopped.

A stage's *position* on a partition is where it goes on reading after a restart:

- ``features``: the feature workers' consumer group's committed offsets on the events topic;
- ``learner``: the least, over the models it learns, of the offsets in each model's current checkpoint
  (the registry), on every topic it reads (features, labels, predictions): it seeks there when it starts.

Per partition, ``records`` is the end offset minus the position, and ``event_ms`` the event time of the
record *at* the position: the oldest record waiting (the payload's event time, as the stage orders by;
the Kafka record's timestamp for a record without one). Nothing waiting: no event time, lag 0 s.

What cannot be known is said, never guessed as 0 (:attr:`StageLag.problems`, :attr:`PartitionLag.records`
None): Kafka unreachable or too slow, a topic missing, a checkpoint whose offsets are not positions, a
position past the end of its partition (the topic recreated).

>>> p = PartitionLag("t", 0, end=10, position=4, event_ms=1_000)
>>> p.records, p.seconds(now=31.0), PartitionLag("t", 1, end=4, position=4).seconds(now=31.0)
(6, 30.0, 0.0)
>>> StageLag("learner", [p], problems=["model m: offsets unreadable"]).known
False
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from features.events import parse_ts
from streaming.clients import kafka_admin, kafka_consumer
from streaming.learning.header import CheckpointHeader
from streaming.learning.merge import NO_TIME, decode, event_time
from streaming.learning.registry import Registry, VersionInfo
from streaming.settings import Settings

__all__ = [
    "STAGES",
    "PartitionLag",
    "StageLag",
    "current_header",
    "learner_positions",
    "measure",
    "newest_header",
    "record_time",
    "shown",
]

STAGES = ("features", "learner")
CLIENT_ID = "rivulet-lag"
MAX_NAMED = 5  # models (or partitions) a problem names; the rest are counted: a line stays short


def shown(name: str, limit: int = 80) -> str:
    """A model's name as a problem shows it: cut to ``limit`` characters (a name may be 10 kB).

    >>> shown("m" * 100, 5)
    'mmmmm...'
    """
    return name if len(name) <= limit else name[:limit] + "..."


@dataclass(frozen=True)
class PartitionLag:
    """One partition of what a stage reads: ``records`` None when its position is not known."""

    topic: str
    partition: int
    end: int
    position: int | None
    event_ms: int | None = None  # event time of the record at the position (None: nothing waits, or unknown)

    @property
    def records(self) -> int | None:
        if self.position is None or self.position < 0 or self.position > self.end:
            return None
        return self.end - self.position

    def seconds(self, now: float) -> float | None:
        """Now minus the event time of the oldest record waiting (0: nothing waits; None: not known)."""
        records = self.records
        if records is None:
            return None
        if records == 0:
            return 0.0
        if self.event_ms is None:
            return None
        return max(0.0, now - self.event_ms / 1000.0)


@dataclass
class StageLag:
    """A stage's lag per partition, as measured at ``measured_at``; ``problems``: what is not known."""

    stage: str
    partitions: list[PartitionLag] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    measured_at: float = 0.0

    @property
    def known(self) -> bool:
        return not self.problems and all(p.records is not None for p in self.partitions)

    @property
    def records(self) -> int | None:
        """Records behind over every partition (None: none known)."""
        known = [r for p in self.partitions if (r := p.records) is not None]
        return sum(known) if known else None

    def worst(self, now: float) -> tuple[int | None, float | None]:
        """The most records and the most event-time seconds behind, over its partitions (None: not known)."""
        records = [r for p in self.partitions if (r := p.records) is not None]
        seconds = [s for p in self.partitions if (s := p.seconds(now)) is not None]
        return (max(records) if records else None, max(seconds) if seconds else None)


def measure(
    settings: Settings, registry: Registry, models: Sequence[str], *, timeout_s: float = 10.0
) -> dict[str, StageLag]:
    """Both stages' lag now. ``models``: the models whose checkpoints place the learner (those learning: not
    retired, quarantined or refused). Never raises for Kafka or the registry: what fails is a problem of the
    stage it concerns. Each Kafka call is bounded by ``timeout_s``."""
    ms = max(1, int(timeout_s * 1000))
    out = {stage: StageLag(stage) for stage in STAGES}
    features, learner = out["features"], out["learner"]
    topics = settings.topics
    try:  # the registry first: a checkpoint is never newer than the end offsets read after it
        positions, problems = learner_positions(
            registry, models, (topics.features, topics.labels, topics.predictions)
        )
    except Exception as exc:  # Redis away, a registry that cannot be read: the learner's lag is not known
        positions, problems = None, [f"registry: {type(exc).__name__}: {exc}"]
    learner.problems += problems
    overrides = {"request_timeout_ms": ms, "bootstrap_timeout_ms": ms}
    try:
        consumer = kafka_consumer(settings, client_id=CLIENT_ID, **overrides, **_SMALL_FETCHES)
    except Exception as exc:
        for stage in out.values():
            stage.problems.append(f"Kafka: {type(exc).__name__}: {exc}")
            stage.measured_at = time.time()
        return out
    try:
        group = f"{settings.topic_prefix}features"
        try:
            admin = kafka_admin(settings, client_id=CLIENT_ID, **overrides)
            try:
                committed = admin.list_group_offsets(group).get(group, {})
            finally:
                admin.close()
            _stage(consumer, features, [topics.events], lambda tp: _committed(committed, tp), ms)
        except Exception as exc:
            features.problems.append(f"Kafka: {type(exc).__name__}: {exc}")
        if positions is not None and models:  # no model learning: no position to measure from
            try:
                read = [topics.features, topics.labels, topics.predictions]
                _stage(consumer, learner, read, lambda tp: positions.get((tp.topic, tp.partition), 0), ms)
            except Exception as exc:
                learner.problems.append(f"Kafka: {type(exc).__name__}: {exc}")
    finally:
        consumer.close()
    for stage in out.values():
        stage.measured_at = time.time()
    return out


# one record per partition is read: fetch little (a larger first record still comes whole, KIP-74)
_SMALL_FETCHES = {
    "max_partition_fetch_bytes": 64 * 1024,
    "fetch_max_bytes": 1024 * 1024,
    "max_poll_records": 500,
}


def learner_positions(
    registry: Registry, models: Sequence[str], topics: Iterable[str]
) -> tuple[dict[tuple[str, int], int] | None, list[str]]:
    """The learner's position per (topic, partition) of ``topics``: the least over ``models`` of their
    current checkpoints' offsets (a partition a checkpoint does not name: 0, where the learner starts it).
    A checkpoint whose offsets are not positions makes them unknown (None, and the problem named)."""
    wanted = set(topics)
    per_model: list[dict[tuple[str, int], int]] = []
    problems: list[str] = []
    for name in models:
        header = CheckpointHeader.of(current_header(registry, name))
        if "offsets" in header.invalid:
            problems.append(f"model {shown(name)}: its checkpoint's offsets are not positions")
            continue
        offsets = {(t, p): o for t, parts in header.offsets.items() if t in wanted for p, o in parts.items()}
        bad = sorted(f"{t}[{p}]" for (t, p), o in offsets.items() if o < 0)
        if bad:
            named = ", ".join(bad[:MAX_NAMED]) + (
                f" and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
            )
            problems.append(f"model {shown(name)}: negative offsets in its checkpoint ({named})")
            continue
        per_model.append(offsets)
    if len(problems) > MAX_NAMED:  # each model named would make a line of megabytes: the rest counted
        more = len(problems) - MAX_NAMED
        problems = [
            *problems[:MAX_NAMED],
            f"and {more} more models whose checkpoint's offsets are not positions",
        ]
    if problems:
        return None, problems
    keys = {k for offsets in per_model for k in offsets}
    return {k: min(offsets.get(k, 0) for offsets in per_model) for k in keys}, []


def current_header(registry: Registry, name: str) -> dict[str, Any]:
    """The header of ``name``'s current version (else its newest that verifies; {} if none does)."""
    return newest_header(registry.versions(name))


def newest_header(infos: Sequence[VersionInfo]) -> dict[str, Any]:
    """The header of the current version of ``infos`` (else the newest that verifies; {} if none does)."""
    current = next((v for v in infos if v.current and not v.refused), None)
    newest = current or next((v for v in infos if not v.refused), None)
    return newest.header if newest is not None else {}


def _committed(committed: dict[Any, Any], tp: TopicPartition) -> int:
    meta = committed.get(tp)
    offset = getattr(meta, "offset", None)
    return offset if isinstance(offset, int) and offset >= 0 else 0  # none committed: the log's start


def _stage(consumer: Any, stage: StageLag, topics: Sequence[str], position: Any, ms: int) -> None:
    """``stage``'s partitions of ``topics``: end offsets, positions and the event times at them."""
    existing = consumer.topics()  # asked of the cluster now: a deleted topic is not served from a cache
    tps: list[TopicPartition] = []
    for topic in topics:
        if topic not in existing:
            stage.problems.append(f"topic {topic} missing")
            continue
        tps += [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not tps:
        return
    ends = consumer.end_offsets(tps, timeout_ms=ms)
    at = {tp: position(tp) for tp in tps}
    waiting = {tp: at[tp] for tp in tps if tp in ends and 0 <= at[tp] < ends[tp]}
    times = record_times(consumer, waiting, ms)
    unknown: list[str] = []
    for tp in tps:
        if tp not in ends:
            unknown.append(f"{tp.topic}[{tp.partition}]: end offset not known")
            continue
        lag = PartitionLag(tp.topic, tp.partition, ends[tp], at[tp], times.get(tp))
        if lag.records is None:
            unknown.append(
                f"{tp.topic}[{tp.partition}]: position {at[tp]} is past the end {ends[tp]} (topic recreated?)"
            )
        stage.partitions.append(lag)
    if len(unknown) > MAX_NAMED:  # a topic of 200 partitions recreated: 200 problems, the rest counted
        unknown = [*unknown[:MAX_NAMED], f"and {len(unknown) - MAX_NAMED} more partitions not known"]
    stage.problems += unknown


def record_times(consumer: Any, offsets: dict[TopicPartition, int], ms: int) -> dict[TopicPartition, int]:
    """The event time (:func:`record_time`) of the record at each partition's offset (the first one after
    it, where compaction or a transaction marker took it), read within ``ms``; a partition whose record did
    not come in time is left out."""
    if not offsets:
        return {}
    consumer.assign(list(offsets))
    for tp, offset in offsets.items():
        consumer.seek(tp, offset)
    out: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + ms / 1000.0
    while len(out) < len(offsets):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for tp, records in consumer.poll(timeout_ms=min(500, max(1, int(left * 1000)))).items():
            if tp in out or not records:
                continue
            t = record_time(records[0].value, records[0].timestamp)
            if t is not None:
                out[tp] = t
            consumer.pause(tp)
    return out


def record_time(value: bytes | None, timestamp: int | None) -> int | None:
    """A record's event time in ms: a features, label or prediction record's as the learner merges it, an
    event's ``ts``, else the Kafka record's timestamp (None: neither).

    >>> record_time(b'{"entity": "u", "ts": "2024-01-01T00:00:00Z", "fields": {}}', 5)
    1704067200000
    >>> record_time(b"not json", 7), record_time(b"[]", -1)
    (7, None)
    """
    data = decode(value)
    t = event_time(data)
    if t == NO_TIME and isinstance(data, dict) and "ts" in data:
        try:
            t = parse_ts(data["ts"])
        except Exception:  # not a time: the record's own timestamp
            t = NO_TIME
    if t != NO_TIME:
        return t
    return timestamp if isinstance(timestamp, int) and timestamp >= 0 else None
