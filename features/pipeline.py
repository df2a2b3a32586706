"""Applying a batch of raw records to feature views: the part every adapter shares.

For each record, in order: decode and validate it (a bad one becomes a :class:`DeadLetter` with the
original bytes, the error and its position), then for each view compute its vector with the engine.
Effects are idempotent: each entity's state carries the source position (partition, offset) of the last
event applied to it, and is committed with the entity's vector, so a redelivered record is recognised
and skipped. A re-keyed view's records come through a repartition topic, where a crash of the forwarder
re-forwards records at new positions: their :attr:`RawRecord.source` (the position they were read at
before it) is kept per source partition in the state (``sources``, the highest offset applied), and a
record at or below it is skipped; one without a source is skipped when the state still holds its
``event_id`` (the last ``MAX_IDS``).

The adapter publishes the :class:`FeatureRecord` s and dead letters, *then* calls :meth:`BatchResult.commit`.
If it dies in between, the redelivered records are applied again to the same committed state and yield
the same records again: consumers see at-least-once delivery of identical records, never a state that
counted an event twice or missed one.

**One record never stops a batch.** Whatever goes wrong with one record becomes a :class:`DeadLetter`
(stage ``features``, the source position and the original bytes) and the batch goes on for every other
record and entity. Reason codes:

- ``invalid``: not an event (bad JSON, schema, a number outside the numeric domain); nothing applied;
- ``future``: its event time is more than the pipeline's ``max_ahead_ms`` ahead of its Kafka record's
  timestamp (the worker's: ``RIVULET_FEATURES_MAX_AHEAD_MS``, a day); nothing applied. Accepted, one
  event stamped 9999-12-31 would move its entity's watermark there and make every later event of that
  entity late, forever. (A producer that sets its records' timestamps can pass it: topics with
  ``message.timestamp.type=LogAppendTime`` close that);
- ``late``: older than its entity's watermark minus the view's allowed lateness; nothing applied;
- ``overflow``: would take an aggregate out of float64 (:mod:`features.engine`); nothing applied;
- ``corrupt_state``: the entity's stored state does not decode or does not fit the view (a ``null`` where
  a number must be, from an older version or tampering). The entity is reset: the record is not applied,
  the entity starts again from an empty state at this record's position (later records count from there)
  and its stored vector is replaced by the empty state's;
- ``too_large``: its feature record (the event and its vector) would be larger than the pipeline's
  ``max_record_bytes`` (the worker's: ``max_event_bytes``, what the features topic takes), or the entity's
  state would grow past ``max_state_bytes`` (the worker's: ``MAX_STATE_BYTES``); nothing applied. Without
  the second, a producer could grow one entity's state without bound (a lifetime distinct count of large
  strings, many large values at one time): past Redis's 512 MB per value, every commit would fail;
- ``error``: any other exception while processing the record (a feature function raising something that
  is not an arithmetic or lookup error, say); nothing applied (the engine changes a state only after
  everything that can fail has run).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from features.definitions import FeatureView
from features.engine import EntityState, FeatureEngine, Vector
from features.errors import AggregateOverflow, CorruptState, InvalidEvent, LateEvent, RecordTooLarge
from features.events import Event
from features.records import REASONS, STAGE, DeadLetter, FeatureRecord, RawRecord, describe
from features.state import MAX_SOURCES, source_key
from features.store import FeatureRow, Loaded, StateStore, StateUpdate, Unreadable

__all__ = ["REASONS", "STAGE", "BatchResult", "DeadLetter", "FeaturePipeline", "FeatureRecord", "RawRecord"]


@dataclass
class _ViewBatch:
    """One view's part of a batch while it is applied: its records, its entities' states, and what each
    record came to (``outcomes``, by index: the batch's order is kept whatever order entities run in)."""

    engine: FeatureEngine
    ttl: int | None  # the view's, parsed from its duration once a batch
    parsed: list[tuple[RawRecord, Event]]
    states: dict[str, EntityState]
    corrupt: dict[str, str]
    result: BatchResult
    outcomes: list[FeatureRecord | DeadLetter | None]
    touched: dict[str, EntityState] = field(default_factory=dict)
    reset: set[str] = field(default_factory=set)
    updates: dict[str, StateUpdate] = field(default_factory=dict)


# the feature worker's bound on one entity's serialised state (Redis refuses a value over 512 MB)
MAX_STATE_BYTES = 64 * 1024 * 1024
# the feature worker's bound on the states it keeps in memory between batches (serialised bytes)
MAX_CACHE_BYTES = 512 * 1024 * 1024


@dataclass
class BatchResult:
    records: list[FeatureRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    skipped: int = 0  # redelivered records recognised and not applied again
    missing_key: int = 0  # events without the field a re-keyed view is keyed by
    resets: int = 0  # entities whose corrupt stored state was reset
    gaps: int = 0  # offsets the adapter saw skipped before the batch's records (see feature_worker)
    _updates: dict[str, dict[str, StateUpdate]] = field(default_factory=dict)
    # the (view, entity) states pinned for this batch, in which table, and who unpins them
    # (FeaturePipeline._pins: a table per epoch, the one current when the batch began)
    _pinned: list[tuple[str, str]] = field(default_factory=list)
    _release: Callable[[BatchResult], None] | None = None
    _pins: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    _epoch: int = 0  # FeaturePipeline._epoch when the batch began

    @property
    def rows(self) -> list[FeatureRow]:
        return [u.row for per_view in self._updates.values() for u in per_view.values()]

    async def commit(self, store: StateStore) -> int:
        """Store every touched entity's state and vector (call after publishing the records). Returns how
        many the store refused because its stored position was further along (see StateStore.commit)."""
        refused = 0
        try:
            for view, updates in self._updates.items():
                refused += await store.commit(view, list(updates.values())) or 0
        finally:  # committed, or the batch failed (its process goes down): the states need no pin
            if self._release is not None:
                self._release(self)
        return refused


class FeaturePipeline:
    """Runs feature views over batches of raw records, with per-entity state from a :class:`StateStore`."""

    def __init__(
        self,
        views: Sequence[FeatureView],
        store: StateStore,
        *,
        report_invalid: bool = True,
        cache_entities: int = 0,
        cache_bytes: int | None = None,
        max_record_bytes: int | None = None,
        max_state_bytes: int | None = None,
        max_ahead_ms: int | None = None,
        native: bool | None = None,
    ) -> None:
        self.views = list(views)
        # the largest feature record (serialised, with its key: the entity) an event may make; one over it
        # is dead-lettered "too_large" and not applied. None: no limit (in-process runs)
        self.max_record_bytes = max_record_bytes
        # the largest serialised state an entity may reach; an event that could take it further is
        # dead-lettered "too_large" and not applied. None: no limit
        self.max_state_bytes = max_state_bytes
        # how far an event's time may be ahead of its record's timestamp (None: any); see "future" above
        self.max_ahead_ms = max_ahead_ms
        # the in-order path (FeatureEngine's native: None, compiled where built; False, generated Python)
        self.engines = [FeatureEngine(v, native=native) for v in self.views]
        self.store = store
        self.report_invalid = report_invalid  # False where another pipeline sees the same records
        # States of recently seen entities, kept between batches so they need not be read back from the
        # store. Only valid while this process owns the entities' partitions: call invalidate() on any
        # rebalance and after any failed batch. 0 disables it.
        self.cache_entities = cache_entities
        # and at most this many bytes of them (serialised; None: no bound): large states (up to
        # max_state_bytes each) must not fill the worker's memory
        self.cache_bytes = cache_bytes
        self._cache: dict[tuple[str, str], EntityState] = {}
        self._sizes: dict[tuple[str, str], int] = {}  # of each cached state when it was cached
        self._cached_bytes = 0
        # The states a processed batch touched, until its commit is done (_unpin): the next batch may be
        # applied before then, and must not read such an entity's state back from the store (the stored
        # one may still be from before the batch, if the cache dropped the entity meanwhile). [state, how
        # many batches not yet committed touched it]. One table per epoch (invalidate): the batches of
        # an epoch pin into, and read from, the table that was current when they began.
        self._pins: dict[tuple[str, str], list[Any]] = {}
        self._epoch = 0  # invalidations so far

    def invalidate(self) -> None:
        """Forget cached and pinned states (after a rebalance or a failure) and begin a new epoch: the
        store is the truth again for the batches that begin from now on.

        A batch that began before (its states read before the rebalance) ends as it began: it reads the
        pins of its own epoch and leaves nothing in the cache or the pins of the new one. Between two
        rebalances another worker may own the entities and move them on in the store; a state kept from
        before (cached by a batch that ended after the rebalance, or pinned by a commit still under way)
        and applied to the records read after it missed that worker's events, and its commit, further
        along, overwrote them (attack-13b: a re-keyed view's count 29 events short). The records of such
        a batch are read again from the committed offsets, after the store has its commit: a batch of
        the new epoch that reads a state from the store before that commit lands applies them again."""
        self._cache.clear()
        self._sizes.clear()
        self._cached_bytes = 0
        self._pins = {}
        self._epoch += 1

    def _unpin(self, result: BatchResult) -> None:
        """``result``'s commit is done (or failed: its process goes down): its states need no pin."""
        pins = result._pins
        for key in result._pinned:
            pin = pins.get(key)
            if pin is not None:
                pin[1] -= 1
                if pin[1] <= 0:
                    del pins[key]
        result._pinned = []

    async def _states(
        self, view: str, entities: list[str], result: BatchResult
    ) -> tuple[dict[str, EntityState], dict[str, Loaded]]:
        """Pinned and cached states (checked when they were loaded) and states loaded from the store now;
        the pins of ``result``'s epoch, and the cache only if that epoch is still the current one."""
        pins = result._pins
        states = {e: pin[0] for e in entities if (pin := pins.get((view, e))) is not None}
        if not self.cache_entities or result._epoch != self._epoch:
            missing = [e for e in entities if e not in states]
            return states, (await self.store.load(view, missing) if missing else {})
        cache = self._cache
        for e in entities:
            if e not in states and (s := cache.get((view, e))) is not None:
                states[e] = s
        missing = [e for e in entities if e not in states]
        return states, (await self.store.load(view, missing) if missing else {})

    def _remember(self, view: str, states: dict[str, EntityState], result: BatchResult) -> None:
        if not self.cache_entities or result._epoch != self._epoch:  # not from before an invalidate()
            return
        cache = self._cache
        sizes = self._sizes
        for entity, state in states.items():
            key = (view, entity)
            if cache.pop(key, None) is not None:
                self._cached_bytes -= sizes.pop(key, 0)
            cache[key] = state  # most recent last
            sizes[key] = state.size
            self._cached_bytes += state.size
        budget = self.cache_bytes
        excess = len(cache) - self.cache_entities
        if excess > 0 or (budget is not None and self._cached_bytes > budget):
            for key in list(itertools.islice(cache, max(excess, 0))):
                del cache[key]
                self._cached_bytes -= sizes.pop(key, 0)
            while budget is not None and self._cached_bytes > budget and cache:
                key = next(iter(cache))  # the least recently used
                del cache[key]
                self._cached_bytes -= sizes.pop(key, 0)

    async def process(
        self, batch: Sequence[RawRecord], events: Sequence[Event | None] | None = None
    ) -> BatchResult:
        """Apply a batch. ``events``: the batch's events where they are parsed already (a replay's rows of a
        file: validated when they were mapped), None where the record's value is to be parsed."""
        result = BatchResult(_release=self._unpin, _pins=self._pins, _epoch=self._epoch)
        parsed: list[tuple[RawRecord, Event]] = []
        for i, raw in enumerate(batch):
            try:
                if raw.value is None:
                    raise InvalidEvent("", "empty record (no value)")
                given = events[i] if events is not None else None
                event = given if given is not None else Event.from_json(raw.value)
                ahead = self.max_ahead_ms
                if ahead is not None and raw.timestamp_ms is not None and event.ts > raw.timestamp_ms + ahead:
                    if self.report_invalid:
                        error = (
                            f"future: event time {event.ts} is {event.ts - raw.timestamp_ms} ms ahead of its "
                            f"record's timestamp {raw.timestamp_ms} (at most {ahead})"
                        )
                        result.dead_letters.append(DeadLetter("future", error, raw))
                    continue
                parsed.append((raw, event))
            except InvalidEvent as exc:
                if self.report_invalid:
                    result.dead_letters.append(DeadLetter("invalid", str(exc), raw))
            except Exception as exc:  # anything else about one record is that record's problem
                if self.report_invalid:
                    result.dead_letters.append(DeadLetter("error", describe(exc), raw))
        for engine in self.engines:
            await self._apply_view(engine, parsed, result)
        return result

    async def _apply_view(
        self, engine: FeatureEngine, parsed: list[tuple[RawRecord, Event]], result: BatchResult
    ) -> None:
        view = engine.view
        # what each record came to, by index into parsed: a key's dead letter too keeps the batch's order
        outcomes: list[FeatureRecord | DeadLetter | None] = [None] * len(parsed)
        groups: dict[str, list[int]] = {}  # an entity's events (indices into parsed), in their order
        for i, (raw, event) in enumerate(parsed):
            try:
                entity = engine.key(event)
            except InvalidEvent as exc:  # e.g. a key field's value too long to be an entity
                outcomes[i] = DeadLetter("invalid", str(exc), raw, view.name)
                continue
            except Exception as exc:
                outcomes[i] = DeadLetter("error", describe(exc), raw, view.name)
                continue
            if entity is None:
                result.missing_key += 1
            else:
                groups.setdefault(entity, []).append(i)
        cached, loaded = await self._states(view.name, sorted(groups), result)
        states, corrupt = self._usable(engine, loaded)
        states.update(cached)
        batch = _ViewBatch(engine, view.ttl_s, parsed, states, corrupt, result, outcomes)
        # Entity by entity, each one's events in their order (entities are independent): its state stays
        # in the CPU's cache for its events and for serialising it (1,000 busy entities: about 20% of the
        # batch's time, BENCHMARKS.md). The records and dead letters keep the batch's order.
        for entity, indices in groups.items():
            state = self._apply_entity(batch, entity, indices)
            if state is not None:
                self._finish(batch, entity, state)
        for outcome in batch.outcomes:
            if isinstance(outcome, FeatureRecord):
                result.records.append(outcome)
            elif isinstance(outcome, DeadLetter):
                result.dead_letters.append(outcome)
        self._remember(view.name, batch.touched, result)
        if batch.updates:
            result._updates[view.name] = batch.updates

    def _apply_entity(self, batch: _ViewBatch, entity: str, indices: list[int]) -> EntityState | None:
        """Apply an entity's events of the batch (indices into ``batch.parsed``); its state, or None if
        every one of them was applied before (redelivered)."""
        engine, view, result = batch.engine, batch.engine.view.name, batch.result
        touched: EntityState | None = None
        for i in indices:
            raw, event = batch.parsed[i]
            problem = batch.corrupt.pop(entity, None)
            if problem is not None:  # reset: this record is dead-lettered, the entity starts again after it
                state = batch.states[entity] = engine.new_state()
                batch.reset.add(entity)
                result.resets += 1
                error = str(CorruptState(view, entity, problem))
                batch.outcomes[i] = DeadLetter("corrupt_state", error, raw, view)
            else:
                found = batch.states.get(entity)
                state = found if found is not None else batch.states.setdefault(entity, engine.new_state())
                if _redelivered(state, raw):
                    result.skipped += 1  # applied before a crash or rebalance: already in the stored state
                    continue
                batch.outcomes[i] = self._apply_one(engine, state, raw, event, entity, result)
            state.position = {"t": raw.topic, "p": raw.partition, "o": raw.offset}
            if raw.source is not None:
                _remember_source(state, raw.source)
            touched = batch.touched[entity] = state
        return touched

    def _finish(self, batch: _ViewBatch, entity: str, state: EntityState) -> None:
        """An entity the batch touched: its state serialised once (the store writes these bytes, and the
        size is now exact), its row read, and the state pinned until the batch is committed."""
        view, engine = batch.engine.view, batch.engine
        payload = state.to_json()
        state.size = len(payload)
        row = FeatureRow(view.name, entity, engine.online(state), state.watermark or 0, batch.ttl)
        position = dict(state.position) if state.position is not None else None
        batch.updates[entity] = StateUpdate(entity, state, row, entity in batch.reset, payload, position)
        pin = batch.result._pins.setdefault((view.name, entity), [state, 0])
        pin[0] = state
        pin[1] += 1
        batch.result._pinned.append((view.name, entity))

    def _apply_one(
        self,
        engine: FeatureEngine,
        state: EntityState,
        raw: RawRecord,
        event: Event,
        entity: str,
        out: BatchResult,
    ) -> FeatureRecord | DeadLetter | None:
        """Apply one event to its entity's state: its record, or its dead letter (the state unchanged), or
        None (a duplicate of a re-keyed view)."""
        limit, state_limit = self.max_record_bytes, self.max_state_bytes
        view = engine.view.name
        payload: list[bytes] = []
        growth = len(raw.value or b"") * engine.copies  # what applying the event can add to the state

        def check(vector: Vector) -> None:
            """Serialise the record before the state changes: one that cannot be written, or is too large
            for the features topic, is refused with nothing applied."""
            data = FeatureRecord.encode(view, entity, event, vector)
            size = len(data) + len(entity.encode("utf-8", "surrogatepass"))
            if limit is not None and size > limit:
                raise RecordTooLarge(view, entity, size, limit)
            payload.append(data)

        try:
            if engine.seen(state, event):
                out.skipped += 1
                return None
            if state_limit is not None and state.size + growth > state_limit:
                state.size = len(state.to_json())  # the bound is loose: measure before refusing
                if state.size + growth > state_limit:
                    raise RecordTooLarge(view, entity, state.size + growth, state_limit, "state")
            vector = engine.apply(state, event, check)
            state.size += growth
        except LateEvent as exc:
            return DeadLetter("late", str(exc), raw, view)
        except AggregateOverflow as exc:
            return DeadLetter("overflow", str(exc), raw, view)
        except RecordTooLarge as exc:
            return DeadLetter("too_large", str(exc), raw, view)
        except Exception as exc:  # the engine changed nothing: see its apply()
            return DeadLetter("error", describe(exc), raw, view)
        return FeatureRecord(view, entity, event, vector, raw, payload[0])

    def _usable(
        self, engine: FeatureEngine, loaded: dict[str, Loaded]
    ) -> tuple[dict[str, EntityState], dict[str, str]]:
        """Split loaded states into usable ones and the problems of corrupt ones."""
        states: dict[str, EntityState] = {}
        corrupt: dict[str, str] = {}
        for entity, state in loaded.items():
            if isinstance(state, Unreadable):
                corrupt[entity] = state.problem
                continue
            try:
                problem = engine.check_state(state)
            except Exception as exc:
                problem = f"cannot be checked: {type(exc).__name__}"
            if problem is None:
                states[entity] = state
            else:
                corrupt[entity] = problem
        return states, corrupt


def _redelivered(state: EntityState, raw: RawRecord) -> bool:
    """At or before the entity's stored position, or (a re-keyed view's record) at or before the highest
    offset the entity applied of its source partition: a duplicate re-forwarded into the repartition topic
    at a new position."""
    pos = state.position
    if pos is not None and pos["t"] == raw.topic and pos["p"] == raw.partition and raw.offset <= pos["o"]:
        return True
    src = raw.source
    if src is None or not state.sources:
        return False
    done = state.sources.get(source_key(src[0], src[1]))
    return done is not None and src[2] <= done


def _remember_source(state: EntityState, src: tuple[str, int, int]) -> None:
    """Record ``src`` as the highest offset applied of its source partition (the oldest entry makes room
    when MAX_SOURCES are kept: records of that source fall back to the ``event_id`` ring)."""
    sources = state.sources
    key = source_key(src[0], src[1])
    if key not in sources and len(sources) >= MAX_SOURCES:
        del sources[next(iter(sources))]
    if src[2] > sources.get(key, -1):
        sources[key] = src[2]
