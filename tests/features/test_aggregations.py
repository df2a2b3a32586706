"""Aggregations against plain-Python oracles written from their definitions (null, strings and booleans
included): accumulators grown one event at a time, and merged from any split of the events."""

from __future__ import annotations

import copy
import math
import statistics
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
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
from features.numeric import INT64_MAX, INT64_MIN, SUM_LIMIT
from features.windows import sliding

pytestmark = pytest.mark.unit

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.sampled_from([INT64_MIN, INT64_MIN + 1, INT64_MAX - 1, INT64_MAX, 0, -1]),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, -0.0, 1e150, -1e150]),
    st.sampled_from(["a", "b", "", "1"]),
)
values = st.lists(scalars, max_size=12)


def numeric(vs: list[Any]) -> list[float]:
    """The definition: numbers count, booleans as 0/1; null and strings are skipped."""
    return [float(v) for v in vs if isinstance(v, int | float) and not isinstance(v, str)]


def acceptable(agg: Aggregation, vs: list[Any]) -> bool:
    """Whether the engine's overflow rule would accept these values for ``agg`` (features.engine)."""
    nums = numeric(vs)
    if agg.magnitude == "sum":
        return sum(abs(x) for x in nums) <= SUM_LIMIT  # overflows to inf, not an error
    if agg.magnitude == "square":
        return 4.0 * sum(x * x for x in nums) <= SUM_LIMIT
    return True


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
        latest = max(
            ((ts, i) for i, (ts, v) in enumerate(zip(times, vs, strict=True)) if v is not None), default=None
        )
        return None if latest is None else vs[latest[1]]
    if kind == "distinct":
        return len({(type(v) is str, v) for v in present})
    assert kind == "since_last_ms"
    return max(0, t - max(times)) if times else None


AGGREGATIONS = [Count("x"), Sum("x"), Mean("x"), Min("x"), Max("x"), Var("x"), Std("x"), Last("x")]
AGGREGATIONS += [DistinctCount("x"), SinceLast(), Count()]


def grown(agg: Aggregation, vs: list[Any], times: list[int], t: int, first_seq: int = 1) -> Any:
    return agg.value(accumulated(agg, vs, times, first_seq), t)


def accumulated(agg: Aggregation, vs: list[Any], times: list[int], first_seq: int = 1) -> list[Any]:
    acc = agg.empty()
    for seq, (ts, v) in enumerate(zip(times, vs, strict=True), start=first_seq):
        agg.add(acc, ts, seq, v if agg.field else None)
    assert agg.valid(acc)
    return acc


def close(a: Any, b: Any) -> bool:
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return a == b and type(a) is type(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)


def exact(a: Any, b: Any) -> bool:
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("agg", AGGREGATIONS, ids=lambda a: a.name)
@settings(deadline=None)
@given(vs=values)
def test_adding_matches_the_definition(agg: Aggregation, vs: list[Any]) -> None:
    assume(acceptable(agg, vs))
    times = list(range(100, 100 + 10 * len(vs), 10))
    t = 1_000
    expected = oracle(agg.kind, vs if agg.field else [0] * len(vs), times, t)
    assert close(grown(agg, vs, times, t), expected)


def parts_of(agg: Aggregation, vs: list[Any], times: list[int], cuts: list[int]) -> list[list[Any]]:
    bounds = [0, *sorted(c % (len(vs) + 1) for c in cuts), len(vs)]
    return [accumulated(agg, vs[a:b], times[a:b], first_seq=a + 1) for a, b in pairwise(bounds)]


def merged(agg: Aggregation, parts: list[list[Any]], right: bool) -> list[Any]:
    """The parts merged in order, folding from the left (``acc += next``) or the right (``part += rest``);
    checks that a merged accumulator is left unchanged."""
    if not right:
        acc = agg.copy(parts[0])
        for p in parts[1:]:
            before = copy.deepcopy(p)
            agg.merge(acc, p)
            assert p == before
    else:
        acc = agg.copy(parts[-1])
        for p in reversed(parts[:-1]):
            into = agg.copy(p)
            before = copy.deepcopy(acc)
            agg.merge(into, acc)
            assert acc == before
            acc = into
    assert agg.valid(acc)
    return acc


