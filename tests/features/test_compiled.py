"""The compiled window functions (features.compiled) against the aggregations' own methods, and the exact
sums' partials kept few (features.summaries.renormalise)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
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
from features.compiled import Compiled

pytestmark = pytest.mark.unit

AGGS: list[Aggregation] = [
    Count(),
    Count("x"),
    Sum("x"),
    Mean("x"),
    Min("x"),
    Max("x"),
    Var("x"),
    Std("x"),
    Last("x"),
    SinceLast(),
    DistinctCount("x"),
    Sum("y"),
    Mean("y"),
]

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(-1e300, 1e300, allow_nan=False),
    st.sampled_from([0.1, -0.0, 1e16, -1e16, 1.0, 1, "s"]),
)
events = st.lists(st.tuples(st.integers(0, 50), values, values), max_size=30)


def by_methods(evs: list[tuple[int, Any, Any]], first_seq: int) -> list[Any]:
    accs = [a.empty() for a in AGGS]
    for seq, (t, x, y) in enumerate(evs, first_seq):
        for a, acc in zip(AGGS, accs, strict=True):
            a.add(acc, t, seq, {"x": x, "y": y}.get(a.field) if a.field else None)
    return accs


@settings(max_examples=300, deadline=None)
@given(events, events, st.integers(0, 60))
def test_compiled_functions_do_what_the_methods_do(one: Any, two: Any, t: int) -> None:
    """add (to a tile and a running copy), merge, copy and read: the same accumulators and values as each
    aggregation's add, merge and value, for every kind inlined and every kind called through its methods."""
    code = Compiled(AGGS)
    tile, other = code.new(3), code.new(4)
    run = code.copy(tile[1:])
    for seq, (ts, x, y) in enumerate(one, 1):
        code.add(tile, run, ts, seq, {"x": x, "y": y})
    for seq, (ts, x, y) in enumerate(two, 100):
        code.add(other, None, ts, seq, {"x": x, "y": y})
    a, b = by_methods(one, 1), by_methods(two, 100)
    # by repr: NaN (a square past float64, which the overflow rule refuses) equal to NaN
    assert repr(tile) == repr([3, *a]) and repr(run) == repr(a) and repr(other) == repr([4, *b])
    merged, again = code.copy(run), code.copy(run)
    code.merge_tile(merged, other)
    code.merge(again, other[1:])
    for agg, acc, acc_b in zip(AGGS, a, b, strict=True):
        agg.merge(acc, acc_b)
    assert repr(merged) == repr(a) and repr(again) == repr(a)
    assert repr(run) == repr(tile[1:])  # copies share nothing with the tile
    out: dict[str, Any] = {}
    code.read(out, merged, t)
    expected = {agg.name: agg.value(acc, t) for agg, acc in zip(AGGS, a, strict=True)}
    assert out.keys() == expected.keys() and all(same(out[k], expected[k]) for k in out)
    read_tile: dict[str, Any] = {}
    code.read_tile(read_tile, [9, *merged], t)
    assert read_tile.keys() == out.keys() and all(same(read_tile[k], out[k]) for k in out)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type (NaN equal to NaN: a variance of values near float64's limit)."""
    return type(a) is type(b) and (a == b or (a != a and b != b))


def test_ties_keep_the_float_whatever_the_order() -> None:
    """Min and Max take the float on a tie (1 and 1.0: 1.0) in either order, as the methods do: a value
    merged from tiles in another order (after a restart) must be the same JSON (it was 1 or 1.0)."""
    for first, second in ((1, 1.0), (1.0, 1)):
        code = Compiled([Min("x"), Max("x")])
        tile = code.new(0)
        code.add(tile, None, 0, 1, {"x": first})
        code.add(tile, None, 0, 2, {"x": second})
        assert tile == [0, [1.0], [1.0]] and type(tile[1][0]) is float and type(tile[2][0]) is float
        other = code.new(1)
        code.add(other, None, 0, 3, {"x": 1})
        merged = code.copy(other[1:])
        code.merge_tile(merged, tile)
        assert type(merged[0][0]) is float and type(merged[1][0]) is float
        for agg in (Min("x"), Max("x")):
            acc = agg.empty()
            agg.add(acc, 0, 1, first)
            agg.add(acc, 0, 2, second)
            assert type(acc[0]) is float


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e200, 1e200, allow_nan=False), min_size=1, max_size=60))
def test_a_sum_keeps_few_partials_and_stays_exact(xs: list[float]) -> None:
    """However many values a tile's sum grows by, its partials are renormalised past KEEP_PARTIALS (their
    exact total unchanged): the sum is the correctly rounded exact sum, in at most a few partials."""
    acc = [0.0]
    for x in xs:
        S.grow(acc, x, 0)
    total = sum(map(Fraction, xs), Fraction(0))
    assert sum(map(Fraction, acc), Fraction(0)) == total  # exact, not merely close
    assert math.fsum(acc) == math.fsum(xs)
    assert len(acc) <= S.KEEP_PARTIALS + 1 or len(acc) <= len(_minimal(total))


def _minimal(total: Fraction) -> list[float]:
    """The renormalised form of an exact total (what renormalise keeps)."""
    out: list[float] = []
    while total:
        hi = float(total)
        out.append(hi)
        total -= Fraction(hi)
    return out


def test_a_busy_tiles_sum_stays_small() -> None:
    """10,000 prices in one tile: before renormalising, a sum of two-decimal prices kept about five
    partials; it keeps at most KEEP_PARTIALS and the exact total."""
    xs = [round(0.01 * ((i * 7919) % 100_000), 2) for i in range(10_000)]
    mean = Mean("x")
    acc = mean.empty()
    for x in xs:
        mean.add(acc, 0, 0, x)
    assert len(acc) - 1 <= S.KEEP_PARTIALS
    assert sum(map(Fraction, acc[1:]), Fraction(0)) == sum(map(Fraction, xs), Fraction(0))
    assert mean.value(acc, 0) == math.fsum(xs) / len(xs)


@pytest.mark.parametrize("p", [-0.0, 0.0, 5e-324, -2.5, 1.7e308])
def test_a_sum_of_one_partial_reads_as_its_fsum(p: float) -> None:
    """The read's shortcut for one partial (``p + 0.0``) is fsum's value: -0.0 reads 0.0, as the methods."""
    aggs = [Sum("x"), Mean("x")]
    out: dict[str, Any] = {}
    Compiled(aggs).read(out, [[p], [1, p]], 0)
    want = [aggs[0].value([p], 0), aggs[1].value([1, p], 0)]
    assert repr(list(out.values())) == repr(want) == repr([math.fsum([p]), math.fsum([p])])
