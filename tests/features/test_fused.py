"""The in-order paths, compiled (features._native) and generated (features.fused), against the generic
engine, side by side: every vector (with its keys' order and its values' types) and every state's JSON equal
after every event, and refusals (LateEvent, AggregateOverflow, a check that raises) leaving every state
unchanged. The compiled path must be built (``native=True`` raises ImportError otherwise): a test run
without it fails, never skips."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings

from features import distinct
from features.aggregations import Count, DistinctCount, Last, Max, Mean, Min, SinceLast, Std, Sum, Var
from features.definitions import Derived, Expression, FeatureView
from features.engine import EntityState, FeatureEngine
from features.errors import AggregateOverflow, LateEvent
from features.events import Event
from features.examples import ACTIVITY, customer, site
from features.windows import hopping, sliding, tumbling
from tests.support.engine_run import row_lists, run_rows
from tests.support.feature_defs import ALL, EXACT, HOSTILE, HOSTILE_KEYED, ZIP
from tests.support.oracle import Oracle, diff
from tests.support.streams import stream, with_hostile_values

pytestmark = pytest.mark.unit

BENCH = FeatureView(name="bench", aggregations=[*ACTIVITY, Last("car"), SinceLast()], allowed_lateness=0)
# lateness 0 (lifetime tiles of 1 ms), every kind of window, explicit and default resolutions
ZERO = FeatureView(
    name="zero",
    derived=[Derived("sal_k", lambda f: f["salary"] / 1000)],
    aggregations=[
        Count(),
        Mean("salary"),
        Min("age"),
        Max("loan", window=sliding("10m", resolution="1m")),
        Min("age", window=sliding("2m")),
        Sum("loan", window=sliding("5m", resolution="1s")),
        Mean("sal_k", window=tumbling("1h")),
        Max("hvalue", window=hopping("30m", "5m")),
        Sum("hvalue", window=hopping("10m", "3m")),
        Var("hvalue", window=sliding("30m")),
        Std("salary"),
        DistinctCount("zipcode", window=sliding("10m")),
        Last("car", window=sliding("5s", resolution=1)),
        SinceLast(window=sliding("90s")),
    ],
    expressions=[Expression("r", lambda v: v["salary_mean_lifetime"] / v["count_lifetime"])],
    allowed_lateness=0,
)
# no own fields, derived ones only; min/max windows with lateness > 0
NARROW = FeatureView(
    name="narrow",
    derived=[Derived("ratio", lambda f: f["loan"] / f["salary"])],
    aggregations=[Max("ratio", window=sliding("5m")), Min("loan", window=sliding("10m")), Count()],
    include_fields=False,
    allowed_lateness="1m",
)
BARE = FeatureView(name="bare", aggregations=[Sum("loan", window=sliding("1m"))], include_fields=False)


class Refuse(Exception):
    pass


def refuse_some(vector: dict[str, Any]) -> None:
    """A check refusing about one vector in 13 (the pipeline refuses a record too large this way)."""
    if len(repr(vector)) % 13 == 0:
        raise Refuse


def _outcome(engine: FeatureEngine, state: EntityState, e: Event, check: Any) -> tuple[str, str]:
    # a distinct sketch serialises from the process's cache of live sketches (features.distinct) or decoded
    # anew, and the bytes may differ: each path starts from an empty cache, or one would take the other's
    distinct._CACHE.clear()
    before = state.to_json()
    try:
        return "vector", repr(engine.apply(state, e, check))  # repr: keys' order and values' types
    except (LateEvent, AggregateOverflow, Refuse, ArithmeticError) as exc:
        assert state.to_json() == before, "a refused event changed the state"
        return type(exc).__name__, str(exc)


def side_by_side(view: FeatureView, events: list[Event], check: Any = None, every: int = 7) -> dict[str, int]:
    """The four paths over ``events``: the compiled step holding its states in C (``hold``), the compiled
    step on the states' lists, the generated function, and the generic engine; equal outcomes and states
    after every event (the held states read through ``to_json``, which does not give them up, and
    ``online``); the kinds of outcomes."""
    held_, native, fused, generic = (
        FeatureEngine(view, native=True),
        FeatureEngine(view, native=True, hold=False),
        FeatureEngine(view, native=False),
        FeatureEngine(view, fused=False),
    )
    assert (held_.path, native.path, fused.path, generic.path) == ("native", "native", "fused", "generic")
    engines = (held_, native, fused, generic)
    states: dict[str, list[EntityState]] = {}
    kinds: dict[str, int] = {}
    for i, e in enumerate(events):
        key = generic.key(e)
        if key is None:
            continue
        held = states.setdefault(key, [en.new_state() for en in engines])
        if i % every == 0:  # through the JSON, as the worker keeps states: the caches start again
            held[:] = [EntityState.from_json(s.to_json()) for s in held]
            assert all(en.check_state(s) is None for en, s in zip(engines, held, strict=True))
        want = _outcome(generic, held[3], e, check)
        for n, (en, s) in enumerate(zip(engines[:3], held[:3], strict=True)):
            label = ("held", "native", "fused")[n]
            assert _outcome(en, s, e, check) == want, f"{label}: event {i} ({e.event_id}, ts {e.ts})"
            assert s.to_json() == held[3].to_json(), f"{label}: event {i} ({e.event_id}): states differ"
            assert repr(en.online(s)) == repr(generic.online(held[3]))
        if want[0] == "vector" and held_.native.mirrorable and held[0].watermark == e.ts:
            assert held[0].native is not None, f"event {i}: applied in order, the state is not held"
        kinds[want[0]] = kinds.get(want[0], 0) + 1
    return kinds


def holdable(view: FeatureView) -> FeatureView:
    """``view`` without the windows whose states the compiled step cannot hold in C (a range that moves
    neither by taking tiles out nor by min/max queues, or a window other than lifetime with an aggregation
    that is not a built-in class), so that the held path meets the same hostile values."""

    def built_in(tw: Any) -> bool:
        return all(type(a).__module__ == "features.aggregations" and a.kind != "distinct" for a in tw.aggs)

    keep = {
        tw.window
        for tw in view.tiled
        if tw.kind == "lifetime" or ((tw.code.invertible or tw.picks) and built_in(tw))
    }
    out = dataclasses.replace(
        view, name=f"{view.name}_held", aggregations=[a for a in view.aggregations if a.window in keep]
    )
    assert FeatureEngine(out).native.mirrorable, out.name
    return out


HELD = [holdable(v) for v in (ZERO, ALL, HOSTILE, HOSTILE_KEYED)]
VIEWS = [BENCH, ZERO, NARROW, BARE, customer, site, ALL, ZIP, HOSTILE, HOSTILE_KEYED, *HELD]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.name)
def test_the_hostile_stream_gives_the_same_vectors_and_states(view: FeatureView) -> None:
    events = stream(
        2_500, entities=12, seed=5, hostile=True, step_ms=3_000, lateness_ms=view.lateness_ms or 60_000
    )
    kinds = side_by_side(view, events)
    assert kinds["vector"] > 1_000
    if view.lateness_ms < 3_600_000:
        assert kinds.get("LateEvent", 0) > 10  # refusals compared too


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.name)
@pytest.mark.parametrize("step_ms", [500, 7_000, 100_000])
def test_the_oracle_streams_give_the_same_vectors_and_states(view: FeatureView, step_ms: int) -> None:
    events = stream(1_500, entities=6, seed=step_ms, step_ms=step_ms, shuffle_every=9, late_every=50)
    side_by_side(view, with_hostile_values(events, seed=3))
    in_order = sorted(stream(1_500, entities=30, seed=1, step_ms=step_ms), key=lambda e: e.ts)
    assert side_by_side(view, in_order) == {"vector": 1_500}


def test_exact_windows_and_refusing_checks() -> None:
    events = stream(2_000, entities=5, seed=9, hostile=True, step_ms=700, lateness_ms=EXACT.lateness_ms)
    side_by_side(EXACT, events)
    kinds = side_by_side(customer, stream(2_000, entities=4, seed=2, step_ms=20_000), check=refuse_some)
    assert kinds["Refuse"] > 20 and kinds["vector"] > 1_000


def test_overflow_refusals_leave_both_states_unchanged() -> None:
    huge = [
        Event(
            event_id=f"h{i}",
            entity="u",
            ts=1_000 + i * 61_000,
            fields={
                "salary": 8e307,
                "loan": 9e307,
                "hvalue": 1e154 * (i % 3),
                "car": i,
                "age": 30,
                "zipcode": 1,
            },
        )
        for i in range(12)
    ]
    for view in (customer, BENCH, ZERO):
        kinds = side_by_side(view, huge, every=5)
        assert kinds.get("AggregateOverflow", 0) >= 5, (view.name, kinds)


def test_the_generated_source_is_kept_and_the_generic_path_can_be_chosen() -> None:
    engine = FeatureEngine(BENCH)
    assert engine.fused is not None and "def apply(state, event, check=None):" in engine.fused.source
    assert engine.path == "native" and engine.apply == engine.native.apply  # built: the default
    py = FeatureEngine(BENCH, native=False)
    assert py.path == "fused" and py.fused is not None and py.apply == py.fused.apply
    assert FeatureEngine(BENCH, fused=False).apply.__func__ is FeatureEngine.apply  # type: ignore[attr-defined]


# variances are invertible (exact sums): their cached ranges take the leaving tiles out (Tiled.slide)
SPREAD = FeatureView(
    name="spread",
    aggregations=[
        Var("x", window=sliding(600, resolution=20)),
        Std("x", window=sliding(600, resolution=20)),
        Count(window=sliding(600, resolution=20)),
        Std("x", window=hopping(500, 70)),
        Var("x", window=sliding(90, resolution=1)),
        Std("x", window=tumbling(250)),
    ],
    allowed_lateness=300,
    include_fields=False,
)


@pytest.mark.parametrize("path", ["native", "fused", "generic"])
@settings(max_examples=150, deadline=None, derandomize=True)
@given(rows=row_lists(1e15, 0.1))
def test_variances_taken_out_of_a_range_give_the_oracle_vectors(path: str, rows: list[Any]) -> None:
    engine = FeatureEngine(SPREAD, fused=path != "generic", native=path == "native")
    assert engine.path == path
    assert all(tw.code.invertible for tw in SPREAD.tiled)

    def same_bits_merged_anew(state: EntityState) -> None:
        fresh = EntityState.from_json(state.to_json())  # its ranges merged anew from the tiles
        assert engine.check_state(fresh) is None and repr(engine.online(fresh)) == repr(engine.online(state))

    _, events, got, late = run_rows(engine, rows, same_bits_merged_anew)
    oracle = Oracle(SPREAD).feed(events)
    assert late == oracle.late and got.keys() == oracle.vectors.keys()
    for k, v in oracle.vectors.items():
        assert not diff(got[k], v), (k, diff(got[k], v))
