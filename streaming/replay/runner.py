"""A replay: records from any source through the same feature engine, router and learner core as the
live system, with metric curves, drift points and throughput recorded along the way.

Sources are normalised to :class:`~streaming.learning.merge.Positioned` records before they get here:
features records (from the features topic), events (from the events topic or a file, turned into features
records here by :class:`FeatureStage`: the feature worker's own :class:`~features.pipeline.FeaturePipeline`)
and labels. Labels are used as recorded, or held back and revealed
after a simulated delay counted in records (as River's ``evaluate.progressive_val_score(delay=N)`` does)
or in event-time milliseconds.
"""

from __future__ import annotations

import dataclasses
import heapq
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import orjson

from features.definitions import FeatureView
from features.errors import InvalidEvent
from features.events import Event
from features.pipeline import FeaturePipeline, RawRecord
from features.store import Loaded, StateStore, StateUpdate
from streaming.learning.controls import is_control
from streaming.learning.core import MAX_DECISIONS, DriftEvent, LearnerCore, ModelState
from streaming.learning.deadletters import MemorySink
from streaming.learning.evidence import Decision, decision_record
from streaming.learning.keys import Keyring
from streaming.learning.merge import Positioned, Undecodable, decode, is_time
from streaming.learning.router import Router, TopicRoles
from streaming.learning.spec import ModelSpec
from streaming.replay.collect import fewer_collections

__all__ = ["Champion", "FeatureStage", "LabelMode", "ModelResult", "Replay", "ReplayResult"]

FEATURES, LABELS, EVENTS = "features", "labels", "events"  # the roles of a replay's records
POINTS = 400  # about how many points an adaptive metric curve keeps (between POINTS and 2 * POINTS)
REJECTED_KEPT = 5
MAX_DRIFTS = 10_000  # per model, in a replay's result
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LabelMode:
    """``recorded``: labels as they are in the data. ``records``: each label is revealed ``delay`` records
    after its event. ``ms``: revealed at the first record ``delay`` ms of event time after it."""

    kind: Literal["recorded", "records", "ms"] = "recorded"
    delay: int = 0

    def describe(self) -> str:
        return "as recorded" if self.kind == "recorded" else f"delayed {self.delay} {self.kind}"


@dataclass(frozen=True, slots=True)
class Champion:
    """A registry version to replay alongside the candidates, as it was at the start of the range."""

    name: str
    version: int
    spec: ModelSpec
    state: ModelState
    last_learned_ts: int | None


