"""Per-entity aggregations over an event-time window.

Each aggregation keeps a small JSON-able *summary* (a list) that it can grow one value at a time and merge
with another summary; its value is read from the summary. Values that are missing (null) are skipped;
numeric aggregations also skip strings, and count booleans as 0/1.

>>> from features.windows import sliding
>>> s = Sum("amount", window=sliding("1h"))
>>> s.name
'amount_sum_1h'
>>> acc = s.empty()
>>> for v in (1.0, 2.5, None, "x"):
...     s.add(acc, 0, 0, v)
>>> s.value(acc, 0)
3.5
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from features.events import MAX_TS_MS, MIN_TS_MS
from features.numeric import INT64_MAX, INT64_MIN, in_domain
from features.windows import Window, lifetime

__all__ = [
    "MAX_COUNT",
    "Aggregation",
    "Count",
    "DistinctCount",
    "Last",
    "Max",
    "Mean",
    "Min",
    "SinceLast",
    "Std",
    "Sum",
    "Var",
]


_NUMERIC = (int, float, bool)


def _nums(values: list[Any]) -> list[float]:
    return [float(v) if type(v) is bool else v for v in values if type(v) in _NUMERIC]


def _finite(x: Any) -> bool:
    """A running summary's number: an int or a finite float (not a bool, not null)."""
    return type(x) is not bool and in_domain(x)


# The largest count or sequence number a stored state may hold: far beyond any real entity (2**62 events),
# and far enough below int64 that adding to it can never make a number orjson cannot write (a stored count
# of 2**64-1 made every commit of the batch fail, forever).
MAX_COUNT = 2**62


def _count(x: Any) -> bool:
    return type(x) is int and 0 <= x <= MAX_COUNT


def _ts(x: Any) -> bool:
    """An event time (within the range events may have) or None."""
    return x is None or (type(x) is int and MIN_TS_MS <= x <= MAX_TS_MS)


def _at(ts: Any, seq: Any) -> bool:
    """A (ts, seq) position: both None, or an event time and a sequence number."""
    return (ts is None and seq is None) or (_ts(ts) and ts is not None and _count(seq))


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


def _grow(acc: list[Any], x: float, start: int) -> None:
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


def _partials(acc: Any, start: int) -> bool:
    n = len(acc) - start
    return 1 <= n <= MAX_PARTIALS and all(type(x) is float and x - x == 0.0 for x in acc[start:])


def _num(value: Any) -> float | None:
    t = type(value)
    if t is float or t is int:
        return value
    if t is bool:
        return float(value)
    return None


@dataclass(frozen=True)
class Aggregation:
    """An aggregation of ``field`` over ``window``; ``name`` defaults to ``<field>_<kind>_<window>``."""

    field: str | None = None
    window: Window = dataclasses.field(default_factory=lifetime)
    name: str = ""
    kind: ClassVar[str] = ""
    # which running magnitude of its field bounds this aggregation (features.engine refuses an event that
    # would take it past features.numeric.SUM_LIMIT): "sum" (sum of |x|), "square" (sum of x*x) or none
    magnitude: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not self.name:
            base = f"{self.field}_{self.kind}" if self.field else self.kind
            object.__setattr__(self, "name", f"{base}_{self.window.label}")

    def empty(self) -> list[Any]:
        raise NotImplementedError

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        raise NotImplementedError

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        """Fold ``other`` (a summary of events disjoint from ``acc``'s) into ``acc``."""
        raise NotImplementedError

    def value(self, acc: list[Any], t: int) -> Any:
        raise NotImplementedError

    def valid(self, acc: Any) -> bool:
        """True if ``acc`` is a summary this aggregation can use (a stored state is checked before use)."""
        raise NotImplementedError

    def partials(self, acc: list[Any]) -> list[float]:
        """For a ``magnitude == "sum"`` aggregation: the exact partials of the sum its summary keeps."""
        raise NotImplementedError

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        """The value over whole window at once: ``items`` are ``[ts, seq, ...]`` sorted by (ts, seq) and
        ``values`` the field's value of each. Subclasses compute it with builtins; same result as adding."""
        acc = self.empty()
        for item, v in zip(items, values if self.field else [None] * len(items), strict=True):
            self.add(acc, item[0], item[1], v)
        return self.value(acc, t)

    def describe(self) -> str:
        return f"{type(self).__name__}({self.field!r}, {self.window}, {self.name!r})"


@dataclass(frozen=True)
class Count(Aggregation):
    """Number of events in the window (with ``field``: events where it is not null)."""

    kind: ClassVar[str] = "count"

    def empty(self) -> list[Any]:
        return [0]

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) == 1 and _count(acc[0])

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        if self.field is None or value is not None:
            acc[0] += 1

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        acc[0] += other[0]

    def value(self, acc: list[Any], t: int) -> Any:
        return acc[0]

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        return len(items) if self.field is None else len(values) - values.count(None)


@dataclass(frozen=True)
class Sum(Aggregation):
    kind: ClassVar[str] = "sum"
    magnitude: ClassVar[str] = "sum"

    def empty(self) -> list[Any]:
        return [0.0]  # the partials of the sum (see _grow)

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and _partials(acc, 0)

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = _num(value)
        if v is not None:
            _grow(acc, float(v), 0)

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        for x in other:
            _grow(acc, x, 0)

    def value(self, acc: list[Any], t: int) -> Any:
        return math.fsum(acc)

    def partials(self, acc: list[Any]) -> list[float]:
        return acc

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        return math.fsum(map(float, _nums(values)))


