"""Stored states: what the checks refuse, with an independent expectation for each case; what derived fields
become when a function returns something that is not a plain scalar; errors that pickle with their context."""

from __future__ import annotations

import fractions
import math
import pickle
from typing import Any

import pytest

from features.aggregations import Count, Last, Mean, Sum, Var
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
from features.state import _SLACK, _TINY, EntityState, Layout, check_state
from features.summaries import MAX_COUNT
from features.windows import sliding

pytestmark = pytest.mark.unit

VIEW = FeatureView("v", aggregations=[Count(), Sum("x"), Var("y"), Mean("x", window=sliding("1m"))])
LAYOUT = Layout.of(VIEW)


def state(**change: Any) -> EntityState:
    """A consistent state: two events x=2, y=3 and x=4, y=-1 (sums and squares computed by hand)."""
    base: dict[str, Any] = {
        "watermark": 20,
        "seq": 2,
        "buffer": [[10, 1, [2.0, 3.0]], [20, 2, [4.0, -1.0]]],
        "settled": {"count_lifetime": [0], "x_sum_lifetime": [0.0], "y_var_lifetime": [0, 0.0, 0.0]},
        "total": {"count_lifetime": [2], "x_sum_lifetime": [6.0], "y_var_lifetime": [2, 1.0, 8.0]},
        "bounds": {"x": [6.0, 20.0], "y": [4.0, 10.0]},
    }
    base.update(change)
    return EntityState(**base)


def test_layout_of_a_view() -> None:
    assert LAYOUT.inputs == ["x", "y"] and LAYOUT.index == {"x": 0, "y": 1}
    assert [a.name for a in LAYOUT.lifetime] == ["count_lifetime", "x_sum_lifetime", "y_var_lifetime"]
    assert LAYOUT.bounded == {"x": (True, False), "y": (False, True)}


def test_a_consistent_state_passes_and_round_trips() -> None:
    s = state()
    assert check_state(LAYOUT, s) is None
    back = EntityState.from_json(s.to_json())
    assert back == s and back.size == len(s.to_json())
    # the engine agrees: the same events applied give this state's totals
    engine = FeatureEngine(VIEW)
    fresh = engine.new_state()
    for ts, x, y in ((10, 2.0, 3.0), (20, 4.0, -1.0)):
        engine.apply(fresh, Event(entity="u", ts=ts, fields={"x": x, "y": y}))
    assert fresh.total == s.total and fresh.bounds == s.bounds and engine.check_state(fresh) is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"watermark": 1.5}, "watermark: not an event time"),
        ({"seq": -1}, "seq: not a count"),
        ({"position": {"t": "e", "p": 0}}, "position: not a topic, partition and offset"),
        ({"buffer": {}}, "buffer: not a list"),
        ({"buffer": [[10, 1, [2.0]]]}, "buffer: an item is not [ts, seq, [inputs]]"),
        ({"watermark": None}, "buffer: events without a watermark"),
        ({"settled": []}, "settled: not a mapping"),
        ({"total": {"count_lifetime": [2], "x_sum_lifetime": [6.0]}}, "total.y_var_lifetime: missing"),
        ({"bounds": {"x": [6.0, float("inf")]}}, "bounds: not finite magnitudes"),
        # two values within the total one by one, beyond it together
        (
            {"bounds": {"x": [4.5, 20.0], "y": [4.0, 10.0]}},
            "buffer: values of 'x' beyond its total magnitude",
        ),
        (
            {"bounds": {"x": [6.0, 20.0], "y": [4.0, 9.5]}},
            "buffer: values of 'y' beyond its total of squares",
        ),
        # a field missing from the bounds has a total of 0: any buffered value is beyond it
        ({"bounds": {"y": [4.0, 10.0]}}, "buffer: values of 'x' beyond its total magnitude"),
        ({"bounds": {"x": [6.0, 20.0]}}, "buffer: values of 'y' beyond its total of squares"),
        (
            {
                "buffer": [],
                "settled": {"count_lifetime": [0], "x_sum_lifetime": [7.0], "y_var_lifetime": [0, 0.0, 0.0]},
            },
            "settled.x_sum_lifetime: beyond the total magnitude of 'x'",
        ),
        (
            {
                "buffer": [],
                "total": {"count_lifetime": [2], "x_sum_lifetime": [6.0], "y_var_lifetime": [2, 1.0, 11.0]},
            },
            "total.y_var_lifetime: beyond the total magnitude of 'y'",
        ),
        (
            {
                "buffer": [],
                "total": {"count_lifetime": [2], "x_sum_lifetime": [6.0], "y_var_lifetime": [2, 3.5, 8.0]},
            },
            "total.y_var_lifetime: beyond the total magnitude of 'y'",
        ),
    ],
)
def test_refused_states_say_why(change: dict[str, Any], problem: str) -> None:
    assert (check_state(LAYOUT, state(**change)) or "").startswith(problem)


