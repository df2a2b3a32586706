"""Brute-force feature recomputation from raw events: the independent oracle for the feature engine.

It keeps every event of every entity and recomputes each aggregation from scratch with plain Python
(statistics, math), using the window bounds as README/docstrings define them, written out again here.

The overflow rule (features.engine) is written out again too, in exact arithmetic (fractions): an event
whose field would take the entity's lifetime sum of ``|x|`` past ``SUM_LIMIT`` (for a field a sum or mean
aggregates), or four times its sum of ``x*x`` (var, std), is refused and listed in ``overflow``.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from features.aggregations import Aggregation
from features.definitions import FeatureView
from features.events import Event
from features.numeric import INT64_MAX, INT64_MIN, SUM_LIMIT
from features.windows import duration_ms


def _lower(agg: Aggregation, t: int) -> int:
    w = agg.window
    if w.kind == "sliding":
        return t - w.size_ms + 1
    if w.kind == "tumbling":
        return t - t % w.size_ms
    if w.kind == "hopping":  # by enumeration: the oldest window [k * step, k * step + size) holding t
        k = t // w.step_ms
        while (k - 1) * w.step_ms + w.size_ms > t:
            k -= 1
        return k * w.step_ms
    return -(10**18)


def _numeric(values: list[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and v is not None]


def _aggregate(agg: Aggregation, items: list[tuple[int, int, dict[str, Any]]], t: int) -> Any:
    kind = agg.kind
    if kind == "since_last_ms":
        return t - max(ts for ts, _, _ in items) if items else None
    if kind == "count" and agg.field is None:
        return len(items)
    raw = [own.get(agg.field) for _, _, own in items]  # type: ignore[arg-type]
    present = [v for v in raw if v is not None]
    nums = _numeric(present)
    if kind == "count":
        return len(present)
    if kind == "sum":
        return math.fsum(nums)
    if kind == "mean":
        return statistics.fmean(nums) if nums else None
    if kind == "min":
        return min(nums) if nums else None
    if kind == "max":
        return max(nums) if nums else None
    if kind == "var":
        return statistics.variance(nums) if len(nums) > 1 else None
    if kind == "std":
        return statistics.stdev(nums) if len(nums) > 1 else None
    if kind == "last":
        best = [(ts, seq, own[agg.field]) for ts, seq, own in items if own.get(agg.field) is not None]  # type: ignore[index]
        return max(best, key=lambda b: (b[0], b[1]))[2] if best else None
    if kind == "distinct":
        return len(set(present))
    raise AssertionError(kind)


def _safe(fn: Any, values: dict[str, Any]) -> Any:
    """A derived field or expression: null if it raises or its value is not a JSON scalar in the domain."""
    try:
        out = fn(values)
    except (ArithmeticError, TypeError, ValueError, KeyError, AttributeError):
        return None
    if out is None or isinstance(out, str | bool):
        return out
    if isinstance(out, int):
        return out if INT64_MIN <= out <= INT64_MAX else None
    if isinstance(out, float):
        return out if not (math.isnan(out) or math.isinf(out)) else None
    return None


class Oracle:
    """Feed events in processing order; read expected per-event vectors, late events and online aggregates."""

    def __init__(self, view: FeatureView) -> None:
        self.view = view
        self.lateness = duration_ms(view.allowed_lateness)
        self.applied: dict[str, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
        self.vectors: dict[str, dict[str, Any]] = {}
        self.entity_of: dict[str, str] = {}
        self.late: set[str] = set()
        self.overflow: set[str] = set()
        self._magnitudes: dict[tuple[str, str], list[Fraction]] = defaultdict(
            lambda: [Fraction(0), Fraction(0)]
        )
        self._by_sum = {a.field for a in view.aggregations if a.kind in ("sum", "mean") and a.field}
        self._by_square = {a.field for a in view.aggregations if a.kind in ("var", "std") and a.field}

    def key(self, event: Event) -> str | None:
        if self.view.entity == "entity":
            return event.entity
        v = event.fields.get(self.view.entity)
        return None if v is None else str(v)

    def feed(self, events: Iterable[Event]) -> Oracle:
        for e in events:
            entity = self.key(e)
            if entity is None:
                continue
            applied = self.applied[entity]
            if applied and e.ts < max(ts for ts, _, _ in applied) - self.lateness:
                self.late.add(e.event_id)
                continue
            own = dict(e.fields)
            for d in self.view.derived:
                own[d.name] = _safe(d.fn, own)
            if self._overflows(entity, own):
                self.overflow.add(e.event_id)
                continue
            vector = self._vector(applied, e.ts, own)
            applied.append((e.ts, len(applied) + 1, own))
            self.vectors[e.event_id] = vector
            self.entity_of[e.event_id] = entity
        return self

    def _overflows(self, entity: str, own: dict[str, Any]) -> bool:
        """Exact: would this event take a lifetime magnitude past the limit? (Records it if not.)"""
        limit = Fraction(SUM_LIMIT)
        new = {}
        for fld in self._by_sum | self._by_square:
            v = own.get(fld)
            if not isinstance(v, int | float):
                continue
            a, q = self._magnitudes[(entity, fld)]
            a, q = a + abs(Fraction(v)), q + Fraction(v) ** 2
            if (fld in self._by_sum and a > limit) or (fld in self._by_square and 4 * q > limit):
                return True
            new[fld] = [a, q]
        for fld, m in new.items():
            self._magnitudes[(entity, fld)] = m
        return False

    def _aggregates(self, applied: list[tuple[int, int, dict[str, Any]]], t: int) -> dict[str, Any]:
        out = {}
        for agg in self.view.aggregations:
            lo = _lower(agg, t)
            out[agg.name] = _aggregate(agg, [i for i in applied if lo <= i[0] <= t], t)
        return out

    def _vector(
        self, applied: list[tuple[int, int, dict[str, Any]]], t: int, own: dict[str, Any]
    ) -> dict[str, Any]:
        vector = dict(own) if self.view.include_fields else {d.name: own[d.name] for d in self.view.derived}
        vector.update(self._aggregates(applied, t))
        for ex in self.view.expressions:
            vector[ex.name] = _safe(ex.fn, vector)
        return vector

    def online(self) -> dict[str, tuple[int, dict[str, Any]]]:
        """Each entity's aggregates as of its watermark, with the watermark."""
        out = {}
        for entity, applied in self.applied.items():
            if applied:
                wm = max(ts for ts, _, _ in applied)
                out[entity] = (wm, self._aggregates(applied, wm))
        return out


