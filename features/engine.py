"""The feature engine: apply one event to one entity's state and return that event's point-in-time vector.

Pure and deterministic: no I/O, no clock; the event's timestamp is the only time.

**What a vector holds.** For an event ``e`` of entity ``k`` at event time ``t``, in this order (a later name
wins on a clash):

1. ``e``'s own fields (unless the view sets ``include_fields=False``), then its derived fields;
2. every aggregation over the events of ``k`` applied *before* ``e`` whose *tile* is in the aggregation's
   window at ``t`` (``e`` itself is not included: the vector is what was known just before ``e``, which
   is what a model scoring ``e`` may use). Windows are kept as tiles (:mod:`features.windows`): for an
   event in order (``t`` at or after the entity's watermark) that is every applied event with event time
   in ``[lower(t), t]``; for an event out of order, the tile holding ``t`` may hold events applied before
   ``e`` with a later time than ``t``, and they count (a window knows times only to its resolution;
   ``since_last`` is then 0); tiles after ``t``'s never count;
3. the view's expressions, computed over 1 and 2.

The label is never part of a vector: it is not a field of the event.

**What the online store holds.** After a batch, each entity's *aggregates* as of its watermark (the latest
event time applied, all applied events counted). Serving merges request fields with them through
:meth:`FeatureEngine.serve`, which runs steps 1 and 3 with the same code, so training and serving agree.

**Numbers stay finite (reject, not clamp).** Event values are in the numeric domain already
(:mod:`features.numeric`), and so are derived fields and expressions: a value outside it (NaN, infinity, an
integer beyond int64, or anything that is not a scalar) becomes null, like an exception. Aggregates are kept
finite by refusing events: the state keeps, per field that a sum or mean aggregates, the running total of
``|x|`` over the entity's lifetime, and per field that a var or std aggregates, the total of ``x*x``; an
event that would take the first past :data:`~features.numeric.SUM_LIMIT` (about 1.797e308), or four times
the second past it, raises :class:`~features.errors.AggregateOverflow` and changes nothing. These bound every
partial sum the aggregations compute, in any window and any order (and Welford's squared deviations), so no
aggregate can become infinite, NaN or, through orjson, ``null``. Refusing keeps every accepted event counted
exactly, which a clamp would not; an entity reaches the bound only with values near float64's limit.

**Stored states are checked before use** (:meth:`FeatureEngine.check_state`): one that does not fit the view
(a ``null`` where a number must be, a missing summary, a wrong type) is refused as corrupt; the adapters
reset it (see :mod:`features.pipeline`).

**Out-of-order events** are placed by event time: an event older than the entity's watermark minus the
view's allowed lateness raises :class:`~features.errors.LateEvent` and changes nothing. After the watermark
moves, each window drops the tiles no acceptable event can need any more (those before its range at
``watermark - lateness``); the lifetime aggregations fold theirs into settled accumulators instead. So an
entity's state is bounded by its windows' tiles (:mod:`features.tiles`), whatever its traffic, and an
event in order costs O(1) per aggregation.

>>> from features.examples import customer
>>> engine = FeatureEngine(customer)
>>> state = engine.new_state()
>>> e1 = Event(entity="u1", ts=1_000, fields={"salary": 50_000.0, "loan": 10_000.0, "age": 30, "car": 3,
...            "zipcode": 1, "hvalue": 1.0, "commission": 0.0, "elevel": 1, "hyears": 2})
>>> v1 = engine.apply(state, e1)
>>> v1["count_lifetime"], v1["since_last_ms"], v1["loan_to_salary"]
(0, None, 0.2)
>>> v2 = engine.apply(state, e1.model_copy(update={"ts": 61_000, "event_id": "e2"}))
>>> v2["count_lifetime"], v2["since_last_ms"], v2["salary_mean_10m"]
(1, 60000, 50000.0)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

from features.definitions import FeatureView
from features.errors import AggregateOverflow, InvalidEvent, LateEvent
from features.events import MAX_ENTITY_CHARS, Event
from features.fused import Fused
from features.numeric import SUM_LIMIT, in_domain
from features.state import MAX_IDS, EntityState, Layout, check_state, id_hash

__all__ = ["EntityState", "FeatureEngine", "Vector"]

Vector = dict[str, Any]


class FeatureEngine:
    """Computes one :class:`~features.definitions.FeatureView` (see the module docstring for semantics)."""

    def __init__(
        self, view: FeatureView, fused: bool = True, native: bool | None = None, hold: bool = True
    ) -> None:
        self.view = view
        self.layout = self._layout = layout = Layout.of(view)
        self._inputs = layout.inputs
        # Re-keyed views keep the hashes of their last MAX_IDS event ids, to recognise a record duplicated
        # into the repartition topic by a crash; direct views recognise redeliveries by their source offset.
        self._ids = view.rekeyed
        self._tiled = layout.tiled
        self._lifetime = layout.lifetime
        self._lateness = view.lateness_ms
        self._bounded = layout.bounded  # field -> (bounded by the sum of |x|, bounded by the sum of x*x)
        # how many copies of an event's values applying it can add to the state: a new tile's accumulators
        # (none larger than the event), and the value each Last aggregation keeps
        self.copies = 1 + sum(1 for a in view.aggregations if a.kind == "last")
        # events in order through one generated function (features.fused); fused=False: the generic path
        # below only (the reference, which the fused function calls for events out of order)
        self.fused = Fused(self, self.apply_generic) if fused else None
        if self.fused is not None:
            self.apply = self.fused.apply  # type: ignore[method-assign]
        # and, where the extension was built, through its compiled twin (features._native: the same lines,
        # the same states); native=None: when built, True: required (ImportError if not), False: never;
        # hold: the compiled step keeps the states of a view it can in C between events (EntityState.native,
        # features/_native_mirror.pxi), else it works on their lists
        self.native: Any = None
        if fused and native is not False:
            step = _native_step()
            if step is None and native:
                raise ImportError("features._native was not built: pip install -e . with a C compiler")
            if step is not None:
                self.native = step(self, self.apply_generic, _safe, hold)
                self.apply = self.native.apply  # type: ignore[method-assign]

    @property
    def path(self) -> str:
        """Which path applies events in order: "native", "fused" or "generic"."""
        return "native" if self.native is not None else ("fused" if self.fused is not None else "generic")

    def new_state(self) -> EntityState:
        return EntityState(
            tiles={tw.key: [] for tw in self._tiled}, settled={a.name: a.empty() for a in self._lifetime}
        )

    def key(self, event: Event) -> str | None:
        """The view's key for an event: its entity, or its key field's value (None if absent). A value
        longer than an entity may be (``MAX_ENTITY_CHARS``) raises :class:`InvalidEvent` naming the field."""
        if not self.view.rekeyed:
            return event.entity
        value = event.fields.get(self.view.entity)
        if value is None:
            return None
        key = str(value)
        if len(key) > MAX_ENTITY_CHARS:
            raise InvalidEvent(
                f"fields.{self.view.entity}",
                f"{len(key)} characters: longer than an entity key may be ({MAX_ENTITY_CHARS})",
            )
        return key

    # ------------------------------------------------------------------ vectors

    def own(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The event's own fields (when the view includes them) followed by its derived fields."""
        values = dict(fields)
        for d in self.view.derived:
            values[d.name] = _safe(d.fn, values)
        if self.view.include_fields:
            return values
        return {d.name: values[d.name] for d in self.view.derived}

    def aggregates_at(self, state: EntityState, t: int) -> dict[str, Any]:
        """Every aggregation at reference time ``t``: per window, its tiles in range at ``t`` merged.

        The merged accumulators of a window's range are cached on the state (``state.cache``, not stored):
        an event in the range of the last in-order event reads them as they are (O(1)); an event in order
        in a new range rebuilds them; an event out of order in another range merges its tiles on its own."""
        out: dict[str, Any] = {}
        wm = state.watermark
        in_order = wm is None or t >= wm
        cache = state.cache
        all_tiles = state.tiles
        for tw in self._tiled:
            key = tw.key
            tiles = all_tiles[key]
            kt = t // tw.resolution
            c = cache.get(key)
            if tw.kind == "lifetime":  # cached: settled + every tile, right unless a later tile exists
                if c is None or (tiles and kt < tiles[-1][0]):
                    accs = tw.merged(tiles, None, kt, state.settled)
                    if in_order:
                        cache[key] = c = [None, None, accs]
                else:
                    accs = c[2]
            else:
                lo = kt - tw.span if tw.kind != "hopping" else tw.first(t)
                if c is not None and c[0] == lo and c[1] == kt:
                    accs = c[2]
                elif in_order:
                    cache[key] = c = tw.move(c, tiles, lo, kt)  # type: ignore[arg-type]
                    accs = c[2]
                else:
                    accs = tw.merged(tiles, lo, kt)
            tw.code.read(out, accs, t)
        return out

    def finish(self, own: dict[str, Any], aggregates: Mapping[str, Any]) -> Vector:
        """Steps 1-3 of the module docstring: own and derived fields, aggregates, then expressions."""
        vector = own
        vector.update(aggregates)
        for e in self.view.expressions:
            vector[e.name] = _safe(e.fn, vector)
        return vector

    def serve(self, aggregates: Mapping[str, Any], request_fields: Mapping[str, Any]) -> Vector:
        """The vector for a scoring request: stored aggregates merged with request-time fields."""
        return self.finish(self.own(request_fields), aggregates)

    # ------------------------------------------------------------------ applying events

    def apply(
        self, state: EntityState, event: Event, check: Callable[[Vector], object] | None = None
    ) -> Vector:
        """Return ``event``'s point-in-time vector and add it to ``state`` (:meth:`apply_generic`; unless
        ``fused=False``, replaced by the view's generated function, :mod:`features.fused`)."""
        return self.apply_generic(state, event, check)

    def apply_generic(
        self, state: EntityState, event: Event, check: Callable[[Vector], object] | None = None
    ) -> Vector:
        """Return ``event``'s point-in-time vector and add it to ``state``; raises ``LateEvent`` or
        ``AggregateOverflow`` instead, having changed nothing. Everything that can fail runs first,
        ``check`` (given the vector, before the state changes) included: what it raises propagates and
        the state is unchanged (the pipeline refuses a vector whose record would be too large there)."""
        t = event.ts
        wm = state.watermark
        if wm is not None and t < wm - self._lateness:
            raise LateEvent(self.view.name, self.key(event) or "", t, wm, self._lateness)
        own = self.own(event.fields)
        if self.view.include_fields:  # own holds every field: one lookup each
            values = {k: own.get(k) for k in self._inputs}
        else:
            fields = event.fields
            values = {k: own.get(k, fields.get(k)) for k in self._inputs}
        bounds = self._bounds(state, values, event) if self._bounded else None
        aggregates = self.aggregates_at(state, t)
        for name, value in aggregates.items():  # cannot happen from a checked state: a last safeguard
            if type(value) is float and value - value != 0.0:
                raise ArithmeticError(f"aggregate {name!r} is not finite")
        vector = self.finish(own, aggregates)  # own is a new dict: no copy
        if check is not None:
            check(vector)
        # nothing below can fail: the state changes from here on
        if bounds:
            if state.bounds is None:
                state.bounds = {}
            state.bounds.update(bounds)
        state.seq = seq = state.seq + 1
        self._add(state, t, seq, values)
        if self._ids:
            ids = state.ids
            ids.append(id_hash(event.event_id))
            if len(ids) > MAX_IDS:
                del ids[: len(ids) - MAX_IDS]
        if wm is None or t > wm:
            state.watermark = t
            for tw in self._tiled:
                tiles = state.tiles[tw.key]
                if tiles and t >= tiles[0][0] * tw.resolution + tw.expiry:  # the oldest tile expired
                    tw.retain(tiles, t, state.settled)
        return vector

    def _add(self, state: EntityState, t: int, seq: int, values: Mapping[str, Any]) -> None:
        """Add an event to its tile of every window, and to the cached ranges that hold that tile."""
        cache, all_tiles = state.cache, state.tiles
        for tw in self._tiled:
            tiles = all_tiles[tw.key]  # by key: a stored state's windows may come in any order
            k = t // tw.resolution
            last = tiles[-1][0] if tiles else None
            if last == k:
                tile = tiles[-1]
            elif last is None or last < k:  # a new latest tile: the common case of a sparse stream
                tile = tw.code.new(k)
                tiles.append(tile)
            else:
                tile = tw.tile(tiles, k)
            c = cache.get(tw.key)
            running = None
            if c is not None:
                if c[0] is None or c[1] == k:  # lifetime: settled + every tile; else the current tile
                    running = c[2]
                elif c[0] <= k < c[1]:  # an earlier tile of the cached range: its two stacks are stale
                    del cache[tw.key]
            tw.code.add(tile, running, t, seq, values)

    def _bounds(self, state: EntityState, values: Mapping[str, Any], event: Event) -> dict[str, list[float]]:
        """The bounded fields' magnitudes with this event added; ``AggregateOverflow`` past the limit."""
        out: dict[str, list[float]] = {}
        stored = state.bounds or {}
        for fld, (by_sum, by_square) in self._bounded.items():
            v = values.get(fld)
            if type(v) is str or v is None or not v:
                continue
            x = float(v)
            a, q = stored.get(fld) or (0.0, 0.0)
            a, q = a + abs(x), q + x * x
            if by_sum and not a <= SUM_LIMIT:
                raise AggregateOverflow(self.view.name, self.key(event) or "", fld, "sum of magnitudes")
            if by_square and not 4.0 * q <= SUM_LIMIT:
                raise AggregateOverflow(self.view.name, self.key(event) or "", fld, "sum of squares")
            out[fld] = [min(a, SUM_LIMIT), min(q, SUM_LIMIT)]  # capped: one no aggregation of it needs
        return out

    def check_state(self, state: EntityState) -> str | None:
        """Why a stored ``state`` cannot be used by this view (None: it can); see :mod:`features.state`."""
        return check_state(self._layout, state)

    def seen(self, state: EntityState, event: Event) -> bool:
        """For re-keyed views: True if this event (by ``event_id``) is among the entity's last
        :data:`~features.state.MAX_IDS` applied events, so a duplicate is not counted twice."""
        return bool(state.ids) and id_hash(event.event_id) in state.ids

    def online(self, state: EntityState) -> dict[str, Any]:
        """The entity's aggregates as of its watermark: what the online store serves."""
        if self.native is not None:  # the same ranges and values, compiled (features._native)
            return self.native.online(state)
        return self.aggregates_at(state, state.watermark if state.watermark is not None else 0)


def _native_step() -> Any:
    """The compiled step class (features._native.Step), or None where the extension was not built."""
    try:
        from features._native import Step
    except ImportError:
        return None
    return Step


def _safe(fn: Any, values: Mapping[str, Any]) -> Any:
    """A derived field's or an expression's value: null if it raises or is not a scalar in the domain."""
    try:
        out = fn(values)
    except (ArithmeticError, TypeError, ValueError, KeyError, AttributeError):
        return None
    t = type(out)
    if t is str or t is bool or out is None or ((t is float or t is int) and in_domain(out)):
        return out
    return _coerce(out)


def _coerce(out: Any) -> Any:
    """Subclasses and NumPy scalars as plain Python values; anything else outside the domain is null."""
    if isinstance(out, str):
        return str(out)
    if isinstance(out, numbers.Integral):  # not a bool: _safe took those, and bool has no subclasses
        out = int(out)
    elif isinstance(out, numbers.Real):
        out = float(out)
    else:
        return None
    return out if in_domain(out) else None
