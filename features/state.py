"""An entity's state in one view, and the checks a stored state passes before the engine uses it.

A state comes back from a store (Redis, or anything that kept its JSON): :func:`check_state` says why it
cannot be used, or None. It refuses a state that does not fit the view (a ``null`` where a number must be,
a missing summary, a wrong type) and one whose sums exceed the magnitude totals that keep every aggregate
finite (see :mod:`features.engine`); the adapters reset such a state (see :mod:`features.pipeline`).

>>> from features.aggregations import Sum
>>> from features.definitions import FeatureView
>>> layout = Layout.of(FeatureView("v", aggregations=[Sum("x")]))
>>> layout.inputs, layout.bounded
(['x'], {'x': (True, False)})
>>> state = EntityState(watermark=5, seq=1, buffer=[[5, 1, [2.0]]], settled={"x_sum_lifetime": [0.0]},
...                     total={"x_sum_lifetime": [2.0]}, bounds={"x": [2.0, 4.0]})
>>> check_state(layout, state) is None
True
>>> state.total["x_sum_lifetime"] = [1e300]
>>> check_state(layout, state)
"total.x_sum_lifetime: beyond the total magnitude of 'x'"
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from features.aggregations import Aggregation
from features.definitions import FeatureView
from features.events import MAX_TS_MS, MIN_TS_MS
from features.numeric import INT64_MAX, SUM_LIMIT
from features.summaries import MAX_COUNT, scalar

__all__ = ["EntityState", "Layout", "check_state"]


@dataclass(frozen=True)
class Layout:
    """What of a view shapes its entities' states: the buffered inputs (in this order), the lifetime
    aggregations (kept as summaries), and per bounded field (bounded by the sum of ``|x|``, by the sum of
    ``x*x``)."""

    inputs: list[str]
    lifetime: list[Aggregation]
    bounded: dict[str, tuple[bool, bool]]

    @property
    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.inputs)}

    @classmethod
    def of(cls, view: FeatureView) -> Layout:
        bounded: dict[str, tuple[bool, bool]] = {}
        for a in view.aggregations:
            if a.magnitude and a.field is not None:
                by_sum, by_square = bounded.get(a.field, (False, False))
                bounded[a.field] = (by_sum or a.magnitude == "sum", by_square or a.magnitude == "square")
        return cls(view.inputs, [a for a in view.aggregations if a.window.kind == "lifetime"], bounded)


# Rounding slack when a stored summary is compared with the magnitude totals that bound it (relative, and
# absolute for totals in float64's subnormal range, where a relative slack rounds away)
_SLACK = 1 + 2**-20
_TINY = 1e-300


@dataclass
class EntityState:
    """One entity's state in one view. ``position`` is for adapters: the source partition and offset of the
    last event applied, stored together with the state so that a redelivered event is recognised."""

    watermark: int | None = None
    seq: int = 0
    buffer: list[list[Any]] = field(default_factory=list)  # [ts, seq, [inputs], (event_id)], by (ts, seq)
    settled: dict[str, list[Any]] = field(default_factory=dict)  # lifetime summaries of pruned events
    total: dict[str, list[Any]] = field(default_factory=dict)  # lifetime summaries of every applied event
    position: dict[str, Any] | None = None  # {"t": topic, "p": partition, "o": offset}
    # per bounded field, [sum of |x|, sum of x*x] over the entity's lifetime (None: a state from a version
    # that did not keep them; check_state derives them)
    bounds: dict[str, list[float]] | None = field(default_factory=dict)
    # not stored: an upper bound of the serialised size, kept by the pipeline (features.pipeline)
    size: int = field(default=0, compare=False, repr=False)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "w": self.watermark,
                "q": self.seq,
                "b": self.buffer,
                "s": self.settled,
                "a": self.total,
                "p": self.position,
                "m": self.bounds,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> EntityState:
        """Decode a stored state (any error for bytes that are not one: the stores catch it)."""
        d = orjson.loads(raw)
        return cls(
            watermark=d["w"],
            seq=d["q"],
            buffer=d["b"],
            settled=d["s"],
            total=d.get("a", {}),
            position=d.get("p"),
            bounds=d.get("m"),
            size=len(raw),
        )


def check_state(layout: Layout, state: EntityState) -> str | None:
    """Why a stored ``state`` cannot be used by this view (None: it can). Derives the magnitude bounds
    of a state from a version that did not keep them (from its summaries and buffer)."""
    wm = state.watermark
    if not (wm is None or (type(wm) is int and MIN_TS_MS <= wm <= MAX_TS_MS)):
        return "watermark: not an event time"
    if type(state.seq) is not int or not 0 <= state.seq <= MAX_COUNT:
        return "seq: not a count"
    pos = state.position
    if pos is not None and not (
        type(pos) is dict
        and type(pos.get("t")) is str
        and type(p := pos.get("p")) is int
        and type(o := pos.get("o")) is int
        and -1 <= p <= INT64_MAX
        and -1 <= o <= INT64_MAX
    ):
        return "position: not a topic, partition and offset"
    width = len(layout.inputs)
    buffer = state.buffer
    if type(buffer) is not list:
        return "buffer: not a list"
    for item in buffer:
        if not (
            type(item) is list
            and len(item) in (3, 4)
            and type(item[0]) is int
            and MIN_TS_MS <= item[0] <= MAX_TS_MS
            and type(item[1]) is int
            and 0 <= item[1] <= MAX_COUNT
            and type(item[2]) is list
            and len(item[2]) == width
            and all(map(scalar, item[2]))
            and (len(item) == 3 or type(item[3]) is str)
        ):
            return "buffer: an item is not [ts, seq, [inputs]]"
    if buffer and state.watermark is None:
        return "buffer: events without a watermark"
    for name, summaries in (("settled", state.settled), ("total", state.total)):
        if type(summaries) is not dict:
            return f"{name}: not a mapping"
        for agg in layout.lifetime:
            if not agg.valid(summaries.get(agg.name)):
                return f"{name}.{agg.name}: missing or not a valid summary"
    if state.bounds is None:
        state.bounds = _derive_bounds(layout, state)
    elif type(state.bounds) is not dict or not all(
        type(b) is list and len(b) == 2 and all(type(x) is float and 0 <= x <= SUM_LIMIT for x in b)
        for b in state.bounds.values()
    ):
        return "bounds: not finite magnitudes"
    return _check_magnitudes(layout, state)


def _check_magnitudes(layout: Layout, state: EntityState) -> str | None:
    """Summaries and buffered values within the magnitude totals that the overflow rule relies on: a
    stored sum larger than its field's total of ``|x|`` (tampering) could still overflow to infinity."""
    bounds = state.bounds or {}
    index = layout.index
    for fld, (by_sum, by_square) in layout.bounded.items():
        a, q = bounds.get(fld) or (0.0, 0.0)
        if by_sum and not _buffered(state.buffer, index[fld], abs) <= a * _SLACK + _TINY:
            return f"buffer: values of {fld!r} beyond its total magnitude"
        if by_square and not _buffered(state.buffer, index[fld], _square) <= q * _SLACK + _TINY:
            return f"buffer: values of {fld!r} beyond its total of squares"
    for agg in layout.lifetime:
        if not agg.magnitude or agg.field is None:
            continue
        a, q = bounds.get(agg.field) or (0.0, 0.0)
        for name, summaries in (("settled", state.settled), ("total", state.total)):
            acc = summaries[agg.name]
            if agg.magnitude == "sum":  # every partial of the sum within the field's total of |x|
                ok = math.fsum(abs(x) for x in agg.partials(acc)) <= a * _SLACK + _TINY
            else:  # [n, mean, M2]: |mean| <= max |x| <= sqrt(q), and M2 <= sum of x*x = q
                ok = acc[1] * acc[1] <= q * _SLACK + _TINY and abs(acc[2]) <= q * _SLACK + _TINY
            if not ok:
                return f"{name}.{agg.name}: beyond the total magnitude of {agg.field!r}"
    return None