@dataclass(frozen=True)
class Mean(Aggregation):
    kind: ClassVar[str] = "mean"
    magnitude: ClassVar[str] = "sum"

    def empty(self) -> list[Any]:
        return [0, 0.0]  # n, then the partials of the sum (see _grow)

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) >= 2 and _count(acc[0]) and _partials(acc, 1)

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = _num(value)
        if v is not None:
            acc[0] += 1
            _grow(acc, float(v), 1)

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        acc[0] += other[0]
        for x in other[1:]:
            _grow(acc, x, 1)

    def value(self, acc: list[Any], t: int) -> Any:
        return math.fsum(acc[1:]) / acc[0] if acc[0] else None

    def partials(self, acc: list[Any]) -> list[float]:
        return acc[1:]

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        nums = _nums(values)
        return math.fsum(map(float, nums)) / len(nums) if nums else None


@dataclass(frozen=True)
class Min(Aggregation):
    kind: ClassVar[str] = "min"

    def empty(self) -> list[Any]:
        return [None]

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) == 1 and (acc[0] is None or _finite(acc[0]))

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = _num(value)
        if v is not None and (acc[0] is None or v < acc[0]):
            acc[0] = v

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        self.add(acc, 0, 0, other[0])

    def value(self, acc: list[Any], t: int) -> Any:
        return acc[0]

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        nums = _nums(values)
        return min(nums) if nums else None


@dataclass(frozen=True)
class Max(Min):
    kind: ClassVar[str] = "max"

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = _num(value)
        if v is not None and (acc[0] is None or v > acc[0]):
            acc[0] = v

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        nums = _nums(values)
        return max(nums) if nums else None


@dataclass(frozen=True)
class Var(Aggregation):
    """Sample variance (``ddof=1``, as River's ``stats.Var``), by Welford's method; null below 2 values."""

    kind: ClassVar[str] = "var"
    magnitude: ClassVar[str] = "square"

    def empty(self) -> list[Any]:
        return [0, 0.0, 0.0]  # n, mean, sum of squared deviations

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) == 3 and _count(acc[0]) and _finite(acc[1]) and _finite(acc[2])

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = _num(value)
        if v is not None:
            acc[0] += 1
            delta = v - acc[1]
            acc[1] += delta / acc[0]
            acc[2] += delta * (v - acc[1])

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        n = acc[0] + other[0]
        if other[0] == 0:
            return
        delta = other[1] - acc[1]
        acc[2] += other[2] + delta * delta * acc[0] * other[0] / n
        acc[1] += delta * other[0] / n
        acc[0] = n

    def value(self, acc: list[Any], t: int) -> Any:
        return max(acc[2], 0.0) / (acc[0] - 1) if acc[0] > 1 else None

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        """Two passes with exact sums, corrected for the rounding of the mean, and 0 for equal values:
        three values of -1.78e106 had a variance of 6.2e180 when the squared deviations were taken from
        a rounded mean. Every term stays within the field's total of squares: nothing overflows."""
        nums = [float(x) for x in _nums(values)]
        n = len(nums)
        if n < 2:
            return self.value([n, 0.0, 0.0], t)
        if min(nums) == max(nums):
            return self.value([n, 0.0, 0.0], t)
        mean = math.fsum(nums) / n
        d = [x - mean for x in nums]
        s = math.fsum(d)
        return self.value([n, mean, math.fsum(x * x for x in d) - s * s / n], t)


@dataclass(frozen=True)
class Std(Var):
    kind: ClassVar[str] = "std"

    def value(self, acc: list[Any], t: int) -> Any:
        var = super().value(acc, t)
        return math.sqrt(var) if var is not None else None


@dataclass(frozen=True)
class Last(Aggregation):
    """The value of the latest event (by event time, then arrival) where the field is not null."""

    kind: ClassVar[str] = "last"

    def empty(self) -> list[Any]:
        return [None, None, None]  # ts, seq, value

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) == 3 and _at(acc[0], acc[1]) and scalar(acc[2])

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        if value is not None and (acc[0] is None or (ts, seq) > (acc[0], acc[1])):
            acc[0], acc[1], acc[2] = ts, seq, value

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        if other[0] is not None:
            self.add(acc, other[0], other[1], other[2])

    def value(self, acc: list[Any], t: int) -> Any:
        return acc[2]

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        for v in reversed(values):  # items are sorted by (ts, seq): the last non-null is the latest
            if v is not None:
                return v
        return None


@dataclass(frozen=True)
class DistinctCount(Aggregation):
    """Number of distinct non-null values (exact; the set is kept in the entity's state)."""

    kind: ClassVar[str] = "distinct"

    def empty(self) -> list[Any]:
        return [[]]

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) == 1 and type(acc[0]) is list and all(map(scalar, acc[0]))

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        if value is not None and value not in acc[0]:
            acc[0].append(value)

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        for v in other[0]:
            self.add(acc, 0, 0, v)

    def value(self, acc: list[Any], t: int) -> Any:
        return len(acc[0])

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        return len({v for v in values if v is not None})


@dataclass(frozen=True)
class SinceLast(Aggregation):
    """Milliseconds from the entity's previous event in the window to the reference time (null if none)."""

    kind: ClassVar[str] = "since_last_ms"

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(
                self,
                "name",
                "since_last_ms" if self.window.kind == "lifetime" else f"since_last_ms_{self.window.label}",
            )

    def empty(self) -> list[Any]:
        return [None]

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) == 1 and _ts(acc[0])

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        if acc[0] is None or ts > acc[0]:
            acc[0] = ts

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        if other[0] is not None:
            self.add(acc, other[0], 0, None)

    def value(self, acc: list[Any], t: int) -> Any:
        return t - acc[0] if acc[0] is not None else None

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        return t - items[-1][0] if items else None
