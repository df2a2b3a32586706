"""Stored states: what the checks refuse, with an independent expectation for each case; what derived fields
become when a function returns something that is not a plain scalar; errors that pickle with their context."""

from __future__ import annotations

import fractions
import math
import pickle
from typing import Any

import orjson
import pytest

from features.aggregations import Count, DistinctCount, Last, Max, Mean, SinceLast, Std, Sum, Var
from features.definitions import Derived, FeatureView
from features.engine import FeatureEngine
from features.errors import (
    AggregateOverflow,
    CorruptState,
    FeaturesError,
    InvalidEvent,
    LateEvent,
    RecordTooLarge,
)
from features.events import MAX_ENTITY_CHARS, MAX_TS_MS, MIN_TS_MS, Event
from features.numeric import SUM_LIMIT
from features.state import _SLACK, _TINY, MAX_SOURCES, EntityState, Layout, check_state, source_key
from features.store import Unreadable, decode_state
from features.summaries import MAX_COUNT
from features.windows import hopping, sliding, tumbling
from tests.support.oracle import diff

pytestmark = pytest.mark.unit

VIEW = FeatureView("v", aggregations=[Count(), Sum("x"), Var("y"), Mean("x", window=sliding("1m"))])
LAYOUT = Layout.of(VIEW)
LIFE, MINUTE = "lifetime@1000", "1m@1000"  # the lifetime tiles: 1 s (lateness 1m / 60); the minute's: 1 s


def state(**change: Any) -> EntityState:
    """A consistent state: two events x=2, y=3 at 10 ms and x=4, y=-1 at 20 ms (by hand: both in tile 0 of
    each window; sum 6, var of y [n=2, sum 2, sum of squares 10])."""
    base: dict[str, Any] = {
        "watermark": 20,
        "seq": 2,
        "tiles": {LIFE: [[0, [2], [6.0], [2, [2.0], [10.0]]]], MINUTE: [[0, [2, 6.0]]]},
        "settled": {"count_lifetime": [0], "x_sum_lifetime": [0.0], "y_var_lifetime": [0, [0.0], [0.0]]},
        "bounds": {"x": [6.0, 20.0], "y": [4.0, 10.0]},
    }
    base.update(change)
    return EntityState(**base)


def tiles(life: list[Any] | None = None, minute: list[Any] | None = None) -> dict[str, Any]:
    return {LIFE: life if life is not None else [], MINUTE: minute if minute is not None else []}


def test_layout_of_a_view() -> None:
    assert LAYOUT.inputs == ["x", "y"] and LAYOUT.index == {"x": 0, "y": 1}
    assert [a.name for a in LAYOUT.lifetime] == ["count_lifetime", "x_sum_lifetime", "y_var_lifetime"]
    assert LAYOUT.bounded == {"x": (True, False), "y": (False, True)}
    assert [(tw.key, tw.bound) for tw in LAYOUT.tiled] == [(LIFE, 62), (MINUTE, 122)]


