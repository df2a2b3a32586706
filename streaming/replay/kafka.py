"""Reading a topic over a range, the way a replay must: manual partition assignment, no consumer group,
no auto-commit, ``read_committed``; nothing is ever written.

A range bound is one of:

- ``beginning`` / ``end``: the first retained record, or the end of the log when the replay starts;
- a time, ``time:<ISO 8601 or epoch ms>`` or a bare ISO 8601 string: the first record whose Kafka
  timestamp is at or after it (``offsets_for_times``);
- ``offset:N``: offset N on every partition;
- ``P:N[,P:N...]``: offsets per partition (partitions not named keep the default bound).

Offsets are clamped to what the log retains; the end bound is exclusive.

>>> parse_bound("beginning")
Bound(kind='beginning', value=None)
>>> parse_bound("offset:5"), parse_bound("0:10,2:7")
(Bound(kind='offsets', value=5), Bound(kind='partitions', value={0: 10, 2: 7}))
>>> parse_bound("time:2026-01-01T00:00:00Z")
Bound(kind='time', value=1767225600000)
>>> parse_bound("12")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streaming.replay.kafka.RangeError: '12' is ambiguous: write offset:12 for an offset or time:12 ...
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition

from features.errors import InvalidEvent
from features.events import parse_ts
from streaming.clients import kafka_consumer
from streaming.errors import StreamingError
from streaming.settings import Settings

__all__ = ["Bound", "RangeError", "RangeReader", "parse_bound"]

MAX_BUFFERED = 50_000  # per partition, before it is paused while the others catch up


class RangeError(StreamingError, ValueError):
    """A range that cannot be read (bad syntax, unknown topic, a log that no longer holds it)."""


@dataclass(frozen=True, slots=True)
class Bound:
    kind: str  # beginning | end | time | offsets | partitions
    value: Any = None


def parse_bound(text: str) -> Bound:
    t = text.strip()
    if t.lower() in ("beginning", "earliest", "start"):
        return Bound("beginning")
    if t.lower() in ("end", "latest"):
        return Bound("end")
    kind, sep, rest = t.partition(":")
    try:
        if sep and kind == "time":
            return Bound("time", parse_ts(rest, "time"))
        if sep and kind == "offset":
            return Bound("offsets", _offset(rest))
        if sep and kind.isdigit():
            parts = {}
            for item in t.split(","):
                p, _, o = item.partition(":")
                parts[int(p)] = _offset(o)
            return Bound("partitions", parts)
        if t.isdigit():
            raise RangeError(
                f"{t!r} is ambiguous: write offset:{t} for an offset or time:{t} for epoch milliseconds"
            )
        return Bound("time", parse_ts(t, "time"))
    except (ValueError, InvalidEvent) as exc:
        if isinstance(exc, RangeError):
            raise
        raise RangeError(
            f"bad range bound {text!r}: expected beginning, end, time:<ISO or epoch ms>, offset:N or P:N,P:N"
        ) from None


def _offset(text: str) -> int:
    n = int(text)
    if n < 0:
        raise ValueError(text)
    return n


class RangeReader:
    """A read-only consumer of ``[start, end)`` on each assigned partition: once assigned, a finished
    :class:`~streaming.learning.loop.RecordLog` (read in order by :class:`~streaming.learning.loop.MergeLoop`
    or :func:`~streaming.learning.loop.in_journal_order`)."""

    def __init__(self, settings: Settings, *, client_id: str = "rivulet-replay") -> None:
        self.consumer = kafka_consumer(settings, client_id=client_id)  # no group, commits nothing
        self.ranges: dict[TopicPartition, tuple[int, int]] = {}
        self._paused: set[TopicPartition] = set()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.consumer.close()

    def partitions(self, topic: str) -> list[int]:
        parts = self.consumer.partitions_for_topic(topic)
        if not parts:
            raise RangeError(f"topic {topic!r} does not exist")
        return sorted(parts)

    def resolve(self, topic: str, start: Bound, end: Bound) -> dict[int, tuple[int, int]]:
        """Start and end offsets per partition for two bounds."""
        tps = [TopicPartition(topic, p) for p in self.partitions(topic)]
        low = self.consumer.beginning_offsets(tps)
        high = self.consumer.end_offsets(tps)

        def at(bound: Bound, default: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
            if bound.kind == "beginning":
                return dict(low)
            if bound.kind == "end":
                return dict(high)
            if bound.kind == "offsets":
                return {tp: bound.value for tp in tps}
            if bound.kind == "partitions":
                unknown = sorted(set(bound.value) - {tp.partition for tp in tps})
                if unknown:
                    raise RangeError(f"topic {topic!r} has no partition {unknown[0]}")
                return {tp: bound.value.get(tp.partition, default[tp]) for tp in tps}
            found = self.consumer.offsets_for_times({tp: bound.value for tp in tps})
            return {tp: (found[tp].offset if found.get(tp) else high[tp]) for tp in tps}

        s, e = at(start, low), at(end, high)
        return {
            tp.partition: (min(max(s[tp], low[tp]), high[tp]), min(max(e[tp], low[tp]), high[tp]))
            for tp in tps
        }

    def timestamp_at(self, topic: str, partition: int, offset: int, timeout_s: float = 10.0) -> int:
        """The Kafka timestamp of the record at ``offset`` (or the first one after it)."""
        tp = TopicPartition(topic, partition)
        self.consumer.assign([tp])
        self.consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=200, max_records=1).values():
                return int(records[0].timestamp)
        raise RangeError(f"no record at or after offset {offset} of {topic}[{partition}]")

    def log_start(self, topic: str) -> dict[int, int]:
        tps = [TopicPartition(topic, p) for p in self.partitions(topic)]
        return {tp.partition: o for tp, o in self.consumer.beginning_offsets(tps).items()}

    def assign(self, ranges: Mapping[str, Mapping[int, tuple[int, int]]]) -> int:
        """Read these ranges; returns how many offsets they span."""
        self.ranges = {
            TopicPartition(t, p): (s, e)
            for t, parts in ranges.items()
            for p, (s, e) in parts.items()
            if e > s
        }
        self.consumer.assign(list(self.ranges))
        for tp, (s, _) in self.ranges.items():
            self.consumer.seek(tp, s)
        return sum(e - s for s, e in self.ranges.values())

    def assigned(self) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in self.ranges]

    def exhausted(self, key: tuple[str, int]) -> bool:
        tp = TopicPartition(*key)
        rng = self.ranges.get(tp)
        return rng is None or self.consumer.position(tp) >= rng[1]

    def finished(self) -> bool:
        return all(self.exhausted((tp.topic, tp.partition)) for tp in self.ranges)

    def poll(self) -> list[Any]:
        """The next records within range (partitions read to their end are paused)."""
        out = []
        for tp, records in self.consumer.poll(timeout_ms=200).items():
            end = self.ranges[tp][1]
            out += [r for r in records if r.offset < end]
            if self.consumer.position(tp) >= end:
                self._pause(tp)
        return out

    def throttle(self, sizes: Mapping[tuple[str, int], int]) -> None:
        """Pause partitions far ahead of the others (their records wait in memory), resume the rest."""
        for (t, p), n in sizes.items():
            tp = TopicPartition(t, p)
            if tp not in self.ranges or self.exhausted((t, p)):
                continue
            if n > MAX_BUFFERED:
                self._pause(tp)
            elif tp in self._paused:
                self._paused.discard(tp)
                self.consumer.resume(tp)

    def _pause(self, tp: TopicPartition) -> None:
        if tp not in self._paused:
            self._paused.add(tp)
            self.consumer.pause(tp)
