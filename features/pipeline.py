"""Applying a batch of raw records to feature views: the part every adapter shares.

For each record, in order: decode and validate it (a bad one becomes a :class:`DeadLetter` with the
original bytes, the error and its position), then for each view compute its vector with the engine.
Effects are idempotent: each entity's state carries the source position (partition, offset) of the last
event applied to it, and is committed with the entity's vector, so a redelivered record is recognised
and skipped; an event whose ``event_id`` the state still holds is skipped too.

The adapter publishes the :class:`FeatureRecord` s and dead letters, *then* calls :meth:`BatchResult.commit`.
If it dies in between, the redelivered records are applied again to the same committed state and yield
the same records again: consumers see at-least-once delivery of identical records, never a state that
counted an event twice or missed one.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from features.definitions import FeatureView
from features.engine import EntityState, FeatureEngine, Vector
from features.errors import InvalidEvent, LateEvent
from features.events import Event
from features.store import FeatureRow, StateStore, StateUpdate

__all__ = ["BatchResult", "DeadLetter", "FeaturePipeline", "FeatureRecord", "RawRecord"]


@dataclass(frozen=True, slots=True)
class RawRecord:
    value: bytes | None
    topic: str
    partition: int
    offset: int
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class FeatureRecord:
    """What goes on the features topic: the event and its point-in-time vector in one view."""

    view: str
    entity: str
    event: Event
    features: Vector

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "view": self.view,
                "entity": self.entity,
                "event": self.event.to_dict(),
                "features": self.features,
            }
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be applied, with why and where it came from; the original bytes are kept."""

    reason: str  # "invalid" | "late"
    error: str
    record: RawRecord
    view: str | None = None

    def to_json(self) -> bytes:
        value = self.record.value
        out: dict[str, Any] = {
            "reason": self.reason,
            "error": self.error,
            "topic": self.record.topic,
            "partition": self.record.partition,
            "offset": self.record.offset,
            "value_b64": base64.b64encode(value).decode() if value is not None else None,
        }
        if self.record.key is not None:
            out["key_b64"] = base64.b64encode(self.record.key).decode()
        if self.view is not None:
            out["view"] = self.view
        return orjson.dumps(out)


@dataclass
class BatchResult:
    records: list[FeatureRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    skipped: int = 0  # redelivered records recognised and not applied again
    missing_key: int = 0  # events without the field a re-keyed view is keyed by
    _updates: dict[str, dict[str, StateUpdate]] = field(default_factory=dict)

    @property
    def rows(self) -> list[FeatureRow]:
        return [u.row for per_view in self._updates.values() for u in per_view.values()]

    async def commit(self, store: StateStore) -> None:
        """Store every touched entity's state and vector (call after publishing the records)."""
        for view, updates in self._updates.items():
            await store.commit(view, list(updates.values()))


class FeaturePipeline:
    """Runs feature views over batches of raw records, with per-entity state from a :class:`StateStore`."""

    def __init__(
        self,
        views: Sequence[FeatureView],
        store: StateStore,
        *,
        report_invalid: bool = True,
        cache_entities: int = 0,
    ) -> None:
        self.views = list(views)
        self.engines = [FeatureEngine(v) for v in self.views]
        self.store = store
        self.report_invalid = report_invalid  # False where another pipeline sees the same records
        # States of recently seen entities, kept between batches so they need not be read back from the
        # store. Only valid while this process owns the entities' partitions: call invalidate() on any
        # rebalance and after any failed batch. 0 disables it.
        self.cache_entities = cache_entities
        self._cache: dict[tuple[str, str], EntityState] = {}

    def invalidate(self) -> None:
        """Forget cached states (after a rebalance or a failure): the store is the truth again."""
        self._cache.clear()

    async def _states(self, view: str, entities: list[str]) -> dict[str, EntityState]:
        if not self.cache_entities:
            return await self.store.load(view, entities)
        cache = self._cache
        states = {e: s for e in entities if (s := cache.get((view, e))) is not None}
        missing = [e for e in entities if e not in states]
        if missing:
            states.update(await self.store.load(view, missing))
        return states

    def _remember(self, view: str, states: dict[str, EntityState]) -> None:
        if not self.cache_entities:
            return
        cache = self._cache
        for entity, state in states.items():
            cache.pop((view, entity), None)
            cache[(view, entity)] = state  # most recent last
        excess = len(cache) - self.cache_entities
        if excess > 0:
            for key in list(itertools.islice(cache, excess)):
                del cache[key]

    async def process(self, batch: Sequence[RawRecord]) -> BatchResult:
        result = BatchResult()
        parsed: list[tuple[RawRecord, Event]] = []
        for raw in batch:
            try:
                if raw.value is None:
                    raise InvalidEvent("", "empty record (no value)")
                parsed.append((raw, Event.from_json(raw.value)))
            except InvalidEvent as exc:
                if self.report_invalid:
                    result.dead_letters.append(DeadLetter("invalid", str(exc), raw))
        for engine in self.engines:
            await self._apply_view(engine, parsed, result)
        return result

    async def _apply_view(
        self, engine: FeatureEngine, parsed: list[tuple[RawRecord, Event]], result: BatchResult
    ) -> None:
        view = engine.view
        keyed = [(raw, event, engine.key(event)) for raw, event in parsed]
        entities = sorted({k for _, _, k in keyed if k is not None})
        states: dict[str, EntityState] = await self._states(view.name, entities)
        touched: dict[str, EntityState] = {}
        for raw, event, entity in keyed:
            if entity is None:
                result.missing_key += 1
                continue
            state = states.get(entity)
            if state is None:
                state = states[entity] = engine.new_state()
            pos = state.position
            if (
                pos is not None
                and pos["t"] == raw.topic
                and pos["p"] == raw.partition
                and raw.offset <= pos["o"]
            ):
                result.skipped += 1  # applied before a crash or rebalance: already in the stored state
                continue
            if engine.seen(state, event):
                result.skipped += 1
            else:
                try:
                    vector = engine.apply(state, event)
                except LateEvent as exc:
                    result.dead_letters.append(DeadLetter("late", str(exc), raw, view.name))
                else:
                    result.records.append(FeatureRecord(view.name, entity, event, vector))
            state.position = {"t": raw.topic, "p": raw.partition, "o": raw.offset}
            touched[entity] = state
        self._remember(view.name, touched)
        if touched:
            result._updates[view.name] = {
                entity: StateUpdate(
                    entity,
                    state,
                    FeatureRow(view.name, entity, engine.online(state), state.watermark or 0, view.ttl_s),
                )
                for entity, state in touched.items()
            }
