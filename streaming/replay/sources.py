"""What a replay reads: a Kafka topic over a range (with the labels topic beside it), or a file or River
dataset; all become ``(record, role)`` pairs for :class:`~streaming.replay.runner.Replay`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from features.errors import InvalidEvent
from streaming.ingest.rows import RowMapping, open_source
from streaming.learning.labels import taken_by_any
from streaming.learning.loop import MergeLoop
from streaming.learning.merge import Positioned
from streaming.replay.kafka import Bound, RangeError, RangeReader
from streaming.replay.runner import EVENTS, LABELS, Replay
from streaming.settings import Settings

__all__ = ["KafkaPlan", "file_records", "kafka_records", "plan_kafka"]

Pair = tuple[Positioned, str]
BEGINNING, END = Bound("beginning"), Bound("end")


@dataclass
class KafkaPlan:
    """The resolved ranges of a Kafka replay."""

    topic: str
    role: str  # events | features
    ranges: dict[str, dict[int, tuple[int, int]]]  # topic -> partition -> [start, end)
    kafka_order: bool = False
    labels_topic: str | None = None
    ranks: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(max(0, e - s) for parts in self.ranges.values() for s, e in parts.values())

    def describe(self) -> dict[str, Any]:
        return {
            t: {str(p): [s, e] for p, (s, e) in sorted(parts.items())} for t, parts in self.ranges.items()
        }


def plan_kafka(
    reader: RangeReader,
    settings: Settings,
    topic: str,
    role: str,
    start: Bound,
    end: Bound,
    *,
    kafka_order: bool = False,
    labels: bool = True,
    labels_start: Bound = BEGINNING,
    labels_end: Bound = END,
) -> KafkaPlan:
    """Resolve the range on ``topic`` and, with ``labels``, the labels topic over ``[labels_start,
    labels_end)``.

    Labels are read from the beginning of their retained log by default: a label's Kafka timestamp says
    when it was written, which need not follow its event's (features are often recomputed later than the
    labels were recorded); labels older than the range's first event are skipped by the replay.
    """
    ranges = {topic: reader.resolve(topic, start, end)}
    labels_topic = settings.topics.labels if labels and topic != settings.topics.labels else None
    if labels_topic is not None:
        try:
            reader.partitions(labels_topic)
        except RangeError:  # no labels topic: the range's own labels only
            labels_topic = None
    if labels_topic is not None:
        ranges[labels_topic] = reader.resolve(labels_topic, labels_start, labels_end)
    return KafkaPlan(
        topic,
        role,
        ranges,
        kafka_order,
        labels_topic,
        ranks={t: (0 if t == labels_topic else 1) for t in ranges},
    )


def kafka_records(reader: RangeReader, plan: KafkaPlan, replay: Replay) -> Iterator[Pair]:
    """The planned records in order. With a simulated label delay the labels topic is read first, whole,
    into the replay (a label's own time is then replaced by the simulated one)."""
    ranges = dict(plan.ranges)
    if plan.labels_topic is not None and replay.labels.kind != "recorded":
        labels = {plan.labels_topic: ranges.pop(plan.labels_topic)}
        reader.assign(labels)
        for rec in MergeLoop(reader, {plan.labels_topic: 0}).records():
            replay.feed(rec, LABELS)
    reader.assign(ranges)
    roles = {plan.topic: plan.role, plan.labels_topic: LABELS}
    # a label no replayed model's task takes is merged at once, as the live learner merges it
    label_ok = taken_by_any(list(replay.core.specs.values()))
    ranks = {t: plan.ranks[t] for t in ranges}
    for rec in MergeLoop(reader, ranks, kafka_time=plan.kafka_order, label_ok=label_ok).records():
        yield rec, roles[rec.topic]


def file_records(spec: str, mapping: RowMapping, **source_options: Any) -> Iterator[Pair]:
    """Rows of a JSONL/CSV file or a River dataset, as events in file order (rows that are not events are
    counted as invalid by the feature stage)."""
    for row in open_source(spec, label_field=mapping.label_field, **source_options):
        try:
            value: Any = mapping.to_event(row)
        except InvalidEvent as exc:  # the feature stage counts it and keeps the reason
            value = InvalidEvent(exc.field, f"{exc.problem} (row {row.position})")
        yield Positioned(0, 1, 0, row.position, spec, value), EVENTS
