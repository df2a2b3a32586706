"""Publishing a source of rows to Kafka: validation, rejects, label delay and rate (``rivulet produce``).

Every row is accounted for: it is sent as an event, or rejected with its position and reason (written to
the rejects file and counted). Labels go inline on the event, to the labels topic after a delay counted
in events or seconds, or nowhere.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from features.errors import InvalidEvent
from features.events import MAX_TS_MS, Event
from streaming.errors import EventTooLarge
from streaming.ingest.producer import Producer
from streaming.ingest.rows import Row, RowMapping

__all__ = ["LabelPolicy", "PublishReport", "Reject", "RejectsFile", "publish"]


@dataclass(frozen=True, slots=True)
class LabelPolicy:
    """``inline``: the label rides on the event. ``topic``: it is sent to the labels topic ``delay_events``
    events or ``delay_s`` seconds after its event (its time is the event's plus the delay). ``none``: dropped
    (for unlabelled scoring traffic)."""

    mode: Literal["inline", "topic", "none"] = "inline"
    delay_events: int = 0
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Reject:
    position: int
    error: str
    row: dict[str, Any] | None = None
    raw: str | None = None


class RejectsFile:
    """Appends rejected rows as JSON lines; the file is created on the first reject only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None

    def write(self, reject: Reject) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("wb")
        record: dict[str, Any] = {"line": reject.position, "error": reject.error}
        if reject.row is not None:
            record["row"] = reject.row
        if reject.raw is not None:
            record["raw"] = reject.raw
        try:
            line = orjson.dumps(record, default=repr, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # e.g. an integer beyond 64 bits in the row (why it was rejected): kept as text
            line = orjson.dumps(_jsonable(record), default=repr, option=orjson.OPT_APPEND_NEWLINE)
        self._fh.write(line)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _jsonable(value: Any) -> Any:
    """``value`` with integers orjson cannot write (beyond 64 bits) as strings, and text always UTF-8."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        try:
            return str(value)
        except ValueError:  # more digits than Python converts
            return f"<integer of {value.bit_length()} bits>"
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    return value


@dataclass(slots=True)
class PublishReport:
    read: int = 0
    sent: int = 0
    labels_sent: int = 0
    rejected: list[Reject] = field(default_factory=list)
    delivered: int = 0
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _DelayedLabels:
    """Labels held back ``LabelPolicy.delay_events`` events or ``delay_s`` seconds after their event, then
    sent to the labels topic at the time they became known."""

    def __init__(
        self,
        policy: LabelPolicy,
        producer: Producer,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.policy, self.producer, self.clock, self.sleep = policy, producer, clock, sleep
        self.pending: deque[tuple[float, str, Any, int]] = deque()  # (due, event_id, label, label ts)
        self.last_ts = 0  # the newest event time sent
        self.sent = 0

    def hold(self, event_id: str, label: Any, ts: int, events_sent: int) -> None:
        delay = self.policy
        due = self.clock() + delay.delay_s if delay.delay_s else events_sent + delay.delay_events
        self.pending.append((due, event_id, label, ts + int(delay.delay_s * 1000)))

    def release(self, events_sent: int, now: float, final: bool = False) -> None:
        """Send the labels due by ``events_sent`` events or by the time ``now``; ``final``: every one, waiting
        out the clock delays."""
        by_time = bool(self.policy.delay_s)
        tail = 0
        while self.pending:
            due, event_id, label, ts = self.pending[0]
            ready = due <= (now if by_time else events_sent)
            if not (ready or final):
                return
            if final and by_time and due > self.clock():
                self.sleep(min(due - self.clock(), 0.25))
                continue
            self.pending.popleft()
            if ready or by_time:
                # a label released N events later became known at the releasing event's time
                known = max(ts, self.last_ts)
            else:
                # still pending when the stream ended: known just after it, one millisecond apart, in order
                tail += 1
                known = max(ts, self.last_ts + tail)
            # never past the last event time there is (a stream at 9999-12-31 made this label invalid and
            # crashed the command)
            self.producer.send_label(event_id, label, min(known, MAX_TS_MS))
            self.sent += 1


def _send(row: Row, producer: Producer, mapping: RowMapping, labels: LabelPolicy) -> tuple[Event, Any]:
    """The row as an event, sent (its label taken off unless it rides inline); returns it and its label.
    Raises ``InvalidEvent`` or ``EventTooLarge`` for a row that is rejected."""
    event = mapping.to_event(row)
    label = event.label
    if labels.mode != "inline" and label is not None:
        event = event.model_copy(update={"label": None})
    producer.send(event)
    return event, label


def publish(
    rows: Iterable[Row],
    producer: Producer,
    mapping: RowMapping,
    *,
    labels: LabelPolicy = LabelPolicy(),
    rate: float | None = None,
    limit: int | None = None,
    rejects: RejectsFile | None = None,
    on_progress: Callable[[PublishReport], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PublishReport:
    """Send rows as events; returns what happened to each. Delivery failures raise ``DeliveryError``."""
    report = PublishReport()
    delayed = _DelayedLabels(labels, producer, clock, sleep)
    start = clock()
    for row in itertools.islice(rows, None if limit is None else max(limit, 0)):
        report.read += 1
        if rate and (ahead := start + report.read / rate - clock()) > 0.001:
            sleep(ahead)
        try:
            event, label = _send(row, producer, mapping, labels)
        except (InvalidEvent, EventTooLarge) as exc:
            reject = Reject(row.position, str(exc), row.data, row.raw)
            report.rejected.append(reject)
            if rejects is not None:
                rejects.write(reject)
            continue
        report.sent += 1
        delayed.last_ts = event.ts
        if labels.mode == "topic" and label is not None:
            delayed.hold(event.event_id, label, event.ts, report.sent)
        if delayed.pending:
            delayed.release(report.sent, clock())
        if on_progress is not None and report.read % 1000 == 0:
            report.elapsed_s = clock() - start
            on_progress(report)
    delayed.release(report.sent, clock(), final=True)
    report.labels_sent = delayed.sent
    report.delivered = producer.flush()
    report.elapsed_s = clock() - start
    if on_progress is not None:
        on_progress(report)
    return report
