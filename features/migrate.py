"""Migrating an entity state of format 1 (before issue 13) to tiles.

Format 1 kept the entity's recent events one by one (``"b"``: ``[ts, seq, [inputs], (event_id)]`` sorted
by ``(ts, seq)``, the inputs in the view's order), the lifetime summaries of the events pruned from that
buffer (``"s"``) and of every event (``"a"``, derived: dropped). Migrating adds the buffered events to
their tiles in ``(ts, seq)`` order, keeps the settled summaries as the settled accumulators (a distinct
count's values re-hashed), keeps the hashes of the buffered event ids (re-keyed views), then runs
retention at the watermark: the same state as the events applied to the new engine, as far as the old one
kept them. A state that does not migrate is refused (:func:`features.state.check_state` says why).

>>> from features.aggregations import Count, Sum
>>> from features.definitions import FeatureView
>>> from features.state import EntityState, Layout
>>> from features.windows import sliding
>>> view = FeatureView("v", aggregations=[Count(), Sum("x", window=sliding("1m"))], allowed_lateness=0)
>>> state = EntityState.from_json(b'{"w": 70000, "q": 3, "b": [[30000, 2, [1.5]], [70000, 3, [2.0]]],'
...                               b' "s": {"count_lifetime": [1]}, "a": {"count_lifetime": [3]}}')
>>> migrate(Layout.of(view), state), state.settled, state.bounds
(None, {'count_lifetime': [2]}, {'x': [3.5, 6.25]})
>>> state.tiles  # the lifetime tile of the watermark (lateness 0: 1 ms tiles), the sliding window's two
{'lifetime@1': [[70000, [1]]], '1m@1000': [[30, [1.5]], [70, [2.0]]]}
"""

from __future__ import annotations

import math
from typing import Any

from features.events import MAX_TS_MS, MIN_TS_MS
from features.numeric import SUM_LIMIT
from features.state import MAX_IDS, EntityState, Layout, id_hash
from features.summaries import MAX_COUNT, scalar

__all__ = ["migrate"]


def migrate(layout: Layout, state: EntityState) -> str | None:
    """Turn ``state.legacy`` (a decoded format 1 state) into tiles in place; why not, or None."""
    d = state.legacy
    try:
        problem = _migrate(layout, state, d)
    except Exception as exc:  # any malformation of the old state the checks above did not foresee
        problem = f"malformed ({type(exc).__name__})"
    if problem is None:
        state.legacy = None
    return problem


def _migrate(layout: Layout, state: EntityState, d: Any) -> str | None:
    wm = d.get("w")
    if not (wm is None or (type(wm) is int and MIN_TS_MS <= wm <= MAX_TS_MS)):
        return "watermark: not an event time"
    buffer = d.get("b")
    width = len(layout.inputs)
    if type(buffer) is not list or not all(_item(x, width) for x in buffer):
        return "buffer: an item is not [ts, seq, [inputs]] of this view"
    if buffer and wm is None:
        return "buffer: events without a watermark"
    settled = _settled(layout, d.get("s"))
    if settled is None:
        return "settled: not one valid summary per lifetime aggregation"
    bounds = d.get("m")
    tiles: dict[str, list[list[Any]]] = {tw.key: [] for tw in layout.tiled}
    state.tiles = tiles
    state.settled = settled
    state.bounds = _derive_bounds(layout, buffer, settled) if bounds is None else bounds
    items = sorted(buffer, key=lambda x: (x[0], x[1]))
    for ts, seq, inputs, *_ in items:
        values = dict(zip(layout.inputs, inputs, strict=True))
        for tw in layout.tiled:
            found = tiles[tw.key]
            # retention as the events come (in time order, so no later one needs a tile it drops, and the
            # lifetime tiles fold in the same order): a buffer spread over a long time must not make a
            # tile per event first (an 8 MB format 1 state took 650 MB to migrate)
            if found and min(ts, wm) >= found[0][0] * tw.resolution + tw.expiry:
                tw.retain(found, min(ts, wm), settled)
            tile = tw.tile(found, ts // tw.resolution)
            for i, agg in enumerate(tw.aggs):
                agg.add(tile[i + 1], ts, seq, values.get(agg.field) if agg.field is not None else None)
    if layout.rekeyed:
        by_seq = sorted((x for x in items if len(x) == 4), key=lambda x: x[1])
        state.ids = [id_hash(x[3]) for x in by_seq][-MAX_IDS:]
    if wm is not None:
        for tw in layout.tiled:
            tw.retain(tiles[tw.key], wm, settled)
    return None


def _item(x: Any, width: int) -> bool:
    return (
        type(x) is list
        and len(x) in (3, 4)
        and type(x[0]) is int
        and MIN_TS_MS <= x[0] <= MAX_TS_MS
        and type(x[1]) is int
        and 0 <= x[1] <= MAX_COUNT
        and type(x[2]) is list
        and len(x[2]) == width
        and all(map(scalar, x[2]))
        and (len(x) == 3 or type(x[3]) is str)
    )


def _settled(layout: Layout, found: Any) -> dict[str, list[Any]] | None:
    """The old settled summaries as accumulators (``Aggregation.from_v1``: a distinct count's values are
    hashed now, a variance gains its mean's compensation), or None if one is missing or invalid."""
    if type(found) is not dict:
        return None
    out: dict[str, list[Any]] = {}
    for agg in layout.lifetime:
        acc = agg.from_v1(found.get(agg.name))
        if acc is None:
            return None
        out[agg.name] = acc
    return out


def _derive_bounds(
    layout: Layout, buffer: list[Any], settled: dict[str, list[Any]]
) -> dict[str, list[float]]:
    """The magnitude totals of a format 1 state from a version that did not keep them: its buffered values,
    and the settled summaries of its pruned events (a lower bound of theirs)."""
    out: dict[str, list[float]] = {}
    index = layout.index
    for fld in layout.bounded:
        a = q = 0.0
        for item in buffer:
            v = item[2][index[fld]]
            if type(v) in (int, float, bool):
                a, q = a + abs(float(v)), q + float(v) * float(v)
        pruned_a = pruned_q = 0.0  # each lifetime summary of the field saw every pruned event: the largest
        for agg in layout.lifetime:
            acc = settled[agg.name]
            if agg.field == fld and agg.magnitude == "sum":
                pruned_a = max(pruned_a, sum(abs(x) for x in agg.partials(acc)))
            elif agg.field == fld and agg.magnitude == "square":
                pruned_q = max(pruned_q, math.fsum(acc[2]))  # [n, sum of x, sum of x*x] (exact partials)
        out[fld] = [min(a + pruned_a, SUM_LIMIT), min(q + pruned_q, SUM_LIMIT)]
    return out