def _derive_bounds(layout: Layout, state: EntityState) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    index = layout.index
    for fld in layout.bounded:
        a = q = 0.0
        for item in state.buffer:
            v = item[2][index[fld]]
            if type(v) in (int, float, bool):
                a, q = a + abs(float(v)), q + float(v) * float(v)
        pruned_a = pruned_q = 0.0  # what was pruned, from the settled summaries (a lower bound)
        for agg in layout.lifetime:
            acc = state.settled[agg.name]
            if agg.field == fld and agg.magnitude == "sum":
                pruned_a = max(pruned_a, math.fsum(abs(x) for x in agg.partials(acc)))
            elif agg.field == fld and agg.magnitude == "square":
                pruned_q = max(pruned_q, acc[2] + acc[0] * acc[1] * acc[1])
        a, q = a + pruned_a, q + pruned_q
        out[fld] = [min(a, SUM_LIMIT), min(q, SUM_LIMIT)]
    return out


def _square(x: float) -> float:
    return float(x) * float(x)


def _buffered(buffer: list[list[Any]], i: int, term: Callable[[float], float]) -> float:
    """The total of ``term(x)`` over the buffered values ``x`` of input ``i`` (strings and nulls skipped)."""
    total = 0.0
    for item in buffer:
        v = item[2][i]
        if type(v) is not str and v:
            total += term(v)
    return total
