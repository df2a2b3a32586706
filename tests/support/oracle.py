"""Brute-force feature recomputation from raw events: the independent oracle for the feature engine.

It keeps every event of every entity and recomputes each aggregation from scratch with plain Python
(statistics, math, sets), using the tile semantics of issue 13 written out again here (see
/work/notes/issue13-design.md and :mod:`features.windows`); it reads a window's ``kind``, ``size_ms``,
``step_ms`` and ``resolution_ms`` and nothing else of the engine's code:

- an event at time ``ts`` is in tile ``ts // R`` of a window of resolution ``R`` (``R``: the size of a
  tumbling window, the step of a hopping one, the declared or default resolution of a sliding one, and
  ``max(1, ceil(lateness / 60))`` for lifetime, from the VIEW's allowed lateness);
- the vector of event ``e`` at time ``t`` aggregates, per window, the events of its entity applied before
  ``e`` whose tile is in the window's tile range at ``t`` (:func:`tile_range`): so an out-of-order event
  counts the later events of its own tile, and never those of a later tile;
- ``since_last`` is ``max(0, t - the latest time among them)``; a distinct count is exact (a set of the
  values: ``1 == 1.0 == True``, ``"1"`` another value) and the engine's count, when more than
  :data:`DISTINCT_EXACT` values, is an estimate that :func:`same` takes within 10% of it;
- late: ``t < watermark - lateness`` (watermark: the latest time applied to the entity).

The overflow rule (features.engine) is written out again too, in exact arithmetic (fractions): an event
whose field would take the entity's lifetime sum of ``|x|`` past ``SUM_LIMIT`` (for a field a sum or mean
aggregates), or four times its sum of ``x*x`` (var, std), is refused and listed in ``overflow``.

>>> from features.aggregations import Count, SinceLast
>>> from features.definitions import FeatureView
>>> from features.windows import sliding
>>> view = FeatureView("v", aggregations=[Count(window=sliding("1m", resolution="10s")), SinceLast()])
>>> at = lambda i, ts: Event(event_id=f"e{i}", entity="u", ts=ts, fields={})
>>> o = Oracle(view).feed([at(1, 5_000), at(2, 69_999), at(3, 70_000), at(4, 69_500), at(5, 9_999)])
>>> [(o.vectors[f"e{i}"]["count_1m"], o.vectors[f"e{i}"]["since_last_ms"]) for i in (1, 2, 3, 4)], o.late
([(0, None), (0, 64999), (1, 1), (1, 0)], {'e5'})
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable
from fractions import Fraction
from typing import Any

from features.aggregations import Aggregation
from features.definitions import FeatureView
from features.events import Event
from features.numeric import INT64_MAX, INT64_MIN, SUM_LIMIT
from features.windows import Window, duration_ms
from tests.support.streams import stream

__all__ = ["DISTINCT_EXACT", "Oracle", "diff", "resolution", "same", "stream", "tile_range"]

DISTINCT_EXACT = 64  # the engine counts distinct values exactly up to this many, then estimates
DISTINCT_TOLERANCE = 0.10  # how far the engine's estimate may be from the exact count (relative)

Item = tuple[int, int, dict[str, Any]]  # (event time, sequence number in processing order, own values)


def resolution(window: Window, lateness_ms: int) -> int:
    """The window's tile size in ms (lifetime: from the view's lateness, about 60 tiles of it)."""
    if window.kind == "tumbling":
        return window.size_ms
    if window.kind == "hopping":
        return window.step_ms
    if window.kind == "lifetime":
        return max(1, -(-lateness_ms // 60))
    return window.resolution_ms


def tile_range(window: Window, r: int, t: int) -> tuple[int | None, int]:
    """The tiles (inclusive; None: no lower end) that count at reference time ``t``.

    >>> from features.windows import hopping, sliding, tumbling
    >>> tile_range(tumbling(10), 10, 25), tile_range(hopping(10, 3), 3, 20), tile_range(sliding(10, 2), 2, 9)
    ((2, 2), (4, 6), (0, 4))
    """
    kt = t // r
    if window.kind == "tumbling":
        return kt, kt
    if window.kind == "hopping":  # the oldest window [j*P, j*P + S) that holds t: the first j*P > t - S
        return (t - window.size_ms) // window.step_ms + 1, kt
    if window.kind == "sliding":
        return kt - window.size_ms // r + 1, kt
    return None, kt


def _numeric(values: list[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float)]  # booleans as 0/1; strings skipped


def _aggregate(agg: Aggregation, items: list[Item], t: int) -> Any:
    """``agg`` over ``items`` (sorted by time, then sequence) at reference time ``t``."""
    kind = agg.kind
    if kind == "since_last_ms":
        return max(0, t - items[-1][0]) if items else None
    if kind == "count" and agg.field is None:
        return len(items)
    fld = agg.field or ""
    present = [own[fld] for _, _, own in items if own.get(fld) is not None]
    nums = _numeric(present)
    if kind == "count":
        return len(present)
    if kind == "sum":
        return math.fsum(nums)
    if kind == "mean":
        return statistics.fmean(nums) if nums else None
    if kind in ("min", "max"):
        return (min if kind == "min" else max)(nums) if nums else None
    if kind == "var":
        return statistics.variance(nums) if len(nums) > 1 else None
    if kind == "std":
        return statistics.stdev(nums) if len(nums) > 1 else None
    if kind == "last":
        return present[-1] if present else None  # items are sorted by (time, sequence): the latest
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
        self.applied: dict[str, list[Item]] = defaultdict(list)  # by entity, sorted by (time, sequence)
        self.watermark: dict[str, int] = {}
        self.vectors: dict[str, dict[str, Any]] = {}
        self.entity_of: dict[str, str] = {}
        self.late: set[str] = set()
        self.overflow: set[str] = set()
        self.distinct = frozenset(a.name for a in view.aggregations if a.kind == "distinct")
        self._tiles = [(a, resolution(a.window, self.lateness)) for a in view.aggregations]
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
            wm = self.watermark.get(entity)
            if wm is not None and e.ts < wm - self.lateness:
                self.late.add(e.event_id)
                continue
            own = dict(e.fields)
            for d in self.view.derived:
                own[d.name] = _safe(d.fn, own)
            if self._overflows(entity, own):
                self.overflow.add(e.event_id)
                continue
            applied = self.applied[entity]
            self.vectors[e.event_id] = self._vector(applied, e.ts, own)
            self.entity_of[e.event_id] = entity
            bisect.insort(applied, (e.ts, len(self.entity_of), own), key=lambda i: (i[0], i[1]))
            self.watermark[entity] = e.ts if wm is None else max(wm, e.ts)
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

    def aggregates(self, applied: list[Item], t: int) -> dict[str, Any]:
        """Every aggregation at reference time ``t`` over ``applied`` (sorted by time, then sequence)."""
        out = {}
        for agg, r in self._tiles:
            lo, hi = tile_range(agg.window, r, t)
            start = 0 if lo is None else bisect.bisect_left(applied, lo * r, key=lambda i: i[0])
            end = bisect.bisect_left(applied, (hi + 1) * r, key=lambda i: i[0])
            out[agg.name] = _aggregate(agg, applied[start:end], t)
        return out

    def _vector(self, applied: list[Item], t: int, own: dict[str, Any]) -> dict[str, Any]:
        vector = dict(own) if self.view.include_fields else {d.name: own[d.name] for d in self.view.derived}
        vector.update(self.aggregates(applied, t))
        for ex in self.view.expressions:
            vector[ex.name] = _safe(ex.fn, vector)
        return vector

    def online(self) -> dict[str, tuple[int, dict[str, Any]]]:
        """Each entity's aggregates as of its watermark, with the watermark."""
        return {e: (wm, self.aggregates(self.applied[e], wm)) for e, wm in self.watermark.items()}

    def diff(self, got: dict[str, Any], expected: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """:func:`diff` with this view's distinct counts taken as estimates beyond ``DISTINCT_EXACT``."""
        return diff(got, expected, distinct=self.distinct)


def _same_value(a: Any, b: Any, estimate: bool) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b  # True is not 1 here: a Last of a boolean field must stay a boolean
    if isinstance(a, float | int) and isinstance(b, float | int):
        if estimate and isinstance(a, int) and isinstance(b, int) and b > DISTINCT_EXACT:
            return abs(a - b) <= DISTINCT_TOLERANCE * b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return bool(type(a) is type(b) and a == b)


def same(a: Any, b: Any, *, distinct: Collection[str] = ()) -> bool:
    """Equal, with float tolerance (the engine sums incrementally, the oracle with fsum); in two vectors,
    the features named in ``distinct`` may differ by 10% of ``b``'s (the oracle's exact count) when that is
    beyond ``DISTINCT_EXACT``.

    >>> same({"n": 100, "x": 0.1 + 0.2}, {"n": 109, "x": 0.3}, distinct={"n"}), same(1, True), same(64, 65)
    (True, False, False)
    """
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k], k in distinct) for k in a)
    return _same_value(a, b, False)


def diff(
    a: dict[str, Any], b: dict[str, Any], *, distinct: Collection[str] = ()
) -> dict[str, tuple[Any, Any]]:
    """The features where ``a`` and ``b`` (the oracle's) are not :func:`same`."""
    return {
        k: (a.get(k), b.get(k))
        for k in a.keys() | b.keys()
        if k not in a or k not in b or not _same_value(a[k], b[k], k in distinct)
    }