class FeatureStage:
    """Events to features records with the feature worker's own :class:`~features.pipeline.FeaturePipeline`,
    each record as the learner reads it from the features topic (its JSON, decoded). One state per view
    and entity, kept in the pipeline's memory for the whole replay: nothing is stored anywhere.

    What the pipeline refuses is counted by its dead letter's reason (``invalid``, ``late``, ``overflow``,
    ``error``...; ``invalid`` and ``late`` always listed), with the first few ``invalid`` errors kept in
    ``rejected``; ``duplicates`` counts events a view had applied already, ``missing_key`` events without
    the field a re-keyed view is keyed by.
    """

    def __init__(self, views: Sequence[FeatureView]) -> None:
        # no bound on the cached states: they are the replay's only copy (the store keeps none)
        self.pipeline = FeaturePipeline(views, _NoStore(), cache_entities=sys.maxsize)
        self.counts = {"events": 0, "invalid": 0, "late": 0, "duplicates": 0, "missing_key": 0}
        self.rejected: list[str] = []  # why the first few invalid records were refused

    def __call__(self, rec: Positioned) -> list[Any]:
        return self.batch([rec])[0]

    def batch(self, recs: Sequence[Positioned]) -> list[list[Any]]:
        """Each record's features records, the records applied as one batch of the pipeline (in order:
        the same states, records and refusals as one at a time, without the cost of a batch per event)."""
        raws: list[RawRecord] = []
        parsed: list[Event | None] = []
        for rec in recs:
            data = rec.value
            value: bytes | None
            if isinstance(data, InvalidEvent):  # a row a file source could not map (see sources.py)
                self._refused("invalid", str(data))
                continue
            if isinstance(data, Event):  # a file's row, mapped: the bytes the producer would send
                value = data.to_json()
            elif rec.raw is not None or isinstance(data, Undecodable):
                value = rec.raw  # as read from the events topic
            else:
                value = orjson.dumps(data)
            raws.append(RawRecord(value, rec.topic, rec.partition, rec.offset, rec.key))
            parsed.append(data if isinstance(data, Event) else None)
        out: dict[int, list[Any]] = {id(raw): [] for raw in raws}
        if raws:
            result = _done(self.pipeline.process(raws, parsed))
            _done(result.commit(self.pipeline.store))  # the store keeps nothing; the pipeline's states stay
            counts = self.counts
            counts["events"] += len(raws) - sum(d.view is None for d in result.dead_letters)
            counts["duplicates"] += result.skipped
            counts["missing_key"] += result.missing_key
            for d in result.dead_letters:
                self._refused(d.reason, d.error)
            for r in result.records:
                out[id(r.source)].append(decode(r.to_json()))
        found = iter(raws)
        return [[] if isinstance(rec.value, InvalidEvent) else out[id(next(found))] for rec in recs]

    def _refused(self, reason: str, error: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if reason == "invalid" and len(self.rejected) < REJECTED_KEPT:
            self.rejected.append(error)


class _NoStore(StateStore):
    """A replay's state store: nothing stored, nothing loaded (the pipeline keeps every state it makes)."""

    async def load(self, view: str, entities: Sequence[str]) -> dict[str, Loaded]:
        return {}

    async def commit(self, view: str, updates: Sequence[StateUpdate]) -> int:
        return 0


def _done(step: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (the pipeline on a store that does no I/O), without an
    event loop: one per record would cost more than the record."""
    try:
        step.send(None)
    except StopIteration as finished:
        return finished.value
    step.close()
    raise RuntimeError("the feature pipeline waited on its store: a replay's store does no I/O")


@dataclass
class ModelResult:
    name: str
    spec: str
    view: str
    metrics: dict[str, float]
    counters: dict[str, int]
    drifts: list[dict[str, Any]]
    curve: list[list[Any]]  # [records, event ts, {metric: value}]
    champion_version: int | None = None
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> records the router rejected
    status: str = "learning"  # "quarantined": it raised in learn_one and stopped; or "retired"
    role: str = "champion"  # in its spec's lifecycle (a spec with a promotion policy)


@dataclass
class ReplayResult:
    source: str
    range: dict[str, Any]
    order: str
    labels: str
    records: int = 0  # source records that gave the models features (events, or features records)
    read: int = 0  # records read from the source
    elapsed_s: float = 0.0
    models: dict[str, ModelResult] = field(default_factory=dict)
    throughput: list[list[float]] = field(default_factory=list)  # [elapsed s, records read]
    features: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)  # why the first invalid events were refused
    labels_before_range: int = 0
    skipped: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> records the router rejected
    first_ts: int | None = None
    last_ts: int | None = None
    # the lifecycle's decisions (streaming.learning.evidence.decision_record), each with ``records``: the
    # features records replayed when it was taken
    decisions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.read / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["events_per_s"] = self.rate
        return out


class Replay:
    """Runs candidate specs (and champions) over a stream of positioned records."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        *,
        views: Sequence[FeatureView] = (),
        labels: LabelMode = LabelMode(),
        sample_every: int | None = None,
        champions: Callable[[int], list[Champion]] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        keyring: Keyring | None = None,
        core: LearnerCore | None = None,
    ) -> None:
        # ``core``: a learner core of these specs that does more than learn (``rivulet export`` records
        # what its model sees: streaming.replay.export)
        self.core = LearnerCore(specs) if core is None else core
        # roles are fixed names: a replay's records are tagged by what they are, not by which topic
        # a bad record is rejected and counted as by the live learner (never fatal); its dead letters are
        # kept here (the newest few thousand), not written to Kafka
        self.dead_letters = MemorySink()
        self.router = Router(
            self.core,
            TopicRoles(FEATURES, LABELS, "predictions"),
            track=False,
            sink=self.dead_letters,
            keyring=keyring,  # the hand controls in the log are applied as the live learner did
        )
        self.stage = FeatureStage(views) if views else None
        self.labels = labels
        # a point of the metric curves every N features records; None: adaptive, about POINTS points
        # whatever the length (the interval doubles, and every other point is dropped, when they are twice
        # as many)
        self.adaptive = sample_every is None
        self.sample_every = 1 if sample_every is None else max(1, sample_every)
        self._champions = champions
        self.champions: dict[str, Champion] = {}
        self.clock = clock
        # a heap of (due, sequence, event_id, label, event ts, position of its record): revealed in the order
        # they are due (a queue revealed in arrival order let one record stamped far in the future hold
        # back every label behind it until the end)
        self._held: list[tuple[int, int, str, Any, int, Any]] = []
        self._held_seq = 0
        self.recorded_labels: dict[str, Any] = {}  # for simulated delays of labels from a labels topic
        self.max_recorded_labels = 1_000_000  # bounded: a flood of labels for events that never come
        self.curves: dict[str, list[list[Any]]] = {}
        self.drifts: dict[str, list[dict[str, Any]]] = {}
        self.core.on_drift = self._on_drift
        self.decisions: list[dict[str, Any]] = []
        self.core.on_decision = self._on_decision
        self.n = 0  # features records
        self.read = 0
        self.labels_before = 0
        self._early: list[Positioned] = []  # recorded labels read before the first features record
        self.skipped = 0  # records that are not what their role says (not JSON, no event time)
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.throughput: list[list[float]] = []
        self._start = clock()
        self._last_tick = self._start
        self.on_features: Callable[[dict[str, Any]], None] | None = None  # told of each before it is routed

    def rate(self) -> float:
        """Source records read per second so far."""
        elapsed = self.clock() - self._start
        return self.read / elapsed if elapsed > 0 else 0.0

    # ------------------------------------------------------------------ feeding

    def feed_all(self, pairs: Sequence[tuple[Positioned, str]]) -> None:
        """Records of the source in order (see :meth:`feed`); the events among them go through the feature
        pipeline as one batch first (what an event yields does not depend on the labels around it)."""
        events = [rec for rec, role in pairs if role == EVENTS]
        if not events:
            for rec, role in pairs:
                self.feed(rec, role)
            return
        if self.stage is None:
            raise ValueError("a replay of events needs the feature views")
        vectors = iter(self.stage.batch(events))
        for rec, role in pairs:
            self.feed(rec, role, next(vectors) if role == EVENTS else None)

    def feed(self, rec: Positioned, role: str, vectors: Sequence[Any] | None = None) -> None:
        """One record of the source: an ``events``, ``features`` or ``labels`` record (``vectors``: an
        event's features records, when :meth:`feed_all` made them)."""
        self.read += 1
        value = rec.value
        if role == FEATURES:
            if is_control(value):  # a hand control of the lifecycle, applied where the live learner did
                self.router.control(value, (rec.topic, rec.partition, rec.offset), raw=rec.raw, key=rec.key)
            else:
                self._features(rec, (value,))
        elif role == EVENTS:
            if vectors is None:
                if self.stage is None:
                    raise ValueError("a replay of events needs the feature views")
                vectors = self.stage(rec)
            self._features(rec, vectors)
        elif self.first_ts is None and self.labels.kind == "recorded":
            self._early.append(rec)  # decided when the range's first event time is known
        elif self.labels.kind == "recorded":
            if isinstance(value, dict):
                self.router.label(value, (rec.topic, rec.partition, rec.offset), raw=rec.raw, key=rec.key)
            else:
                self.skipped += 1
                self.router.undecodable(value, (rec.topic, rec.partition, rec.offset), raw=rec.raw)
        elif isinstance(value, dict) and value.get("event_id") is not None:
            # simulated delay: a recorded label only says what the label is; when it is revealed is simulated
            recorded = self.recorded_labels
            recorded[str(value["event_id"])[:256]] = value.get("label")
            if len(recorded) > self.max_recorded_labels:  # labels whose events never come: the oldest go
                del recorded[next(iter(recorded))]
        if not self.read & 0xFF:  # the clock every 256 records is often enough for the throughput curve
            now = self.clock()
            if now - self._last_tick >= 0.5:
                self._last_tick = now
                self.throughput.append([now - self._start, self.read])

    def _features(self, rec: Positioned, vectors: Sequence[Any]) -> None:
        """One source record's features records (one per view for an event): one step of the replay."""
        if not vectors:
            return  # late or duplicate in every view (counted by the feature stage)
        event: Any = None
        for d in vectors:
            head = d.get("event") if type(d) is dict else None
            if not (type(head) is dict and is_time(head.get("ts"))):
                self.skipped += 1  # not a features record: rejected by the router, as by the live learner
                position = (rec.topic, rec.partition, rec.offset)
                if type(d) is dict:
                    self.router.features(d, position, raw=rec.raw, key=rec.key)
                else:
                    self.router.undecodable(d, position, raw=rec.raw, key=rec.key)
                return
            if event is None:
                event = head
        ts: int = event["ts"]
        if self.first_ts is None:
            self.first_ts = ts
            self._add_champions(ts)
            self._early_labels(ts)
        last_ts = self.last_ts
        if last_ts is None or ts > last_ts:
            self.last_ts = ts
        mode = self.labels
        if mode.kind != "recorded":
            self._reveal(self.n if mode.kind == "records" else ts, ts)
            label = event.get("label")
            if label is None:
                label = self.recorded_labels.pop(str(event.get("event_id")), None)
            event_id = event.get("event_id")
            if label is not None and type(event_id) is str:  # else the router rejects the record
                vectors = [{**d, "event": {**d["event"], "label": None}} for d in vectors]
                due = self.n + mode.delay if mode.kind == "records" else ts + mode.delay
                self._held_seq += 1
                position = (rec.topic, rec.partition, rec.offset)
                heapq.heappush(self._held, (due, self._held_seq, event_id, label, ts, position))
        position = (rec.topic, rec.partition, rec.offset)
        features = self.router.features
        seen = self.on_features
        for data in vectors:
            if seen is not None:
                seen(data)
            features(data, position, raw=rec.raw, key=rec.key)
        self.n += 1
        if not self.n % self.sample_every:
            self.sample()

    def _early_labels(self, first_ts: int) -> None:
        """Labels read before the range's first event: those older than it are for events before the range
        (skipped and counted); the others are joined as they came (unknown if their event is not seen)."""
        for rec in self._early:
            value = rec.value
            label_ts = value.get("ts") if isinstance(value, dict) else None
            if not isinstance(label_ts, int) or label_ts < first_ts:
                self.labels_before += 1
            else:
                self.router.label(value, (rec.topic, rec.partition, rec.offset), raw=rec.raw, key=rec.key)
        self._early.clear()

    def _reveal(self, now: int | None, ts: int) -> None:
        held = self._held
        while held and (now is None or held[0][0] <= now):
            _, _, event_id, label, event_ts, position = heapq.heappop(held)
            self.router.join(event_id, label, max(ts, event_ts), position)

    def _add_champions(self, ts: int) -> None:
        if self._champions is None:
            return
        for ch in self._champions(ts):
            name = f"{ch.name}@v{ch.version}"
            # a baseline: the registry's version as it was, learning on; no lifecycle of its own
            spec = dataclasses.replace(ch.spec, name=name, promotion=None)
            state = self.core.new_state(spec, name)
            state.model = ch.state.model  # its learning so far; metrics and detectors start with the range
            self.core.specs[name] = spec
            self.core.models[name] = state
            self.champions[name] = ch

    # ------------------------------------------------------------------ results

    def _on_drift(self, d: DriftEvent) -> None:
        """A drift where it happened: after ``records`` features records of the replay."""
        drifts = self.drifts.setdefault(d.model, [])
        if len(drifts) < MAX_DRIFTS:
            drifts.append({"detector": d.detector, "ts": d.ts, "n_learned": d.n_learned, "records": self.n})

    def _on_decision(self, d: Decision) -> None:
        """A lifecycle decision where it was taken: after ``records`` features records of the replay."""
        if len(self.decisions) < MAX_DECISIONS:
            self.decisions.append({**decision_record(d), "records": self.n})

    def sample(self) -> None:
        for name, state in self.core.models.items():
            # a model that has learned nothing has no metric yet (River would say 0): a gap, not a point
            values = state.metric_values() if state.n_learned else {}
            self.curves.setdefault(name, []).append([self.n, self.last_ts, values])
        if self.adaptive and self.curves and len(next(iter(self.curves.values()))) >= 2 * POINTS:
            self.sample_every *= 2  # samples were taken at k, 2k, 3k...: keep those at 2k, 4k...
            for name, curve in self.curves.items():
                self.curves[name] = [p for p in curve if not p[0] % self.sample_every]

    def finish(self, source: str, range_: dict[str, Any], order: str) -> ReplayResult:
        if self.labels.kind != "recorded":
            self._reveal(None, self.last_ts or 0)  # the stream ended: every held label is known
        self.sample()
        elapsed = self.clock() - self._start
        self.throughput.append([elapsed, self.read])
        result = ReplayResult(
            source=source,
            range=range_,
            order=order,
            labels=self.labels.describe(),
            records=self.n,
            read=self.read,
            elapsed_s=elapsed,
            throughput=self.throughput,
            features=dict(self.stage.counts) if self.stage else {},
            rejected=list(self.stage.rejected) if self.stage else [],
            labels_before_range=self.labels_before,
            skipped=self.skipped,
            dead_letters=dict(self.dead_letters.counts),
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            decisions=list(self.decisions),
        )
        for name, state in self.core.models.items():
            ch = self.champions.get(name)
            result.models[name] = ModelResult(
                name=name,
                spec=ch.name if ch else state.spec,
                view=self.core.specs[state.spec].view,
                metrics=state.metric_values(),
                counters=dict(state.counters),
                drifts=self.drifts.get(name, []),
                curve=_dedup(self.curves.get(name, [])),
                champion_version=ch.version if ch else None,
                rejected=dict(state.rejected),
                status=state.status,
                role=state.role,
            )
        return result

    def run(self, records: Iterable[tuple[Positioned, str]]) -> None:
        with fewer_collections():  # the merge buffers records: see streaming.replay.collect
            for chunk in chunks(records, None):
                self.feed_all(chunk)


BATCH = 256  # events a replay applies as one batch of the feature pipeline
MAX_CHUNK = 4 * BATCH  # records (labels among them) read ahead at most


def chunks(
    records: Iterable[tuple[Positioned, str]], limit: int | None
) -> Iterator[list[tuple[Positioned, str]]]:
    """The records in runs of at most :data:`BATCH` records that are not labels (and :data:`MAX_CHUNK` in
    all), to :meth:`Replay.feed_all`; with ``limit``, up to that many records that are not labels."""
    it = iter(records)
    taken = 0
    while limit is None or taken < limit:
        room = BATCH if limit is None else min(BATCH, limit - taken)
        chunk: list[tuple[Positioned, str]] = []
        n = 0
        for pair in it:
            chunk.append(pair)
            n += pair[1] != LABELS
            if n >= room or len(chunk) >= MAX_CHUNK:
                break
        if not chunk:
            return
        taken += n
        yield chunk


def _dedup(curve: list[list[Any]]) -> list[list[Any]]:
    """Drop a final sample taken at the same record count as the one before it."""
    if len(curve) >= 2 and curve[-1][0] == curve[-2][0]:
        return [*curve[:-2], curve[-1]]
    return curve
