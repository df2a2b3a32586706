"""Publishing rows: every row sent or rejected, labels inline or delayed. A recording producer stands in
for Kafka here (this tests the pure bookkeeping; the Kafka path is tested in
tests/streaming/ingest/test_producer.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from features.events import Event
from streaming.ingest.feed import LabelPolicy, RejectsFile, publish
from streaming.ingest.rows import Row, RowMapping

pytestmark = pytest.mark.unit


class RecordingProducer:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def send(self, event: Event) -> None:
        self.log.append(("event", event))

    def send_label(self, event_id: str, label: Any, ts: int) -> None:
        self.log.append(("label", (event_id, label, ts)))

    def flush(self) -> int:
        return len(self.log)


def rows(n: int) -> list[Row]:
    return [
        Row(i + 1, {"event_id": f"e{i}", "entity": "u", "ts": 100 * i, "x": i, "label": i % 2})
        for i in range(n)
    ]


def test_labels_released_n_events_later_with_the_releasing_events_time() -> None:
    p = RecordingProducer()
    report = publish(rows(6), p, RowMapping(), labels=LabelPolicy("topic", delay_events=2))  # type: ignore[arg-type]
    kinds = [(k, v.event_id if k == "event" else v[0]) for k, v in p.log]
    assert kinds == [
        ("event", "e0"),
        ("event", "e1"),
        ("event", "e2"),
        ("label", "e0"),
        ("event", "e3"),
        ("label", "e1"),
        ("event", "e4"),
        ("label", "e2"),
        ("event", "e5"),
        ("label", "e3"),
        ("label", "e4"),
        ("label", "e5"),
    ]
    assert all(v.label is None for k, v in p.log if k == "event")
    assert ("label", ("e0", 0, 200)) in p.log
    assert (report.sent, report.labels_sent, report.rejected) == (6, 6, [])


def test_labels_released_after_a_delay_in_seconds() -> None:
    now = [0.0]
    p = RecordingProducer()

    def sleep(s: float) -> None:
        now[0] += s

    def clock() -> float:
        now[0] += 0.5  # each look at the clock is half a second later
        return now[0]

    report = publish(
        rows(3),
        p,
        RowMapping(),
        labels=LabelPolicy("topic", delay_s=1.0),  # type: ignore[arg-type]
        clock=clock,
        sleep=sleep,
    )
    labels = [v for k, v in p.log if k == "label"]
    assert [lbl[0] for lbl in labels] == ["e0", "e1", "e2"]
    assert labels[0][2] == 0 + 1_000  # event time plus the delay
    assert report.labels_sent == 3


def test_inline_and_none_modes() -> None:
    p = RecordingProducer()
    publish(rows(2), p, RowMapping())  # type: ignore[arg-type]
    assert [v.label for _, v in p.log] == [0, 1]
    p = RecordingProducer()
    publish(rows(2), p, RowMapping(), labels=LabelPolicy("none"))  # type: ignore[arg-type]
    assert [k for k, _ in p.log] == ["event", "event"]
    assert all(v.label is None for _, v in p.log)


def test_every_row_is_sent_or_rejected_and_rejects_are_written(tmp_path: Path) -> None:
    data = [*rows(3), Row(4, None, "not valid JSON: x", "{x"), Row(5, {"entity": "u", "ts": "later"})]
    p = RecordingProducer()
    rejects = RejectsFile(tmp_path / "r.jsonl")
    report = publish(data, p, RowMapping(), rejects=rejects, limit=10)  # type: ignore[arg-type]
    rejects.close()
    assert report.read == 5
    assert report.sent == 3
    assert len(report.rejected) == 2
    written = [orjson.loads(line) for line in (tmp_path / "r.jsonl").read_bytes().splitlines()]
    assert written == [
        {"line": 4, "error": "not valid JSON: x", "raw": "{x"},
        {
            "line": 5,
            "error": "ts: 'later' is neither epoch milliseconds nor an ISO 8601 time",
            "row": {"entity": "u", "ts": "later"},
        },
    ]


def test_limit_and_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    p = RecordingProducer()
    report = publish(
        rows(10),
        p,
        RowMapping(),
        rate=100.0,
        limit=4,  # type: ignore[arg-type]
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert report.sent == 4
    assert abs(sum(slept) - 0.04) < 1e-9  # four events at 100/s take 40 ms of (fake) time