def test_the_limits_are_inclusive() -> None:
    assert check_state(LAYOUT, state(watermark=MAX_TS_MS, seq=MAX_COUNT)) is None
    low = state(watermark=MIN_TS_MS, buffer=[[MIN_TS_MS, 1, [2.0, 3.0]], [MIN_TS_MS, 2, [4.0, -1.0]]])
    assert check_state(LAYOUT, low) is None


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
    # buffered x: 2 + 4 = 6 and y: 9 + 1 = 10; the lifetime summaries: sum 6, var [2, 1.0, 8.0]
    at = state(bounds={"x": [exactly(6.0), 20.0], "y": [4.0, exactly(10.0)]})
    assert check_state(LAYOUT, at) is None
    at = state(
        buffer=[], total={"count_lifetime": [2], "x_sum_lifetime": [6.0], "y_var_lifetime": [2, 3.0, 8.0]}
    )
    at.bounds = {"x": [exactly(6.0), 20.0], "y": [4.0, exactly(9.0)]}  # mean 3: its square 9 at the bound
    assert check_state(LAYOUT, at) is None
    at.total["y_var_lifetime"] = [2, 1.0, 9.0]  # M2 = 9 at the bound
    assert check_state(LAYOUT, at) is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"buffer": [[10, 1, [0.5, None]]]}, "buffer: values of 'x' beyond its total magnitude"),
        ({"buffer": [[10, 1, [None, 0.5]]]}, "buffer: values of 'y' beyond its total of squares"),
        (
            {
                "buffer": [],
                "total": {"count_lifetime": [1], "x_sum_lifetime": [0.5], "y_var_lifetime": [0, 0.0, 0.0]},
            },
            "total.x_sum_lifetime: beyond the total magnitude of 'x'",
        ),
        (
            {
                "buffer": [],
                "total": {"count_lifetime": [1], "x_sum_lifetime": [0.0], "y_var_lifetime": [1, 0.5, 0.0]},
            },
            "total.y_var_lifetime: beyond the total magnitude of 'y'",
        ),
        (
            {
                "buffer": [],
                "total": {"count_lifetime": [2], "x_sum_lifetime": [0.0], "y_var_lifetime": [2, 0.0, 0.5]},
            },
            "total.y_var_lifetime: beyond the total magnitude of 'y'",
        ),
    ],
)
def test_small_values_of_a_field_without_bounds_are_refused(change: dict[str, Any], problem: str) -> None:
    # a field missing from the bounds has totals of 0: even values far below 1 exceed them
    assert (check_state(LAYOUT, state(bounds={}, **change)) or "").startswith(problem)


def test_bounds_of_an_older_state_are_derived_from_its_buffer_and_summaries() -> None:
    # x: 2 + 4 buffered and 5 pruned (settled sum); y: 9 + 1 buffered, and settled [n=1, mean=2, M2=0]: 4
    s = state(
        bounds=None,
        settled={"count_lifetime": [1], "x_sum_lifetime": [5.0], "y_var_lifetime": [1, 2.0, 0.0]},
        total={"count_lifetime": [3], "x_sum_lifetime": [11.0], "y_var_lifetime": [3, 4 / 3, 12.67]},
    )
    assert check_state(LAYOUT, s) is None
    assert s.bounds == {"x": [11.0, 20.0], "y": [4.0, 14.0]}


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


