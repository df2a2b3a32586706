"""What an aggregation's summary is made of: exact running sums, and the checks a stored summary passes.

A summary is a small JSON-able list (see :mod:`features.aggregations`); its numbers come back from a store,
so each kind of entry has a check here (a count, an event time, a finite number, a scalar, exact partials).

>>> import math
>>> acc = [0.0]
>>> for x in (1e16, 1.0, -1e16):
...     grow(acc, x, 0)
>>> math.fsum(acc), partials(acc, 0), count(MAX_COUNT + 1), scalar(float("nan"))
(1.0, True, False, False)
>>> numbers([1, True, None, "x", 2.5]), number("3"), number(False)
([1, 1.0, 2.5], None, 0.0)
"""

from __future__ import annotations

import math
from typing import Any

from features.events import MAX_TS_MS, MIN_TS_MS
from features.numeric import INT64_MAX, INT64_MIN, in_domain

__all__ = [
    "KEEP_PARTIALS",
    "MAX_COUNT",
    "MAX_PARTIALS",
    "count",
    "event_time",
    "finite",
    "grow",
    "number",
    "numbers",
    "partials",
    "position",
    "renormalise",
    "scalar",
]

NUMERIC = (int, float, bool)


def numbers(values: list[Any]) -> list[float]:
    """The numeric values (booleans as 0/1); null, strings and anything else are skipped."""
    return [float(v) if type(v) is bool else v for v in values if type(v) in NUMERIC]


def finite(x: Any) -> bool:
    """A running summary's number: an int or a finite float (not a bool, not null)."""
    return type(x) is not bool and in_domain(x)


# The largest count or sequence number a stored state may hold: far beyond any real entity (2**62 events),
# and far enough below int64 that adding to it can never make a number orjson cannot write (a stored count
# of 2**64-1 made every commit of the batch fail, forever).
MAX_COUNT = 2**62


def count(x: Any) -> bool:
    return type(x) is int and 0 <= x <= MAX_COUNT


def event_time(x: Any) -> bool:
    """An event time (within the range events may have) or None."""
    return x is None or (type(x) is int and MIN_TS_MS <= x <= MAX_TS_MS)


def position(ts: Any, seq: Any) -> bool:
    """A (ts, seq) position: both None, or an event time and a sequence number."""
    return (ts is None and seq is None) or (event_time(ts) and ts is not None and count(seq))


def scalar(x: Any) -> bool:
    """A value an event field may hold: str, bool, null, or a number in the domain (features.numeric).
    Exact types only: it checks decoded states, where orjson makes nothing else."""
    t = type(x)
    if t is str or t is bool or x is None:
        return True
    if t is float:
        return x - x == 0.0  # NaN for NaN and infinities
    return t is int and INT64_MIN <= x <= INT64_MAX


# Sums are exact: a summary keeps the sum as non-overlapping partials (Shewchuk's algorithm, as math.fsum),
# and the value is their correctly rounded total. So a sum or a mean does not depend on the order the events
# came in, on how a window splits them, or on cancellation: [1e16, 1, -1e16] sums to 1.0, not 0.0 (it did,
# and the lifetime and windowed sums of the same events differed). A sum needs a few partials (at most
# about 40 for float64's range); a stored summary with more is not one.
MAX_PARTIALS = 64


def grow(acc: list[Any], x: float, start: int) -> None:
    """Add ``x`` exactly to the partials ``acc[start:]`` (in place)."""
    i = start
    for j in range(start, len(acc)):
        y = acc[j]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            acc[i] = lo
            i += 1
        x = hi
    acc[i:] = [x]
    if i - start >= KEEP_PARTIALS:
        renormalise(acc, start)


# A sum's partials are renormalised past this many (a busy tile's exact sum kept in few floats: its state
# does not grow with its traffic; see renormalise).
KEEP_PARTIALS = 3


def renormalise(acc: list[Any], start: int) -> None:
    """Rewrite the partials ``acc[start:]`` as few as their exact total needs, the total unchanged: the
    correctly rounded total, then the correctly rounded remainder, and so on (most sums: one or two).

    >>> acc = [0.5, 1e-17, 2.0, 3.0, 1e16]
    >>> renormalise(acc, 0)
    >>> acc, math.fsum(acc) == math.fsum([0.5, 1e-17, 2.0, 3.0, 1e16])
    ([1e-17, -0.5, 1.0000000000000006e+16], True)
    """
    parts = acc[start:]
    out: list[float] = []
    while len(out) <= MAX_PARTIALS:
        hi = math.fsum(parts)  # correctly rounded: 0.0 only when the exact remainder is 0
        if not hi:
            break
        out.append(hi)
        parts.append(-hi)
    acc[start:] = out[::-1] or [0.0]


def partials(acc: Any, start: int) -> bool:
    """``acc[start:]`` are 1 to ``MAX_PARTIALS`` finite floats (the partials of an exact sum)."""
    n = len(acc) - start
    return 1 <= n <= MAX_PARTIALS and all(type(x) is float and x - x == 0.0 for x in acc[start:])


def number(value: Any) -> float | None:
    """A value as a number to aggregate (booleans as 0/1), or None for null, a string or anything else."""
    t = type(value)
    if t is float or t is int:
        return value
    if t is bool:
        return float(value)
    return None
