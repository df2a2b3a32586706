"""Aggregations against plain-Python oracles written from their definitions (null, strings and booleans
included), on both paths: summaries grown one event at a time, and ``over`` a whole window at once."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features import summaries as S
from features.aggregations import (
    Aggregation,
    Count,
    DistinctCount,
    Last,
    Max,
    Mean,
    Min,
    SinceLast,
    Std,
    Sum,
    Var,
)
from features.events import MAX_TS_MS, MIN_TS_MS
from features.windows import sliding

pytestmark = pytest.mark.unit

values = st.lists(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-1000, 1000),
        st.floats(-1e6, 1e6, allow_nan=False),
        st.sampled_from(["a", "b", ""]),
    ),
    max_size=12,
)


def numeric(vs: list[Any]) -> list[float]:
    """The definition: numbers count, booleans as 0/1; null and strings are skipped."""
    return [float(v) for v in vs if isinstance(v, int | float) and not isinstance(v, str)]


def oracle(kind: str, vs: list[Any], times: list[int], t: int) -> Any:
    nums = numeric(vs)
    present = [v for v in vs if v is not None]
    if kind == "count":
        return len(present)
    if kind == "sum":
        return math.fsum(nums)
    if kind == "mean":
        return math.fsum(nums) / len(nums) if nums else None
    if kind in ("min", "max"):
        return (min if kind == "min" else max)(nums) if nums else None
    if kind in ("var", "std"):
        if len(nums) < 2:
            return None
        var = statistics.variance(nums)
        return var if kind == "var" else math.sqrt(var)
    if kind == "last":
        return present[-1] if present else None
    if kind == "distinct":
        return len({(type(v) is str, v) for v in present})
    assert kind == "since_last_ms"
    return t - max(times) if times else None


AGGREGATIONS = [Count("x"), Sum("x"), Mean("x"), Min("x"), Max("x"), Var("x"), Std("x"), Last("x")]
AGGREGATIONS += [DistinctCount("x"), SinceLast()]


def grown(agg: Aggregation, vs: list[Any], times: list[int], t: int) -> Any:
    acc = agg.empty()
    for seq, (ts, v) in enumerate(zip(times, vs, strict=True), start=1):
        agg.add(acc, ts, seq, v)
    assert agg.valid(acc)
    return agg.value(acc, t)


def close(a: Any, b: Any) -> bool:
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return a == b and type(a) is type(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


@pytest.mark.parametrize("agg", AGGREGATIONS, ids=lambda a: a.kind)
@given(vs=values)
def test_both_paths_match_the_definition(agg: Aggregation, vs: list[Any]) -> None:
    times = list(range(100, 100 + 10 * len(vs), 10))
    t = 1_000
    expected = oracle(agg.kind, vs, times, t)
    items = [[ts, seq, None] for seq, ts in enumerate(times, start=1)]
    assert close(grown(agg, vs, times, t), expected)
    assert close(agg.over(items, vs if agg.field else [], t), expected)


def test_null_handling() -> None:
    vs = [None, 2, None, "s", True, None]
    assert grown(Count(), vs, list(range(6)), 9) == 6  # without a field: every event
    assert grown(Count("x"), vs, list(range(6)), 9) == 3  # with one: the non-null values
    assert Count("x").over([[0, 1], [1, 2]], [None, None], 9) == 0
    assert grown(Mean("x"), [None, None], [1, 2], 9) is None
    assert grown(Min("x"), [None, "z"], [1, 2], 9) is None
    assert grown(Last("x"), ["a", None], [1, 2], 9) == "a"  # a null does not replace the last value
    assert Last("x").over([[1, 1], [2, 2]], ["a", None], 9) == "a"
    assert grown(DistinctCount("x"), [None, None, 1], [1, 2, 3], 9) == 1
    assert grown(SinceLast(), [None, None], [5, 7], 9) == 2  # events count, whatever their values
    assert grown(Var("x"), [3.0, None], [1, 2], 9) is None  # one number: no sample variance


def test_ties_keep_the_value_held_and_the_latest_event_wins() -> None:
    for agg in (Min("x"), Max("x")):
        value = grown(agg, [1, True, 1.0], [1, 2, 3], 9)  # all equal to 1: the first is kept
        assert value == 1 and type(value) is int
        over = agg.over([[1, 1], [2, 2], [3, 3]], [1, True, 1.0], 9)
        assert over == 1 and type(over) is int
    last = Last("x")
    acc = last.empty()
    last.add(acc, 10, 2, "later")
    last.add(acc, 10, 1, "earlier arrival at the same time")
    last.add(acc, 5, 3, "older event time")
    assert last.value(acc, 20) == "later"
    since = SinceLast()
    acc = since.empty()
    for ts in (30, 10, 30, 20):
        since.add(acc, ts, 0, None)
    assert since.value(acc, 50) == 20


def test_exact_sums_do_not_cancel() -> None:
    for agg, expected in ((Sum("x"), 1.0), (Mean("x"), 1.0 / 3)):
        assert grown(agg, [1e16, 1.0, -1e16], [1, 2, 3], 9) == expected
        assert agg.over([], [1e16, 1.0, -1e16], 9) == expected


def test_names() -> None:
    assert Sum("amount", window=sliding("1h")).name == "amount_sum_1h"
    assert Count().name == "count_lifetime"
    assert SinceLast().name == "since_last_ms"
    assert SinceLast(window=sliding("30s")).name == "since_last_ms_30s"
    assert SinceLast(name="gap").name == "gap" and Sum("x", name="total").name == "total"
    assert Sum("x").describe() == "Sum('x', Window(kind='lifetime', size_ms=0, step_ms=0), 'x_sum_lifetime')"
    assert DistinctCount("x").describe().startswith("DistinctCount('x', ")


GOOD = {
    "count": [3],
    "sum": [1.0, 2.0**60],
    "mean": [2, 4.0],
    "min": [-1.5],
    "max": [None],
    "var": [2, 1.0, 0.5, 0.0],
    "std": [2, 1, 0.5, 2.0**-60],
    "last": [5, 1, "v"],
    "distinct": [[-(2**63), -5, 0, 2**63 - 1]],
    "since_last_ms": [MAX_TS_MS],
}
BAD = {
    "count": [[], [-1], [1.0], [True], [2**62 + 1], [1, 2], (3,)],
    "sum": [[], [1], [math.inf], [0.0] * 65, (1.0,)],
    "mean": [[2], [2.0, 1.0], [-1, 1.0], [2, math.nan], (2, 4.0)],
    "min": [[], [True], [math.inf], [1.0, 2.0], ["a"], (1.0,)],
    "max": [[None, None], [math.nan]],
    "var": [
        [2, 1.0, 0.5],
        [2, 1.0, math.inf, 0.0],
        [2, None, 0.5, 0.0],
        [2.0, 1.0, 0.5, 0.0],
        (2, 1.0, 0.5, 0.0),
    ],
    "std": [[2, True, 0.5, 0.0], [2, 1.0, -0.5, 0.0], [2, 1.0, 0.5, 2.0**-50], [2, 0.0, 0.5, 1e-300]],
    "last": [[5, 1], [5, None, "v"], [None, 1, "v"], [5, 1, math.nan], [5, 1, 2**64], (5, 1, "v")],
    "distinct": [[[math.nan]], [["a"]], [[1], [2]], [(1,)], [[[1]]], ([1],), [[2, 1]], [[1, 1]], [[2**63]]],
    "since_last_ms": [[MAX_TS_MS + 1], [MIN_TS_MS - 1], [1.0], [1, 2], (1,)],
}


@pytest.mark.parametrize("agg", AGGREGATIONS, ids=lambda a: a.kind)
def test_valid_accepts_summaries_and_refuses_anything_else(agg: Aggregation) -> None:
    assert agg.valid(agg.empty())
    assert agg.valid(GOOD[agg.kind])
    for bad in BAD[agg.kind]:
        assert not agg.valid(bad), bad


def test_summary_checks_take_the_bounds_inclusively() -> None:
    assert S.event_time(MIN_TS_MS) and S.event_time(MAX_TS_MS) and S.event_time(None)
    assert not S.event_time(MIN_TS_MS - 1) and not S.event_time(MAX_TS_MS + 1) and not S.event_time(True)
    assert S.count(0) and S.count(S.MAX_COUNT) and not S.count(-1) and not S.count(S.MAX_COUNT + 1)
    assert S.position(None, None) and S.position(MIN_TS_MS, 0)
    assert not S.position(None, 0) and not S.position(0, None) and not S.position(0, -1)
    assert S.partials([0.0] * S.MAX_PARTIALS, 0) and not S.partials([0.0] * (S.MAX_PARTIALS + 1), 0)
    assert S.partials([7, 1.0], 1) and not S.partials([7], 1) and not S.partials([1, 1], 0)
    assert S.scalar(2**63 - 1) and S.scalar(-(2**63)) and not S.scalar(2**63) and not S.scalar(-(2**63) - 1)
    assert S.finite(1) and S.finite(-0.5) and not S.finite(True) and not S.finite(None)