def test_a_consistent_state_passes_and_round_trips() -> None:
    s = state()
    assert check_state(LAYOUT, s) is None
    raw = s.to_json()
    assert orjson.loads(raw)["v"] == 2
    back = EntityState.from_json(raw)
    assert back == s and back.size == len(raw)
    # the engine agrees: the same events applied give this state
    engine = FeatureEngine(VIEW)
    fresh = engine.new_state()
    for ts, x, y in ((10, 2.0, 3.0), (20, 4.0, -1.0)):
        engine.apply(fresh, Event(entity="u", ts=ts, fields={"x": x, "y": y}))
    assert fresh == s and engine.check_state(fresh) is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"watermark": 1.5}, "watermark: not an event time"),
        ({"seq": -1}, "seq: not a count"),
        ({"position": {"t": "e", "p": 0}}, "position: not a topic, partition and offset"),
        ({"ids": [5]}, "ids: not at most 256 event id hashes (none for a view keyed by the entity)"),
        ({"bounds": {"x": [6.0, float("inf")]}}, "bounds: not finite magnitudes"),
        ({"bounds": None}, "bounds: not finite magnitudes"),
        ({"settled": []}, "settled: not one accumulator per lifetime aggregation"),
        ({"settled": {"count_lifetime": [0], "x_sum_lifetime": [0.0]}}, "settled: not one accumulator"),
        (
            {
                "settled": {
                    "count_lifetime": [0],
                    "x_sum_lifetime": [None],
                    "y_var_lifetime": [0, [0.0], [0.0]],
                }
            },
            "settled.x_sum_lifetime: not a valid accumulator",
        ),
        ({"tiles": {LIFE: []}}, "tiles: not one list of tiles per window of the view"),
        ({"tiles": {LIFE: [], MINUTE: {}}}, "tiles.1m@1000: not a list"),
        ({"watermark": None}, "tiles.lifetime@1000: tiles without a watermark"),
        ({"tiles": tiles(minute=[[0, [2, 6.0], [1]]])}, "tiles.1m@1000: a tile is not [k, accumulators...]"),
        ({"tiles": tiles(minute=[[0.0, [2, 6.0]]])}, "tiles.1m@1000: a tile is not [k, accumulators...]"),
        (
            {"tiles": tiles(minute=[[1, [2, 6.0]]])},
            "tiles.1m@1000: tile 1 is out of order or outside [-119, 0]",
        ),
        ({"tiles": tiles(minute=[[0, [1, 2.0]], [0, [1, 4.0]]])}, "tiles.1m@1000: tile 0 is out of order"),
        # the minute at watermark 200 s keeps tiles from (200 s - 1m lateness) // 1 s - 60 + 1 = 81
        ({"watermark": 200_000, "tiles": tiles(minute=[[80, [2, 6.0]]])}, "tiles.1m@1000: tile 80 is out"),
        ({"tiles": tiles(minute=[[0, [2, None]]])}, "tiles.1m@1000: tile 0: not a valid accumulator"),
        ({"tiles": tiles(minute=[[0, [-1, 6.0]]])}, "tiles.1m@1000: tile 0: not a valid accumulator"),
        # counts beyond the events the state applied (seq 2): three in one window
        ({"tiles": tiles(minute=[[-1, [1, 2.0]], [0, [2, 4.0]]])}, "x_mean_1m: counts more events"),
        # two values within the total one by one, beyond it together
        (
            {"bounds": {"x": [4.5, 20.0], "y": [4.0, 10.0]}},
            "x_sum_lifetime: beyond the total magnitude of 'x'",
        ),
        # the sum of y*y is 9 + 1 = 10
        (
            {"bounds": {"x": [6.0, 20.0], "y": [4.0, 9.5]}},
            "y_var_lifetime: beyond the total magnitude of 'y'",
        ),
        # a field missing from the bounds has a total of 0: any value is beyond it
        ({"bounds": {"y": [4.0, 10.0]}}, "x_sum_lifetime: beyond the total magnitude of 'x'"),
        (
            {
                "settled": {
                    "count_lifetime": [0],
                    "x_sum_lifetime": [7.0],
                    "y_var_lifetime": [0, [0.0], [0.0]],
                }
            },
            "x_sum_lifetime: beyond the total magnitude of 'x'",
        ),
        # a sum of squares whose partials total beyond float64: math.fsum raised OverflowError out of
        # check_state (the pipeline caught it as corrupt; an attacker's finding): now refused, saying why
        (
            {
                "settled": {
                    "count_lifetime": [0],
                    "x_sum_lifetime": [0.0],
                    "y_var_lifetime": [0, [0.0], [1.7e308, 1.7e308]],
                }
            },
            "settled.y_var_lifetime: not a valid accumulator",
        ),
        # the minute's mean holds x too: its tiles are checked against the same total
        (
            {"tiles": tiles(life=[[0, [2], [6.0], [2, [2.0], [10.0]]]], minute=[[0, [2, 7.0]]])},
            "x_mean_1m: beyond",
        ),
    ],
)
def test_refused_states_say_why(change: dict[str, Any], problem: str) -> None:
    assert (check_state(LAYOUT, state(**change)) or "").startswith(problem)


