"""What the compiled step reuses instead of allocating (features._native): an expired tile nobody else holds
(a window's spare tiles), a bounded field's magnitudes written into the list already in ``bounds``, and the
buffers of one call. Each is safe only when nothing can see it: these tests hold the objects from outside,
or call the step from inside itself, and compare with the generated path (features.fused)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from features.aggregations import Count, Last, Max, Mean, Min, SinceLast, Sum
from features.definitions import Derived, FeatureView
from features.engine import EntityState, FeatureEngine
from features.events import Event
from features.windows import sliding, tumbling

pytestmark = pytest.mark.unit

VIEW = FeatureView(
    name="reuse",
    aggregations=[
        Count(),
        Last("x"),
        SinceLast(),
        Mean("x", window=sliding("1m", resolution="10s")),
        Sum("y", window=tumbling("30s")),
        Max("x", window=sliding("1m", resolution="10s")),
    ],
    allowed_lateness=0,
)
LIFETIME = "lifetime@1"


def event(i: int, ts: int, x: float = 1.5, y: float = 2.25, entity: str = "u") -> Event:
    return Event(event_id=f"e{i}", entity=entity, ts=ts, fields={"x": x, "y": y})


def events(n: int, gap: int = 7_000, entity: str = "u") -> list[Event]:
    return [event(i, 1_000_000 + i * gap, x=0.1 * i, y=1.0 + i, entity=entity) for i in range(n)]


def both(view: FeatureView = VIEW) -> tuple[FeatureEngine, FeatureEngine]:
    """The compiled step on the states' lists (hold=False: what these tests are about), and fused."""
    native, fused = FeatureEngine(view, native=True, hold=False), FeatureEngine(view, native=False)
    assert (native.path, fused.path) == ("native", "fused")
    return native, fused


def test_an_expired_tile_held_from_outside_is_left_as_it_was() -> None:
    """A tile (and an accumulator of another) held from outside when they expire are not emptied and
    reused as a new tile: they keep what they held, and no window's tiles contain them again."""
    native, fused = both()
    s, f = native.new_state(), fused.new_state()
    stream = events(40)
    for e in stream[:2]:
        assert native.apply(s, e) == fused.apply(f, e)
    tile = s.tiles[LIFETIME][0]
    acc = s.tiles["1m@10000"][0][1]
    held_tile, held_acc = copy.deepcopy(tile), copy.deepcopy(acc)
    for e in stream[2:]:
        assert native.apply(s, e) == fused.apply(f, e)
    assert tile == held_tile and acc == held_acc
    every = [t for ts in s.tiles.values() for t in ts]
    assert all(t is not tile for t in every) and all(a is not acc for t in every for a in t[1:])
    assert s.to_json() == f.to_json()


def test_spare_tiles_are_emptied_between_entities() -> None:
    """Spare tiles are shared by the entities of one engine: a tile expired in one entity and taken by
    another starts empty (the states equal the generated path's, entity by entity)."""
    native, fused = both()
    states: dict[str, tuple[EntityState, EntityState]] = {}
    mixed = events(60, 5_000, "a") + events(60, 13_000, "b") + events(30, 31_000, "c")
    stream = sorted(mixed, key=lambda e: e.ts)
    for e in stream:
        s, f = states.setdefault(e.entity, (native.new_state(), fused.new_state()))
        assert native.apply(s, e) == fused.apply(f, e)
        assert s.to_json() == f.to_json()


PICKS = FeatureView(
    name="picks",
    aggregations=[Max("x", window=sliding("1m", resolution="10s")), Min("y", window=sliding("1m"))],
    allowed_lateness=0,
)


@pytest.mark.parametrize("hold", ["range", "accumulator"])
def test_a_min_max_range_held_from_outside_is_left_as_it_was(hold: str) -> None:
    """A min/max window's cached range (its accumulators, rewritten in place as the range moves when only
    the cache holds them) held from outside, whole or one accumulator, keeps its values; the vectors and
    states as fused."""
    native, fused = both(PICKS)
    s, f = native.new_state(), fused.new_state()
    stream = [event(i, 1_000_000 + i * 7_000, x=float((i * 37) % 11), y=-float(i % 5)) for i in range(40)]
    for e in stream[:5]:
        assert native.apply(s, e) == fused.apply(f, e)
    held: Any = s.cache["1m@10000"][2] if hold == "range" else s.cache["1m@10000"][2][0]
    before = copy.deepcopy(held)
    for e in stream[5:]:
        assert native.apply(s, e) == fused.apply(f, e)
    assert held == before
    assert s.to_json() == f.to_json()


