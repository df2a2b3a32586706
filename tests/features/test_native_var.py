"""The compiled ``renormalise`` (features/_native_exact.pxi) held to the Python one
(features.summaries.renormalise), bit for bit: the same partials, the same error. It is reached through the
hook that runs what the step runs and says whether the compiled code took it (not the Python one it falls
back to): the tests also hold that it takes what it should, or they would prove nothing about it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features import _native
from features.summaries import renormalise

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