def test_the_limits_are_inclusive() -> None:
    assert check_state(LAYOUT, state(watermark=MAX_TS_MS, seq=MAX_COUNT, tiles=tiles())) is None
    k = MIN_TS_MS // 1000
    low = state(
        watermark=MIN_TS_MS,
        tiles=tiles([[k, [2], [6.0], [2, [2.0], [10.0]]]], [[k, [2, 6.0]]]),
    )
    assert check_state(LAYOUT, low) is None
    # a tile at the oldest the minute keeps at watermark 200 s (81) and one at the watermark's (200)
    edges = state(watermark=200_000, tiles=tiles(minute=[[81, [1, 2.0]], [200, [1, 4.0]]]))
    assert check_state(LAYOUT, edges) is None


def exactly(total: float) -> float:
    """The magnitude ``a`` whose slack bound ``a * _SLACK + _TINY`` is exactly ``total``."""
    a = (total - _TINY) / _SLACK
    for _ in range(100):
        bound = a * _SLACK + _TINY
        if bound == total:
            return a
        a = math.nextafter(a, math.inf if bound < total else -math.inf)
    raise AssertionError(f"no float bound for {total}")


def test_totals_exactly_at_the_bound_are_accepted() -> None:
    # x: the sum's partials 6 and the mean's 6; y: M2 + n * mean**2 = 8 + 2 * 1 = 10
    at = state(bounds={"x": [exactly(6.0), 20.0], "y": [4.0, exactly(10.0)]})
    assert check_state(LAYOUT, at) is None
    at.bounds = {"x": [math.nextafter(exactly(6.0), 0.0), 20.0], "y": [4.0, exactly(10.0)]}
    assert check_state(LAYOUT, at) == "x_sum_lifetime: beyond the total magnitude of 'x'"


class Text(str):
    pass


class Flag(int):
    pass


def derived(value: Any) -> Any:
    view = FeatureView("d", derived=[Derived("out", lambda f: value)], include_fields=False)
    return FeatureEngine(view).own({})["out"]


def test_derived_values_become_plain_scalars_or_null() -> None:
    out = derived(Text("abc"))
    assert out == "abc" and type(out) is str
    out = derived(Flag(7))
    assert out == 7 and type(out) is int
    out = derived(fractions.Fraction(1, 4))
    assert out == 0.25 and type(out) is float
    assert derived(Flag(2**70)) is None  # beyond int64
    assert derived(float("nan")) is None and derived([1]) is None and derived(object()) is None
    assert derived(True) is True and derived(None) is None