def test_bounds_held_from_outside_are_not_written_into() -> None:
    """A bounded field's [sum of |x|, sum of x*x] held from outside keeps its values: the state gets a new
    list (written in place only when the state alone holds it)."""
    native, fused = both()
    s, f = native.new_state(), fused.new_state()
    stream = events(6)
    for e in stream[:2]:
        native.apply(s, e), fused.apply(f, e)
    pair = s.bounds["x"]  # type: ignore[index]
    before = list(pair)
    for e in stream[2:]:
        assert native.apply(s, e) == fused.apply(f, e)
    assert pair == before and s.bounds["x"] != before  # type: ignore[index]
    assert s.to_json() == f.to_json()


def test_a_step_called_from_inside_itself_keeps_its_own_buffers() -> None:
    """An engine's apply called from a check (or a derived field) of the same engine: the inner call has its
    own buffers, so the outer one's inputs, ranges and tiles are its own (states and vectors as fused)."""
    native, fused = both()
    runs: dict[str, dict[str, Any]] = {}
    for name, engine in (("native", native), ("fused", fused)):
        outer, inner = engine.new_state(), engine.new_state()
        vectors: list[tuple[str, dict[str, Any]]] = []
        for i, e in enumerate(events(30)):
            nested = event(1000 + i, e.ts, x=-3.0 * i, y=0.5, entity="v")
            check = _nesting(engine, inner, nested, vectors)
            vectors.append(("outer", engine.apply(outer, e, check)))
        runs[name] = {"vectors": vectors, "outer": outer.to_json(), "inner": inner.to_json()}
    assert runs["native"] == runs["fused"]


def _nesting(
    engine: FeatureEngine, state: EntityState, nested: Event, out: list[tuple[str, dict[str, Any]]]
) -> Any:
    def check(vector: dict[str, Any]) -> None:
        out.append(("inner", engine.apply(state, nested)))

    return check


def test_a_derived_field_calling_the_step_keeps_the_outer_inputs() -> None:
    """The same through a derived field (run before the inputs are read)."""
    inner_state: dict[str, EntityState] = {}
    holder: dict[str, FeatureEngine] = {}

    def x2(f: Mapping[str, Any]) -> float:
        if f["y"] >= 0:  # the outer events only (the inner one's y is negative)
            engine = holder["engine"]
            state = inner_state.setdefault(engine.path, engine.new_state())
            engine.apply(state, event(0, 5_000_000 + int(f["y"]) * 1000, x=99.0, y=-7.0, entity="w"))
        return float(f["x"]) * 2

    view = FeatureView(
        name="nested",
        derived=[Derived("x2", x2)],
        aggregations=[Sum("x2", window=sliding("1m")), Mean("y"), Count()],
        allowed_lateness=0,
    )
    native, fused = both(view)
    out = {}
    for engine in (native, fused):
        holder["engine"] = engine
        state = engine.new_state()
        out[engine.path] = ([engine.apply(state, e) for e in events(25)], state.to_json())
    assert out["native"] == out["fused"]
    assert inner_state["native"].to_json() == inner_state["fused"].to_json()


def test_more_bounded_fields_than_the_stack_holds() -> None:
    """A view of 70 bounded fields (beyond the step's 64 on the stack): the magnitudes on the heap, the
    same states."""
    names = [f"f{i}" for i in range(70)]
    view = FeatureView(name="wide", aggregations=[Sum(n) for n in names], allowed_lateness=0)
    native, fused = both(view)
    s, f = native.new_state(), fused.new_state()
    for i in range(5):
        fields = {n: j * 0.5 + i for j, n in enumerate(names)}
        e = Event(event_id=f"w{i}", entity="u", ts=1000 + i, fields=fields)
        assert native.apply(s, e) == fused.apply(f, e)
    assert s.to_json() == f.to_json()
    assert len(s.bounds or {}) == 70