@pytest.mark.parametrize("agg", AGGREGATIONS, ids=lambda a: a.name)
@settings(max_examples=150, deadline=None)
@given(
    vs=st.lists(scalars, max_size=40),
    times=st.lists(st.integers(-(10**6), 10**6), min_size=40, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=5),
    t=st.integers(-(10**6), 10**6),
)
def test_merging_any_split_equals_adding_everything(
    agg: Aggregation, vs: list[Any], times: list[int], cuts: list[int], t: int
) -> None:
    assume(acceptable(agg, vs))
    times = times[: len(vs)]  # any order: out-of-order events, ties
    whole = grown(agg, vs, times, t)
    parts = parts_of(agg, vs, times, cuts)
    for right in (False, True):
        value = agg.value(merged(agg, parts, right), t)
        assert (close if agg.kind in ("var", "std") else exact)(value, whole), (value, whole)
    expected = oracle(agg.kind, vs if agg.field else [0] * len(vs), times, t)
    assert close(whole, expected)
    if agg.kind == "var" and expected is not None:  # against the definition within 1e-9 too
        assert math.isclose(agg.value(merged(agg, parts, False), t), expected, rel_tol=1e-9, abs_tol=1e-300)


@pytest.mark.parametrize("agg", [Var("x"), Std("x")], ids=lambda a: a.kind)
@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([1e15, -1e15, 1e9 + 0.1, -123456.789, 1e100, 3.0]),
    steps=st.lists(st.sampled_from([0, 0, 1, -1, 2, 3, -5, 8]), min_size=1, max_size=30),
    cuts=st.lists(st.integers(0, 30), max_size=4),
)
def test_near_constant_values(agg: Aggregation, base: float, steps: list[int], cuts: list[int]) -> None:
    """``1e15 + small deltas`` (and other bases, the deltas a few units in the last place or more): within
    1e-9 of the exact variance (statistics), whatever the split; all equal: exactly 0.0."""
    unit = max(math.ulp(base), 0.125)
    vs: list[Any] = [base + k * unit for k in steps]
    times = list(range(len(vs)))
    if len(vs) > 1:
        var = statistics.variance(vs)
        expected = var if agg.kind == "var" else math.sqrt(var)
    else:
        expected = None
    parts = parts_of(agg, vs, times, cuts)
    for value in (grown(agg, vs, times, 0), agg.value(merged(agg, parts, False), 0)):
        if expected is None:
            assert value is None
        elif len(set(vs)) == 1:
            assert value == 0.0
        else:
            assert math.isclose(value, expected, rel_tol=1e-9), (value, expected)


@pytest.mark.parametrize("agg", [Var("x"), Std("x")], ids=lambda a: a.kind)
@settings(deadline=None)
@given(
    x=st.floats(-1e150, 1e150, allow_nan=False) | st.integers(-(2**53), 2**53),
    n=st.integers(2, 30),
    cuts=st.lists(st.integers(0, 30), max_size=4),
)
@example(x=1.1164909357988732e-153, n=2, cuts=[])  # the low parts of the squares underflowed: 5e-324
def test_equal_values_have_exactly_zero_variance(agg: Aggregation, x: float, n: int, cuts: list[int]) -> None:
    vs: list[Any] = [x] * n
    times = list(range(n))
    assert grown(agg, vs, times, 0) == 0.0
    parts = parts_of(agg, vs, times, cuts)
    assert agg.value(merged(agg, parts, False), 0) == 0.0
    assert agg.value(merged(agg, parts, True), 0) == 0.0
    # two tiles of 1e9 + 0.1, each grown alone, merged
    a, b = accumulated(agg, [1e9 + 0.1] * 3, [0, 1, 2]), accumulated(agg, [1e9 + 0.1] * 5, [3, 4, 5, 6, 7])
    agg.merge(a, b)
    assert agg.value(a, 0) == 0.0