ERRORS: list[FeaturesError] = [
    InvalidEvent("fields.x", "bad"),
    LateEvent("v", "u1", 5, 10, 2),
    AggregateOverflow("v", "u1", "loan", "sum"),
    CorruptState("v", "u1", "seq: not a count"),
    RecordTooLarge("v", "u1", 20, 10, "state"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_pickle_with_their_context(error: FeaturesError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert vars(back) == vars(error) and set(vars(error)) == set(error.context)


def test_error_messages() -> None:
    assert str(LateEvent("v", "u1", 5, 10, 2)) == (
        "late: event time 5 is 5 ms behind entity 'u1' of view 'v' (watermark 10, allowed lateness 2 ms)"
    )
    assert str(InvalidEvent("", "empty")) == "empty"
    assert str(RecordTooLarge("v", "u", 3, 2)).startswith("too_large: the feature record of entity 'u'")
    plain = FeaturesError("x")
    assert str(pickle.loads(pickle.dumps(plain))) == "x"
    assert Last("x").valid([None, None, None])


def test_values_that_add_no_magnitude_leave_the_bounds_as_they_were() -> None:
    engine = FeatureEngine(VIEW)
    s = engine.new_state()
    for ts, fields in enumerate(({"x": 0, "y": 0.0}, {"x": None, "y": "text"}, {"x": False}), start=1):
        engine.apply(s, Event(entity="u", ts=ts, fields=fields))
    assert s.bounds == {}  # nothing stored for them (a stored state carries only what counts)
    engine.apply(s, Event(entity="u", ts=9, fields={"x": -2, "y": True}))
    assert s.bounds == {"x": [2.0, 4.0], "y": [1.0, 1.0]}


def test_position_edges() -> None:
    int64_max = 2**63 - 1
    for ok in ({"t": "events", "p": -1, "o": -1}, {"t": "events", "p": int64_max, "o": int64_max}):
        assert check_state(LAYOUT, state(position=ok)) is None
    for bad in ({"t": "events", "p": -2, "o": 0}, {"t": "events", "p": 0, "o": int64_max + 1}, {"t": 1}):
        assert (check_state(LAYOUT, state(position=bad)) or "").startswith("position")
    assert (check_state(LAYOUT, state(seq=MAX_COUNT + 1)) or "").startswith("seq")
    assert (check_state(LAYOUT, state(watermark=MAX_TS_MS + 1)) or "").startswith("watermark")


REKEYED = Layout.of(FeatureView("v", entity="zipcode", aggregations=VIEW.aggregations))


def test_the_source_offsets_of_a_rekeyed_view_round_trip_and_are_optional() -> None:
    sources = {source_key("events", 0): 41, source_key("events", 11): 2**63 - 1, "7:other": 0}
    s = state(sources=sources)
    assert check_state(REKEYED, s) is None
    raw = s.to_json()
    assert orjson.loads(raw)["r"] == {"0:events": 41, "11:events": 2**63 - 1, "7:other": 0}
    back = EntityState.from_json(raw)
    assert back == s and back.sources == sources and back.to_json() == raw
    # without any, "r" is left out: the bytes of a state written before it, which loads as it was
    plain = state().to_json()
    assert b'"r"' not in plain and EntityState.from_json(plain).sources == {}
    assert check_state(REKEYED, EntityState.from_json(plain)) is None


@pytest.mark.parametrize(
    "sources",
    [
        [["events", 0, 41]],  # not a mapping
        {"0:events": -1},
        {"0:events": 2**63},
        {"0:events": 1.0},
        {"0:events": True},
        {"0:events": None},
        {"x" * 301: 1},
        {f"{p}:events": 1 for p in range(MAX_SOURCES + 1)},
    ],
)
def test_a_state_with_bad_source_offsets_is_refused(sources: Any) -> None:
    raw = orjson.loads(state().to_json())
    raw["r"] = sources
    loaded = decode_state(orjson.dumps(raw))
    assert isinstance(loaded, EntityState)
    problem = check_state(REKEYED, loaded) or ""
    assert problem.startswith("sources: not at most 4096 source offsets"), problem


def test_the_source_offsets_bound_is_inclusive_and_a_direct_view_keeps_none() -> None:
    full = {f"{p}:events": p for p in range(MAX_SOURCES)}
    assert check_state(REKEYED, state(sources=full)) is None
    assert (check_state(LAYOUT, state(sources={"0:events": 1})) or "").startswith("sources")


def test_a_state_of_an_unknown_format_does_not_decode() -> None:
    assert decode_state(b'{"v": 3, "w": null}') == Unreadable("does not decode: ValueError")
    assert decode_state(b'{"v": 2, "w": null}') == Unreadable("does not decode: KeyError")


def test_overflow_refusals_name_their_view_entity_field_and_total() -> None:
    engine = FeatureEngine(VIEW)
    s = engine.new_state()
    engine.apply(s, Event(entity="u1", ts=1, fields={"x": SUM_LIMIT / 2, "y": 0}))
    engine.apply(s, Event(entity="u1", ts=2, fields={"x": SUM_LIMIT / 2}))  # exactly at the limit: taken
    assert s.bounds is not None and s.bounds["x"][0] == SUM_LIMIT
    with pytest.raises(AggregateOverflow) as caught:
        engine.apply(s, Event(entity="u1", ts=3, fields={"x": -1e300}))
    assert (caught.value.view, caught.value.entity, caught.value.field) == ("v", "u1", "x")
    assert caught.value.what == "sum of magnitudes"
    # squares: four times the total of y*y may reach the limit, not pass it
    y = math.sqrt(SUM_LIMIT / 4.5)  # 4 * y*y within the limit, 5 * y*y beyond it
    engine.apply(s, Event(entity="u1", ts=4, fields={"y": y}))
    with pytest.raises(AggregateOverflow) as caught:
        engine.apply(s, Event(entity="u1", ts=5, fields={"y": y / 2}))
    assert (caught.value.view, caught.value.entity, caught.value.field) == ("v", "u1", "y")
    assert caught.value.what == "sum of squares"
    assert s.seq == 3  # the refused events changed nothing


def test_late_events_and_long_keys_are_refused_with_their_context() -> None:
    view = FeatureView("z", entity="zipcode", aggregations=[Count(window=sliding("1m"))], allowed_lateness=5)
    engine = FeatureEngine(view)
    s = engine.new_state()
    engine.apply(s, Event(entity="u", ts=100, fields={"zipcode": 7}))
    with pytest.raises(LateEvent) as caught:
        engine.apply(s, Event(entity="u", ts=94, fields={"zipcode": 7}))
    assert (caught.value.view, caught.value.entity, caught.value.ts) == ("z", "7", 94)
    assert (caught.value.watermark, caught.value.lateness_ms) == (100, 5)
    assert (
        engine.key(Event(entity="u", ts=1, fields={"zipcode": "k" * MAX_ENTITY_CHARS}))
        == "k" * MAX_ENTITY_CHARS
    )
    with pytest.raises(InvalidEvent) as refused:
        engine.key(Event(entity="u", ts=1, fields={"zipcode": "k" * (MAX_ENTITY_CHARS + 1)}))
    assert refused.value.field == "fields.zipcode"
    assert refused.value.problem == (
        f"{MAX_ENTITY_CHARS + 1} characters: longer than an entity key may be ({MAX_ENTITY_CHARS})"
    )


def test_retention_drops_the_tiles_no_acceptable_event_needs_and_folds_the_lifetime_ones() -> None:
    view = FeatureView(
        "p", aggregations=[Count(), Count(window=sliding(10, resolution=5))], allowed_lateness=3
    )
    engine = FeatureEngine(view)  # lifetime tiles of 1 ms (lateness 3 / 60), the window's of 5 ms
    s = engine.new_state()
    for ts in (1, 5, 6, 13, 17):
        engine.apply(s, Event(entity="u", ts=ts, fields={}))
    # at watermark 17 an event may be as old as 14: the lifetime keeps tiles 14.. (1, 5, 6 and 13 folded);
    # the window at 14 covers tiles 2 - 2 + 1 = 1 and 2: tile 0 (event 1) is dropped
    assert s.tiles == {"lifetime@1": [[17, [1]]], "10ms@5": [[1, [2]], [2, [1]], [3, [1]]]}
    assert s.settled == {"count_lifetime": [4]} and s.seq == 5
    assert engine.online(s) == {"count_lifetime": 5, "count_10ms": 2}  # at 17: tiles 2 and 3 (10..19)
    late = Event(entity="u", ts=14, fields={})  # the oldest acceptable: tiles 1 and 2 (5..14), so 5, 6, 13
    assert engine.apply(s, late) == {"count_lifetime": 4, "count_10ms": 3}


# ---------------------------------------------------------------- format 1 states (before issue 13)

MIGRATED = FeatureView(
    "m",
    entity="zipcode",
    aggregations=[
        Count(),
        Sum("x"),
        Var("x"),
        DistinctCount("z"),
        Last("z"),
        SinceLast(),
        Mean("x", window=sliding("1m")),
        Max("x", window=hopping("30s", "10s")),
        Std("x", window=tumbling("20s")),
        DistinctCount("z", window=sliding("1m")),
    ],
    allowed_lateness="30s",
    include_fields=False,
)
# written by the engine of 1be4455 (before issue 13) after the events of v1_events() below: e0 pruned into
# the lifetime summaries, the others buffered (with their ids: a re-keyed view)
V1 = (
    b'{"w":1096000,"q":10,"b":[[1015000,2,[null,1],"e1"],[1031000,3,[-2.0,"a"],"e2"],[1052000,4,[7.25,1.0],'
    b'"e3"],[1058000,5,[true,null],"e4"],[1059000,7,["s","c"],"e6"],[1061000,6,[1.0,"b"],"e5"],[1075000,8,'
    b'[4.0,true],"e7"],[1095000,9,[0.5,"d"],"e8"],[1096000,10,[2.0,"a"],"e9"]],"s":{"count_lifetime":[1],'
    b'"x_sum_lifetime":[3.5],"x_var_lifetime":[1,3.5,0.0],"z_distinct_lifetime":[["a"]],"z_last_lifetime":'
    b'[1000000,1,"a"],"since_last_ms":[1000000]},"a":{"count_lifetime":[10],"x_sum_lifetime":[17.25],'
    b'"x_var_lifetime":[8,2.15625,53.86718750000001],"z_distinct_lifetime":[["a",1,"b","c","d"]],'
    b'"z_last_lifetime":[1096000,10,"a"],"since_last_ms":[1096000]},"p":null,"m":{"x":[21.25,91.0625]}}'
)


def v1_events(start: int = 0, n: int = 10) -> list[Event]:
    xs = [3.5, None, -2.0, 7.25, True, 1.0, "s", 4.0, 0.5, 2.0]
    zs = ["a", 1, "a", 1.0, None, "b", "c", True, "d", "a"]
    ts = [0, 15_000, 31_000, 52_000, 58_000, 61_000, 59_000, 75_000, 95_000, 96_000]
    return [
        Event(
            event_id=f"e{i}",
            entity="u",
            ts=1_000_000 + ts[i % 10] + 100_000 * (i // 10),
            fields={"x": xs[i % 10], "z": zs[i % 10], "zipcode": 9},
        )
        for i in range(start, start + n)
    ]


def test_a_format_1_state_migrates_to_the_state_the_same_events_make() -> None:
    engine = FeatureEngine(MIGRATED)
    old = EntityState.from_json(V1)
    assert old.legacy is not None and engine.check_state(old) is None and old.legacy is None
    fresh = engine.new_state()
    for e in v1_events():
        engine.apply(fresh, e)
    assert old.watermark == fresh.watermark == 1_096_000 and old.seq == fresh.seq == 10
    assert old.bounds == fresh.bounds
    assert not diff(engine.online(old), engine.online(fresh))
    assert engine.online(old)["z_distinct_lifetime"] == 5  # "a", 1 (== 1.0 == True), "b", "c", "d"
    # the ids of the buffered events are kept (e0 was pruned from the old buffer)
    assert [engine.seen(old, e) for e in v1_events()] == [False] + [True] * 9
    # then the same vectors for the next events, in order and out of order, through JSON
    old = EntityState.from_json(old.to_json())
    assert engine.check_state(old) is None and orjson.loads(old.to_json())["v"] == 2
    for e in v1_events(10, 10):
        assert not diff(engine.apply(old, e), engine.apply(fresh, e)), e.event_id
    assert not diff(engine.online(old), engine.online(fresh))
    assert old.tiles == fresh.tiles and old.settled.keys() == fresh.settled.keys()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"b": [[1015000, 2, [None], "e1"]]}, "buffer: an item is not [ts, seq, [inputs]] of this view"),
        ({"b": {}}, "buffer: an item is not"),
        ({"w": "soon"}, "watermark: not an event time"),
        ({"w": None}, "buffer: events without a watermark"),
        ({"s": {"count_lifetime": [1]}}, "settled: not one valid summary per lifetime aggregation"),
        ({"s": []}, "settled: not one valid summary"),
    ],
)
def test_a_format_1_state_that_does_not_migrate_is_refused_saying_so(
    change: dict[str, Any], problem: str
) -> None:
    d = orjson.loads(V1)
    d.update(change)
    s = EntityState.from_json(orjson.dumps(d))
    found = FeatureEngine(MIGRATED).check_state(s) or ""
    assert found.startswith(f"format 1 state from before issue 13 could not be migrated: {problem}")
