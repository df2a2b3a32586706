"""The compiled ``renormalise`` and variance's value (features/_native_exact.pxi) held to the Python ones
(features.summaries.renormalise, aggregations.Var.value / Std.value), bit for bit: the same partials, the
same value (``repr``: its type, -0.0, NaN), the same error. Each is reached through the hook that runs what
the step runs and says whether the compiled code took it (not the Python one it falls back to): the
tests also hold that it takes what it should, or they would prove nothing about it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features import _native
from features.aggregations import Std, Var
from features.definitions import FeatureView
from features.engine import FeatureEngine
from features.events import Event
from features.summaries import MAX_COUNT, renormalise
from features.windows import hopping, sliding

pytestmark = pytest.mark.unit

TINY = 5e-324
MAX = 1.7976931348623157e308
# zeros, cancelling pairs, subnormals, the smallest normal, 1e-153 (squares at the subnormals), 1e150 (the
# scaled split), float64's top
EDGES = [0.0, -0.0, 1.0, -1.0, 0.1, 1e16, -1e16, 1e15, TINY, -TINY, 2.0**-1022, 3 * 2.0**-1022]
EDGES += [1e-153, 1e150, -1e150, 1e300, -1e300, MAX, -MAX]
FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64) | st.sampled_from(EDGES)
ANY_FLOAT = FINITE | st.sampled_from([math.inf, -math.inf, math.nan])


def outcome(f: Callable[[], Any]) -> tuple[str, str]:
    """What ``f()`` gives: its value's repr, or its error's type and message."""
    try:
        return "value", repr(f())
    except Exception as e:  # the same error both ways is what is asserted
        return type(e).__name__, str(e)


def renormalised(parts: list[Any], start: int) -> tuple[tuple[str, str], list[str], bool]:
    """Python's and the compiled renormalise's outcomes on copies of ``[7] * start + parts``."""
    py, c = [7] * start + list(parts), [7] * start + list(parts)
    expected = outcome(lambda: renormalise(py, start))
    compiled = [False]

    def run() -> None:
        compiled[0] = _native._renormalise_for_test(c, start)

    got = outcome(run)
    assert got == expected
    assert [repr(x) for x in c] == [repr(x) for x in py]  # also where it raised: nothing written
    return expected, [repr(x) for x in c], compiled[0]


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(parts=st.lists(ANY_FLOAT, max_size=12), start=st.integers(0, 2))
@example(parts=[0.5, 1e-17, 2.0, 3.0, 1e16], start=0)
@example(parts=[1e-16, 1.0, 1e16], start=1)  # fsum's half-even correction across partials
@example(parts=[1.7976931348623157e308, 1.7976931348623157e308], start=0)  # intermediate overflow
@example(parts=[1.7976931348623157e308, 9.979201547673599e291], start=0)  # overflow at a half ulp
@example(parts=[math.inf, 1.0], start=0)  # -inf + inf in fsum, on its second call
@example(parts=[math.nan], start=2)
@example(parts=[], start=0)
@example(parts=[TINY, -TINY, TINY], start=0)
def test_renormalise_is_the_python_one(parts: list[float], start: int) -> None:
    """The same partials or the same error; compiled for every finite input the Python one does not refuse
    (its fallback only for what the Python one raises on or would not see from a sum)."""
    (kind, _), _, compiled = renormalised(parts, start)
    if all(math.isfinite(x) for x in parts):
        assert compiled == (kind == "value")
    else:
        assert not compiled


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    base=st.sampled_from([1.0, 1e15, 1e16, 1e-153, 1e150, 123.456, TINY, 1e300]),
    deltas=st.lists(st.integers(-(2**40), 2**40) | FINITE, min_size=1, max_size=60),
)
def test_renormalise_on_the_partials_of_real_sums(base: float, deltas: list[Any]) -> None:
    """Partials as a sum leaves them before it renormalises (Shewchuk's, as summaries.grow, kept to up to
    eight; each list compared, then renormalised by Python for the next value): many cancelling, some
    with long tails."""
    acc = [0.0]
    for d in deltas:
        x = base + d * base * 2.0**-50 if type(d) is int else d
        parts = []
        for y in acc:  # the partials of acc + x (summaries.grow's loop)
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                parts.append(lo)
            x = hi
        parts.append(x)
        if not all(map(math.isfinite, parts)):
            return
        (kind, _), acc_reprs, compiled = renormalised(parts, 0)
        assert compiled == (kind == "value")
        if kind != "value":
            return
        acc = parts if len(parts) < 8 else [float(r) for r in acc_reprs]


# values for a variance: what data has, and the extremes (each family one kind of data)
def values(family: str, draw_base: float, ints: list[int], floats: list[float]) -> list[float]:
    if family == "near":  # 1e15 + small deltas: a huge sum of squares, a tiny variance
        return [draw_base + i for i in ints]
    if family == "equal":
        return [draw_base] * len(ints)
    if family == "scaled":  # one value's deltas at the value's own scale
        return [draw_base * (1 + i * 2.0**-30) for i in ints]
    if family == "mixed":  # mixed signs and magnitudes
        return [f * (-1) ** i for i, f in zip(ints, floats, strict=False)]
    return floats


BASES = st.sampled_from(
    [1.0, 0.1, 1e15, -1e15, 3.5e9, 1e-153, -1e-153, 1e-300, TINY, 1e150, -1e152, 1e100, 7e-5, 2.0**-1022]
)


def built(agg: Var, xs: list[float], cuts: list[int]) -> list[Any] | None:
    """``xs`` added to accumulators split at ``cuts`` and merged (as a window's tiles), or None where the
    values are beyond what a variance may see (squares past float64: the engine refuses their events)."""
    accs = []
    bounds = sorted({0, len(xs), *(c % (len(xs) + 1) for c in cuts)})
    try:
        for lo, hi in itertools.pairwise(bounds):
            a = agg.empty()
            for x in xs[lo:hi]:
                agg.add(a, 0, 0, x)
            accs.append(a)
        acc = agg.empty()
        for a in accs:
            agg.merge(acc, a)
    except (OverflowError, ValueError):
        return None
    return acc


def compare(acc: list[Any]) -> bool:
    """Var and Std, compiled (where it takes them) and Python, the same outcome; whether compiled."""
    took = []
    for agg in (Var("x"), Std("x")):
        expected = outcome(lambda a=agg: a.value(acc, 0))  # type: ignore[misc]
        got = outcome(lambda a=agg: _native._var_value_for_test(acc, type(a) is Std)[1])  # type: ignore[misc]
        assert got == expected, (acc, type(agg).__name__)
        took.append(expected[0] == "value" and _native._var_value_for_test(acc, type(agg) is Std)[0])
    assert took[0] == took[1]  # the same route for both: Std is the square root of the same variance
    return took[0]


@settings(max_examples=1200, deadline=None, derandomize=True)
@given(
    family=st.sampled_from(["near", "equal", "scaled", "mixed", "any"]),
    base=BASES,
    ints=st.lists(st.integers(-1000, 1000), max_size=40),
    floats=st.lists(FINITE, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=4),
)
@example(family="near", base=1e15, ints=[0, 1, 2, 3], floats=[], cuts=[3])  # the docstring's 1.666...
@example(family="equal", base=1e-153, ints=[0] * 7, floats=[], cuts=[2])  # the 2**-1070 noise rule
@example(family="equal", base=0.1, ints=[0] * 9, floats=[], cuts=[])
@example(family="any", base=1.0, ints=[], floats=[1e300, -1e300], cuts=[])
@example(family="mixed", base=1.0, ints=[1, 2, 3], floats=[1e-300, 5e-324, 1e-310], cuts=[1])  # subnormal
@example(family="mixed", base=1.0, ints=[1, 2], floats=[1e152, 1.2e152], cuts=[])  # near the top
def test_the_variance_of_built_accumulators(
    family: str, base: float, ints: list[int], floats: list[float], cuts: list[int]
) -> None:
    acc = built(Var("x"), values(family, base, ints, floats), cuts)
    if acc is not None:
        compare(acc)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    base=st.sampled_from([1.0, 0.1, 1e15, -1e15, 123.456, 7e-5, 1e8, -3e-8]),
    ints=st.lists(st.integers(-(10**6), 10**6), min_size=2, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=4),
)
def test_ordinary_data_is_compiled(base: float, ints: list[int], cuts: list[int]) -> None:
    """Data of ordinary magnitudes never falls back to the Python value (the compiled one is what runs)."""
    acc = built(Var("x"), [base * (1 + i * 1e-7) for i in ints], cuts)
    assert acc is not None
    assert compare(acc)


PARTIALS = st.lists(FINITE, min_size=1, max_size=5)
COUNTS = st.integers(0, MAX_COUNT) | st.sampled_from([0, 1, 2, 3, 2**32 - 1, 2**32, 2**32 + 1, MAX_COUNT])


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(n=COUNTS, sums=PARTIALS, squares=PARTIALS)
@example(n=2, sums=[1.0], squares=[1.7976931348623157e308])  # the quotient at float64's top
@example(n=2, sums=[0.0], squares=[1.7976931348623157e308, 9.979201547673598e291])
@example(n=2**32 - 1, sums=[1.0], squares=[3.0])  # the widest n * (n - 1) compiled
@example(n=3, sums=[-1.0], squares=[5.0])
@example(n=2, sums=[0.0], squares=[2.0**53, 1.0])  # a tie, to even: down
@example(n=2, sums=[0.0], squares=[2.0**53, 3.0])  # a tie, to even: up
@example(n=2, sums=[0.0], squares=[2.0**53, 1.0, 2.0**-30])  # just past a tie (the sticky bit): up
@example(n=2, sums=[0.0], squares=[2.0**53, 1.0, -(2.0**-30)])  # just below: down
@example(n=3, sums=[-1e-200], squares=[1e-300])
def test_the_variance_of_crafted_states(n: int, sums: list[float], squares: list[float]) -> None:
    """Any accumulator a stored state may hold (``Var.valid``): the same value, or the same error (an
    overflow at float64's top is the Python value's, raised the same)."""
    acc = [n, sums, squares]
    if Var("x").valid(acc):
        compare(acc)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    n=st.integers(-3, 2**70) | st.sampled_from([True, 2.0, None]),
    sums=st.lists(ANY_FLOAT, max_size=3),
    squares=st.lists(ANY_FLOAT, max_size=3),
)
@example(n=2, sums=[0.0], squares=[MAX, MAX])  # past float64: OverflowError from int / int
@example(n=5, sums=[1.0, math.nan], squares=[2.0])
@example(n=5, sums=[1.0], squares=[math.inf])
def test_the_variance_of_anything(n: Any, sums: list[float], squares: list[float]) -> None:
    """Not valid states (NaN, infinities, no partials, a count not an int): the same as Python, NaN where
    it gives NaN."""
    compare([n, sums, squares])
    compare([n, tuple(sums), squares])


def test_which_the_compiled_value_leaves_to_python() -> None:
    """The noise rule's region, a count past 2**32, partials spread too wide, a subnormal variance: the
    Python value (the compiled one answers everything else, above)."""
    for acc in (
        built(Var("x"), [1e-153] * 5 + [1.1e-153], []),
        [2**32, [1.0], [3.0]],
        [3, [1e300, 1.0], [1.0]],
        [2, [0.0], [1e-310]],
    ):
        assert acc is not None
        assert not compare(acc)
    assert compare([2**32 - 1, [1.0], [3.0]])
    assert _native._var_value_for_test([1, [1.0], [1.0]], False) == (True, None)


def test_the_step_computes_the_same_variances() -> None:
    """Through the compiled step (the vector and ``online``) against the generic path, on data whose
    variance is hard: 1e15 + deltas, equal values, 1e-153 (the noise rule), 1e150 (Dekker's scaled split)."""
    view = FeatureView(
        name="v",
        aggregations=[
            Var("x", window=hopping("30m", "5m")),
            Std("x", window=sliding("10m")),
            Std("x"),
            Var("y"),
        ],
        ttl="7d",
        allowed_lateness="5m",
    )
    native, generic = FeatureEngine(view, native=True), FeatureEngine(view, fused=False, native=False)
    assert native.path == "native"
    sn, sg = native.new_state(), generic.new_state()
    for i in range(600):
        base = [1e15, 0.1, 1e-153, 1e150, 7.0][(i // 120) % 5]
        fields = {"x": base + (i % 7) * (base * 2.0**-45 if base > 1 else 1.0), "y": base}
        e = Event(event_id=f"e{i}", entity="a", ts=1_700_000_000_000 + i * 20_000, fields=fields)
        assert repr(native.apply(sn, e)) == repr(generic.apply(sg, e))
        assert repr(native.online(sn)) == repr(generic.online(sg))
    assert sn.to_json() == sg.to_json()
