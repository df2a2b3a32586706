"""One learner loop for every source: a record log (:class:`RecordLog`) in, the learner's order out.

A log is what the learner reads: the live Kafka tail (:class:`streaming.runtime.learner.KafkaTail`), a Kafka
range (:class:`streaming.replay.kafka.RangeReader`), the embedded demo's in-process log
(:class:`streaming.runtime.embedded.MemoryTail`), a list of records or a file of them
(:class:`MemoryRecords`, :class:`FileRecords`). Every one goes through the same steps here: poll, decode,
event time (with the models' label check), merge (:class:`~streaming.learning.merge.Merger`), so the live
learner, the demo, a replay and a verify see one order for the same records, whatever their source.

>>> from streaming.learning.merge import NO_TIME
>>> log = MemoryRecords([
...     Record("f", 0, 0, b'{"view": "v", "features": {}, "event": {"event_id": "a", "ts": 9}}'),
...     Record("f", 1, 0, b"not json"),  # no time: released as soon as it heads its partition
...     Record("l", 0, 0, b'{"event_id": "a", "label": true, "ts": 9}'),
... ])
>>> [(r.topic, r.partition, r.ts == NO_TIME) for r in MergeLoop(log, {"l": 0, "f": 1}).records()]
[('f', 1, True), ('l', 0, False), ('f', 0, False)]
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from streaming.learning.merge import Merger, OrderJournal, Positioned, decode, event_time

__all__ = [
    "FileRecords",
    "LogRecord",
    "MemoryRecords",
    "MergeLoop",
    "Record",
    "RecordLog",
    "in_journal_order",
    "read_records",
    "write_records",
]

TP = tuple[str, int]


class LogRecord(Protocol):
    """A record as a log delivers it (a Kafka ``ConsumerRecord`` is one)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Record:
    """A record of a log that is not Kafka (the demo's, a file's)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int = 0


class RecordLog(Protocol):
    """What the learner reads: partitions, each in offset order."""

    def assigned(self) -> list[TP]:
        """The partitions read (the merge waits for each of them), in a fixed order."""
        ...

    def poll(self) -> Sequence[LogRecord]:
        """The next records (possibly none yet)."""
        ...

    def exhausted(self, tp: TP) -> bool:
        """Has this partition been read to its end (for now: a tail may grow)?"""
        ...

    def finished(self) -> bool:
        """Has every partition been read to its end for good (never, for a tail)?"""
        ...

    def throttle(self, sizes: Mapping[TP, int]) -> None:
        """How many records of each partition wait in memory: a log may pause those far ahead."""
        ...


class MergeLoop:
    """A log's records, decoded and timed, in the merge order (:class:`~streaming.learning.merge.Merger`).

    ``ranks``: each topic's rank at equal times (the learner's: labels, then features, then predictions).
    ``label_ok``: :func:`streaming.learning.labels.taken_by_any` of the models' specs (a label no model takes
    is merged at once). ``kafka_time``: merge by the records' Kafka timestamps instead (a replay's
    ``--order kafka``).
    """

    def __init__(
        self,
        log: RecordLog,
        ranks: Mapping[str, int],
        *,
        label_ok: Callable[[Any], bool] | None = None,
        kafka_time: bool = False,
    ) -> None:
        self.log = log
        self.merger = Merger(dict(ranks))
        self.label_ok = label_ok
        self.kafka_time = kafka_time
        for topic, partition in log.assigned():
            self.merger.track(topic, partition)

    def round(self) -> Iterator[Positioned]:
        """One turn: poll the log once, then release every record no partition can still precede."""
        merger, label_ok = self.merger, self.label_ok
        for r in self.log.poll():
            data = decode(r.value)
            ts = r.timestamp if self.kafka_time else event_time(data, label_ok=label_ok)
            merger.add(r.topic, r.partition, r.offset, ts, data, r.value, r.key)
        yield from merger.ready(self.log.exhausted)

    def records(self) -> Iterator[Positioned]:
        """Every record, until the log is finished (a tail never is: its reader turns :meth:`round`)."""
        while True:
            yield from self.round()
            if self.log.finished() and not self.merger.buffered():
                return
            self.log.throttle(self.merger.sizes())

    def buffered(self) -> int:
        return self.merger.buffered()


def in_journal_order(
    log: RecordLog, journals: list[dict[str, Any]], *, on_missing: Callable[[str, int], Exception]
) -> Iterator[Positioned]:
    """A log's records in the order a learner recorded (:class:`~streaming.learning.merge.OrderJournal`;
    each partition in offset order): what rebuilds a checkpoint, however the log was read live.
    ``on_missing(topic, partition)``: the error when the log holds fewer records than the journal lists."""
    queues: dict[TP, deque[Positioned]] = {tp: deque() for tp in log.assigned()}
    for tp in OrderJournal.steps(journals):
        q = queues.get(tp)
        if q is None:
            raise on_missing(*tp)
        while not q:
            if log.exhausted(tp):
                raise on_missing(*tp)
            for r in log.poll():
                data = decode(r.value)
                queues[(r.topic, r.partition)].append(
                    Positioned(event_time(data), 0, r.partition, r.offset, r.topic, data, r.value, r.key)
                )
            log.throttle({k: len(v) for k, v in queues.items()})
        yield q.popleft()


class MemoryRecords:
    """A finished log of given records (each partition's in offset order), polled ``batch`` at a time."""

    def __init__(self, records: Iterable[LogRecord], *, batch: int = 10_000) -> None:
        self._records = list(records)
        self._batch = max(1, batch)
        self._next = 0
        self._left: dict[TP, int] = {}  # records not yet polled, per partition
        for r in self._records:
            tp = (r.topic, r.partition)
            self._left[tp] = self._left.get(tp, 0) + 1

    def assigned(self) -> list[TP]:
        return list(self._left)

    def poll(self) -> list[LogRecord]:
        out = self._records[self._next : self._next + self._batch]
        self._next += len(out)
        for r in out:
            self._left[(r.topic, r.partition)] -= 1
        return out

    def exhausted(self, tp: TP) -> bool:
        return not self._left.get(tp, 0)

    def finished(self) -> bool:
        return self._next >= len(self._records)

    def throttle(self, sizes: Mapping[TP, int]) -> None:
        pass  # in memory already


class FileRecords(MemoryRecords):
    """The records of a file written by :func:`write_records` (one JSON object a line: ``topic``,
    ``partition``, ``offset``, ``timestamp``, ``key_b64``, ``value_b64``)."""

    def __init__(self, path: str | Path, *, batch: int = 10_000) -> None:
        super().__init__(read_records(path), batch=batch)


def _b64(raw: bytes | None) -> str | None:
    return base64.b64encode(raw).decode() if raw is not None else None


def _unb64(text: Any) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


def write_records(path: str | Path, records: Iterable[LogRecord]) -> int:
    """Write records as :class:`FileRecords` reads them, in the order given; how many."""
    n = 0
    with open(path, "wb") as out:
        for r in records:
            line = {
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key_b64": _b64(r.key),
                "value_b64": _b64(r.value),
            }
            out.write(orjson.dumps(line) + b"\n")
            n += 1
    return n


def read_records(path: str | Path) -> list[Record]:
    """The records of a file written by :func:`write_records`."""
    out = []
    with open(path, "rb") as lines:
        for line in lines:
            if line.strip():
                d = orjson.loads(line)
                out.append(
                    Record(
                        str(d["topic"]),
                        int(d["partition"]),
                        int(d["offset"]),
                        _unb64(d.get("value_b64")),
                        _unb64(d.get("key_b64")),
                        int(d.get("timestamp") or 0),
                    )
                )
    return out