INT64_MAX = 2**63 - 1


@pytest.mark.parametrize(
    "change",
    [
        {"position": {"t": "events", "p": -1, "o": -1}},  # -1: before the first record
        {"position": {"t": "events", "p": INT64_MAX, "o": INT64_MAX}},
        {"buffer": [[MIN_TS_MS, 0, [2.0, 3.0], "id-1"], [20, MAX_COUNT, [4.0, -1.0]]]},
        {"watermark": MAX_TS_MS, "buffer": [[MAX_TS_MS, 1, [2.0, 3.0]], [MAX_TS_MS, 2, [4.0, -1.0]]]},
    ],
)
def test_states_at_the_edges_of_what_is_valid_pass(change: dict[str, Any]) -> None:
    assert check_state(LAYOUT, state(**change)) is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"position": {"t": "events", "p": -2, "o": 0}}, "position"),
        ({"position": {"t": "events", "p": 0, "o": -2}}, "position"),
        ({"position": {"t": "events", "p": INT64_MAX + 1, "o": 0}}, "position"),
        ({"position": {"t": "events", "p": 0, "o": INT64_MAX + 1}}, "position"),
        ({"position": {"t": 1, "p": 0, "o": 0}}, "position"),
        ({"buffer": [[10, 1, [2.0, 3.0], 7]]}, "buffer: an item"),  # an event id is text
        ({"buffer": [[10, 1, [2.0, 3.0], "id", "more"]]}, "buffer: an item"),
        ({"buffer": [[10.0, 1, [2.0, 3.0]]]}, "buffer: an item"),
        ({"buffer": [[MIN_TS_MS - 1, 1, [2.0, 3.0]]]}, "buffer: an item"),
        ({"buffer": [[MAX_TS_MS + 1, 1, [2.0, 3.0]]]}, "buffer: an item"),
        ({"buffer": [[10, -1, [2.0, 3.0]]]}, "buffer: an item"),
        ({"buffer": [[10, MAX_COUNT + 1, [2.0, 3.0]]]}, "buffer: an item"),
        ({"buffer": [[10, 1.0, [2.0, 3.0]]]}, "buffer: an item"),
        ({"buffer": [[10, 1, [2.0, math.nan]]]}, "buffer: an item"),
        ({"watermark": MIN_TS_MS - 1}, "watermark"),
        ({"watermark": MAX_TS_MS + 1}, "watermark"),
        ({"seq": MAX_COUNT + 1}, "seq"),
    ],
)
def test_states_just_past_the_edges_are_refused(change: dict[str, Any], problem: str) -> None:
    assert (check_state(LAYOUT, state(**change)) or "").startswith(problem)


def test_a_stored_state_without_the_later_keys_decodes_with_their_defaults() -> None:
    old = EntityState.from_json(b'{"w": null, "q": 0, "b": [], "s": {}}')
    assert old.total == {} and old.position is None and old.bounds is None and old.size == 37


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


def test_events_are_pruned_exactly_past_the_horizon() -> None:
    view = FeatureView("p", aggregations=[Count(), Count(window=sliding(10))], allowed_lateness=0)
    engine = FeatureEngine(view)  # horizon: 10 ms behind the watermark
    s = engine.new_state()
    for ts in (1, 5, 6, 15):
        engine.apply(s, Event(entity="u", ts=ts, fields={}))
    assert [item[0] for item in s.buffer] == [5, 6, 15]  # 5 = 15 - 10 is kept, 1 is folded into settled
    assert s.settled["count_lifetime"] == [1] and s.total["count_lifetime"] == [4] and s.seq == 4
    assert engine.online(s) == {"count_lifetime": 4, "count_10ms": 2}  # at 15: events in (5, 15]