def same(a: Any, b: Any) -> bool:
    """Equal, with float tolerance (the engine sums incrementally, the oracle with fsum)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return bool(a == b)


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if not same(a.get(k), b.get(k))}


def stream(
    n: int,
    entities: int,
    seed: int,
    *,
    late_every: int = 0,
    shuffle_every: int = 0,
    t0: int = 1_704_067_200_000,
    step_ms: int = 7_000,
    grain_ms: int = 1,
) -> list[Event]:
    """A synthetic Agrawal-like stream: increasing event time with some events out of order (within the
    examples' 5-minute lateness) and, with ``late_every``, some far too late. Several events share a
    timestamp when ``grain_ms`` is coarse."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        ts = t0 + i * step_ms + rng.randrange(step_ms)
        if shuffle_every and i % shuffle_every == 3:
            ts -= rng.randrange(60_000, 240_000)  # out of order, within lateness
        if late_every and i % late_every == 5:
            ts -= 3_600_000  # an hour behind: late
        ts -= ts % grain_ms  # a coarse grain puts events on window boundaries
        events.append(
            Event(
                event_id=f"ev-{seed}-{i}",
                entity=f"c{rng.randrange(entities)}",
                ts=ts,
                fields={
                    "salary": round(rng.uniform(20_000, 150_000), 2),
                    "commission": rng.choice([0.0, round(rng.uniform(0, 75_000), 2)]),
                    "age": rng.randrange(20, 80),
                    "elevel": rng.randrange(5),
                    "car": rng.randrange(1, 21),
                    "zipcode": rng.randrange(9),
                    "hvalue": round(rng.uniform(50_000, 900_000), 2),
                    "hyears": rng.randrange(1, 31),
                    "loan": rng.choice([0.0, round(rng.uniform(0, 500_000), 2)]),
                },
                label=rng.random() < 0.3,
            )
        )
    return events
