"""The online feature store and the feature state store: small async interfaces and in-memory versions.

- :class:`OnlineStore` holds each entity's latest vector per view, with the event time it reflects.
  Writes are batched and idempotent by event time (an older vector never overwrites a newer one); reads
  fetch many entities in one round trip; vectors expire after the view's TTL.
- :class:`StateStore` holds the feature engine's per-entity state together with the source position of
  the last event applied, committed per entity atomically with the entity's vector. This is what makes
  the feature worker's effects idempotent (see ``streaming/runtime/feature_worker.py``).

The Redis implementation is in :mod:`features.redis_store`; the in-memory one below serves the embedded
runtime and tests, and the same test suite runs against both.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from features.engine import EntityState

__all__ = [
    "FeatureRow",
    "Loaded",
    "MemoryStore",
    "OnlineStore",
    "StateStore",
    "StateUpdate",
    "Unreadable",
    "decode_state",
]


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """An entity's vector in a view, as of event time ``ts``."""

    view: str
    entity: str
    values: dict[str, Any]
    ts: int
    ttl_s: int | None = None


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """New state for an entity, and the vector to publish with it (written only if not older). ``reset``:
    the stored state was corrupt and this one starts again, so the vector replaces the stored one whatever
    its event time. ``payload`` and ``position``, when given, are the state's bytes and position as of the
    update: the feature worker commits a batch while the next one is applied to the same state objects."""

    entity: str
    state: EntityState
    row: FeatureRow
    reset: bool = False
    payload: bytes | None = None  # state.to_json(), when the pipeline has it already
    position: dict[str, Any] | None = None  # state.position as of payload (None: the state's own)

    def state_json(self) -> bytes:
        return self.payload if self.payload is not None else self.state.to_json()

    @property
    def at(self) -> dict[str, Any] | None:
        """The source position this update commits."""
        return self.position if self.position is not None else self.state.position


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stored state that does not decode (the pipeline resets the entity: see features.pipeline)."""

    problem: str


Loaded = EntityState | Unreadable


def decode_state(raw: bytes | str) -> Loaded:
    """A stored state, or :class:`Unreadable` with why: never raises on bad bytes.

    >>> decode_state(b'{"w": 5')
    Unreadable(problem='does not decode: JSONDecodeError')
    """
    try:
        return EntityState.from_json(raw)
    except Exception as exc:  # any malformation of stored bytes: orjson, KeyError, TypeError...
        return Unreadable(f"does not decode: {type(exc).__name__}")


class OnlineStore(ABC):
    @abstractmethod
    async def write(self, rows: Sequence[FeatureRow]) -> int:
        """Write vectors; a row older than the stored one is skipped. Returns how many were written."""

    @abstractmethod
    async def read(self, view: str, entities: Sequence[str]) -> list[FeatureRow | None]:
        """The stored vector of each entity (None if absent or expired), in one round trip."""

    async def read_expiring(
        self, view: str, entities: Sequence[str]
    ) -> list[tuple[FeatureRow | None, float | None]]:
        """As :meth:`read`, each vector with the seconds it has left before it expires (None: no expiry
        known), for a cache that must not keep it longer (:class:`serving.near_cache.NearCache`)."""
        return [(row, None) for row in await self.read(view, entities)]

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class StateStore(ABC):
    @abstractmethod
    async def load(self, view: str, entities: Sequence[str]) -> dict[str, Loaded]:
        """The stored state of each entity that has one, in one round trip; one that cannot be read is
        :class:`Unreadable` (never an exception: one entity's bad bytes must not fail a batch)."""

    @abstractmethod
    async def commit(self, view: str, updates: Sequence[StateUpdate]) -> int:
        """Store each entity's state and its vector; atomic per entity (not across entities). A state whose
        stored position is further along the same topic-partition is kept (the update is dropped). Returns
        how many updates were dropped so (a zombie writer's, or a stored position that was tampered with:
        worth a count and a log line, since that entity no longer changes)."""


class MemoryStore(OnlineStore, StateStore):
    """Both stores in process memory. ``clock`` (seconds) decides expiry."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._rows: dict[tuple[str, str], tuple[FeatureRow, float | None]] = {}
        self._states: dict[tuple[str, str], bytes] = {}

    def _put(self, row: FeatureRow) -> bool:
        key = (row.view, row.entity)
        current = self._get(key)
        if current is not None and current.ts > row.ts:
            return False
        expires = self._clock() + row.ttl_s if row.ttl_s else None
        self._rows[key] = (FeatureRow(row.view, row.entity, dict(row.values), row.ts, row.ttl_s), expires)
        return True

    def _get(self, key: tuple[str, str]) -> FeatureRow | None:
        found = self._rows.get(key)
        if found is None:
            return None
        row, expires = found
        if expires is not None and expires <= self._clock():
            del self._rows[key]
            return None
        return row

    async def write(self, rows: Sequence[FeatureRow]) -> int:
        return sum(self._put(r) for r in rows)

    async def read(self, view: str, entities: Sequence[str]) -> list[FeatureRow | None]:
        return [self._get((view, e)) for e in entities]

    async def load(self, view: str, entities: Sequence[str]) -> dict[str, Loaded]:
        return {e: decode_state(raw) for e in entities if (raw := self._states.get((view, e)))}

    def put_raw(self, view: str, entity: str, raw: bytes) -> None:
        """Store bytes as an entity's state as they are (for tests of corrupt states)."""
        self._states[(view, entity)] = raw

    async def commit(self, view: str, updates: Sequence[StateUpdate]) -> int:
        refused = 0
        for u in updates:
            stored = self._states.get((view, u.entity))
            # a reset replaces a state found unusable, its position included (one process: no zombies)
            if stored is not None and not u.reset and _behind(u.at, decode_state(stored)):
                refused += 1
                continue  # a stale writer must not roll the entity back
            self._states[(view, u.entity)] = u.state_json()  # serialised, as Redis would
            if u.reset:
                self._rows.pop((view, u.entity), None)
            self._put(u.row)
        return refused


def _behind(a: dict[str, Any] | None, stored: Loaded) -> bool:
    if isinstance(stored, Unreadable):
        return False
    b = stored.position
    try:
        return a is not None and b is not None and (a["t"], a["p"]) == (b["t"], b["p"]) and a["o"] < b["o"]
    except (TypeError, KeyError):  # a stored position that is not one: nothing to protect
        return False
