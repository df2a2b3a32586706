"""A replay as a request and the function that runs it: what ``rivulet replay topic | file | dataset``
build from their options, and what tests and notebooks can build by hand.

A request names its source, a Kafka topic over a range (:class:`TopicSource`) or the rows of a file, a
River dataset or a synthetic stream (:class:`RowSource`), so the options of one kind cannot be given to the
other; the candidate specs and the views they read; how labels arrive; and how much to read.
:func:`run_replay` reads the source, feeds :class:`~streaming.replay.runner.Replay` and returns its result.

>>> label_mode(None, 250)
LabelMode(kind='ms', delay=250)
>>> label_mode(3, 250)
Traceback (most recent call last):
...
streaming.replay.plan.ReplayError: give --label-delay or --label-delay-ms, not both
>>> from types import SimpleNamespace as Spec
>>> [s.name for s in candidates([Spec(name="a"), Spec(name="b")], ["b"])]
['b']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from features.definitions import FeatureView
from streaming.clients import keyring
from streaming.errors import MissingKey, StreamingError
from streaming.ingest.rows import RowMapping
from streaming.learning.keys import Keyring
from streaming.learning.merge import Positioned
from streaming.learning.registry import RedisRegistry
from streaming.learning.spec import ModelSpec
from streaming.replay.champion import champion_at
from streaming.replay.collect import fewer_collections
from streaming.replay.kafka import Bound, RangeReader
from streaming.replay.runner import LABELS, Champion, LabelMode, Replay, ReplayResult, chunks
from streaming.replay.sources import KafkaPlan, file_records, kafka_records, plan_kafka
from streaming.settings import Settings

__all__ = [
    "ReplayError",
    "ReplayProgress",
    "ReplayRequest",
    "RowSource",
    "TopicSource",
    "candidates",
    "champions_from",
    "label_mode",
    "plan_topic",
    "run_replay",
    "views_for",
]

ChampionsAt = Callable[[int], list[Champion]]
BEGINNING, END = Bound("beginning"), Bound("end")
RECORDED = LabelMode()


class ReplayError(StreamingError, ValueError):
    """A replay request that cannot be run as given (both label delays, an unknown candidate)."""


@dataclass(frozen=True, slots=True)
class TopicSource:
    """A Kafka topic over ``[start, end)``, holding ``role`` records (events or features), with the labels
    topic read over ``[labels_start, labels_end)``; partitions merged by event time or, ``kafka_order``,
    record time."""

    topic: str
    role: Literal["events", "features"]
    start: Bound = BEGINNING
    end: Bound = END
    labels_start: Bound = BEGINNING
    kafka_order: bool = False
    labels_end: Bound = END


def plan_topic(reader: RangeReader, settings: Settings, source: TopicSource) -> KafkaPlan:
    """The ranges ``source`` names, resolved on Kafka (with its labels topic's): what replay and export read
    (one call of :func:`~streaming.replay.sources.plan_kafka` for both)."""
    return plan_kafka(
        reader,
        settings,
        source.topic,
        source.role,
        source.start,
        source.end,
        kafka_order=source.kafka_order,
        labels_start=source.labels_start,
        labels_end=source.labels_end,
    )


@dataclass(frozen=True, slots=True)
class RowSource:
    """The rows of a ``.jsonl``/``.csv`` file, ``river:<Dataset>`` or ``synth:<generator>``, mapped onto
    events by ``mapping``; ``options`` are the synthetic streams' (seed, drift position and width)."""

    spec: str
    mapping: RowMapping
    options: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay, with what, and how."""

    source: TopicSource | RowSource
    specs: Sequence[ModelSpec]
    views: Sequence[FeatureView]
    labels: LabelMode = RECORDED
    sample_every: int | None = None
    limit: int | None = None  # events (or features records) read; labels do not count
    champions: ChampionsAt | None = None

    @property
    def order(self) -> str:
        kafka = isinstance(self.source, TopicSource) and self.source.kafka_order
        return "kafka" if kafka else "event-time"


class ReplayProgress(Protocol):
    """Where :func:`run_replay` reports how far it is (a progress bar)."""

    def start(self, total: int | None) -> None: ...

    def update(self, done: int, rate: float) -> None: ...


def label_mode(delay_records: int | None, delay_ms: int | None) -> LabelMode:
    """Labels as recorded, or revealed a number of records or of event-time milliseconds after their
    event; one delay at most."""
    if delay_records is not None and delay_ms is not None:
        raise ReplayError("give --label-delay or --label-delay-ms, not both")
    if delay_records is not None:
        return LabelMode("records", delay_records)
    return LabelMode("ms", delay_ms) if delay_ms is not None else RECORDED


def candidates(specs: Sequence[ModelSpec], only: Sequence[str] | None) -> list[ModelSpec]:
    """The specs named in ``only`` (all with none); a name that is no spec is refused."""
    if not only:
        return list(specs)
    unknown = sorted(set(only) - {s.name for s in specs})
    if unknown:
        raise ReplayError(f"no spec {unknown[0]!r}; specs: {', '.join(s.name for s in specs)}")
    return [s for s in specs if s.name in only]


def views_for(views: Iterable[FeatureView], specs: Iterable[ModelSpec]) -> list[FeatureView]:
    """Only the views the specs read: nothing else is computed, or counted as not computable."""
    used = {s.view for s in specs}
    return [v for v in views if v.name in used]


def champions_from(registry: RedisRegistry, names: Sequence[str], specs: Sequence[ModelSpec]) -> ChampionsAt:
    """The registry models ``names`` as they were at a range's first event time (``specs``: the
    production specs they were trained with)."""
    return lambda ts: [champion_at(registry, name, specs, ts) for name in names]


def run_replay(
    settings: Settings, request: ReplayRequest, progress: ReplayProgress | None = None
) -> ReplayResult:
    """Run the request; reads Kafka without a consumer group, commits and writes nothing."""
    run = Replay(
        request.specs,
        views=request.views,
        labels=request.labels,
        sample_every=request.sample_every,
        champions=request.champions,
        keyring=_keyring(settings),
    )
    source = request.source
    if isinstance(source, RowSource):
        if progress is not None:
            progress.start(request.limit)
        records = file_records(source.spec, source.mapping, **source.options)
        _drive(run, records, request.limit, progress)
        return run.finish(source.spec, {"limit": request.limit}, request.order)
    with RangeReader(settings) as reader:
        plan = plan_topic(reader, settings, source)
        if progress is not None:
            main = sum(max(0, e - s) for s, e in plan.ranges[source.topic].values())
            progress.start(main if request.limit is None else min(request.limit, main))
        _drive(run, kafka_records(reader, plan, run), request.limit, progress)
    return run.finish(f"{source.topic} ({source.role})", plan.describe(), request.order)


def _drive(
    run: Replay, records: Iterable[tuple[Positioned, str]], limit: int | None, progress: ReplayProgress | None
) -> None:
    """Feed the records; ``limit`` and the progress count events and features records (not labels)."""
    last = time.monotonic()
    taken = 0
    with fewer_collections():  # as Replay.run: see streaming.replay.collect
        for chunk in chunks(records, limit):
            run.feed_all(chunk)
            taken += sum(role != LABELS for _, role in chunk)
            if progress is not None:
                now = time.monotonic()
                if now - last >= 0.2:
                    last = now
                    progress.update(taken, run.rate())
    if progress is not None:
        progress.update(taken, run.rate())


def _keyring(settings: Settings) -> Keyring | None:
    """The keys whose hand controls (:mod:`streaming.learning.controls`) a replay applies, as the live
    learner does; None without ``RIVULET_VERIFY_KEYS`` (each control is then a ``control`` dead letter)."""
    try:
        return keyring(settings)
    except MissingKey:
        return None