def test_null_handling() -> None:
    vs = [None, 2, None, "s", True, None]
    assert grown(Count(), vs, list(range(6)), 9) == 6  # without a field: every event
    assert grown(Count("x"), vs, list(range(6)), 9) == 3  # with one: the non-null values
    assert grown(Count("x"), [None, None], [0, 1], 9) == 0
    assert grown(Mean("x"), [None, None], [1, 2], 9) is None
    assert grown(Min("x"), [None, "z"], [1, 2], 9) is None
    assert grown(Last("x"), ["a", None], [1, 2], 9) == "a"  # a null does not replace the last value
    assert grown(DistinctCount("x"), [None, None, 1], [1, 2, 3], 9) == 1
    assert grown(SinceLast(), [None, None], [5, 7], 9) == 2  # events count, whatever their values
    assert grown(Var("x"), [3.0, None], [1, 2], 9) is None  # one number: no sample variance


def test_ties_keep_the_value_held_and_the_latest_event_wins() -> None:
    for agg in (Min("x"), Max("x")):
        for order in ([1, True, 1.0], [1.0, 1, True], [1, 1]):  # all equal to 1: a float if any is one
            value = grown(agg, order, [1, 2, 3][: len(order)], 9)
            assert value == 1 and type(value) is (int if order == [1, 1] else float), order
        left, right = accumulated(agg, [1], [1]), accumulated(agg, [True, 1.0], [2, 3], first_seq=2)
        agg.merge(left, right)  # in either order of merging: the float (the same JSON after a restart)
        assert agg.value(left, 9) == 1 and type(agg.value(left, 9)) is float
        left, right = accumulated(agg, [1], [1]), accumulated(agg, [True, 1.0], [2, 3], first_seq=2)
        agg.merge(right, left)
        assert type(agg.value(right, 9)) is float
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
    # an out-of-order event's tile may hold a later event: the gap is 0, never negative
    assert since.value(acc, 25) == 0 and since.value(acc, 30) == 0 and since.value(since.empty(), 5) is None


def test_exact_sums_do_not_cancel() -> None:
    for agg, expected in ((Sum("x"), 1.0), (Mean("x"), 1.0 / 3)):
        assert grown(agg, [1e16, 1.0, -1e16], [1, 2, 3], 9) == expected
        for cut in (1, 2):
            left = accumulated(agg, [1e16, 1.0, -1e16][:cut], [1, 2, 3][:cut])
            agg.merge(left, accumulated(agg, [1e16, 1.0, -1e16][cut:], [1, 2, 3][cut:]))
            assert agg.value(left, 9) == expected


def test_names() -> None:
    assert Sum("amount", window=sliding("1h")).name == "amount_sum_1h"
    assert Count().name == "count_lifetime"
    assert SinceLast().name == "since_last_ms"
    assert SinceLast(window=sliding("30s")).name == "since_last_ms_30s"
    assert SinceLast(name="gap").name == "gap" and Sum("x", name="total").name == "total"
    assert Sum("x").describe().startswith("Sum('x', Window(kind='lifetime'")
    assert Sum("x").describe().endswith(", 'x_sum_lifetime')")
    assert DistinctCount("x").describe().startswith("DistinctCount('x', ")


GOOD = {
    "count": [3],
    "sum": [1.0, 2.0**60],
    "mean": [2, 4.0],
    "min": [-1.5],
    "max": [None],
    "var": [2, [1.0], [0.5]],
    "std": [2, [-1.0, 2.0**60], [2.0**-60, 4.0]],
    "last": [5, 1, "v"],
    "distinct": [[-(2**63), -5, 0, 2**63 - 1]],
    "since_last_ms": [MAX_TS_MS],
}
BAD: dict[str, list[Any]] = {
    "count": [[], [-1], [1.0], [True], [2**62 + 1], [1, 2], (3,)],
    "sum": [[], [1], [math.inf], [0.0] * 65, (1.0,)],
    "mean": [[2], [2.0, 1.0], [-1, 1.0], [2, math.nan], (2, 4.0)],
    "min": [[], [True], [math.inf], [1.0, 2.0], ["a"], (1.0,)],
    "max": [[None, None], [math.nan]],
    "var": [
        [2, 1.0, 0.5],
        [2, [1.0], [math.inf]],
        [2, [None], [0.5]],
        [2.0, [1.0], [0.5]],
        (2, [1.0], [0.5]),
        [2, [1.0], [-0.5]],
        [2, [1.0], []],
        [2, [1.0], [0.5], 0.0],
    ],
    "std": [[2, [True], [0.5]], [2, (1.0,), [0.5]], [2, [1.0], [0.5] * 65], [-1, [1.0], [0.5]]],
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
