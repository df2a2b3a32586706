"""Per-entity aggregations over an event-time window, as mergeable accumulators.

Each aggregation keeps a small JSON-able *accumulator* (a list, made of the pieces in
:mod:`features.summaries`) per tile of its window: ``add`` grows it by one event, ``merge`` adds another
accumulator's events into it, and ``value`` reads the aggregate at a reference time. Merging the
accumulators of any split of a sequence of events gives the same value as adding them all to one: exactly
for every aggregation but the variance and the standard deviation (Chan's parallel formula: relative error
about 1e-12 on ordinary data, 1e-9 at worst on values such as ``1e15 + small deltas``, and exactly 0.0
when all the values are equal), and the distinct count beyond 64 values (an estimate, see
:mod:`features.distinct`). Values that are missing (null) are skipped; numeric aggregations also skip
strings, and count booleans as 0/1.

>>> from features.windows import sliding
>>> s = Sum("amount", window=sliding("1h"))
>>> s.name
'amount_sum_1h'
>>> acc = s.empty()
>>> for v in (1.0, 2.5, None, "x"):
...     s.add(acc, 0, 0, v)
>>> s.value(acc, 0)
3.5
>>> other = s.copy(acc)
>>> s.add(other, 0, 0, 1e16)
>>> s.merge(acc, other)
>>> s.value(acc, 0), s.value(other, 0)
(1.0000000000000008e+16, 1.0000000000000004e+16)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from features import distinct as D
from features import summaries as S
from features.summaries import MAX_COUNT, scalar
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

    def value(self, acc: list[Any], t: int) -> Any:
        raise NotImplementedError

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        """Add the events of ``other`` into ``acc`` in place (``other`` unchanged)."""
        raise NotImplementedError

    def copy(self, acc: list[Any]) -> list[Any]:
        """A copy of ``acc`` sharing nothing mutable with it (merging into it leaves ``acc`` as it was)."""
        return acc.copy()

    def from_v1(self, summary: Any) -> list[Any] | None:
        """The accumulator of a lifetime summary kept by a format-1 state (before issue 13), or None if it
        is not a valid one (its events are counted the same: only the variance and the distinct count
        changed formats)."""
        return self.copy(summary) if self.valid(summary) else None

    def valid(self, acc: Any) -> bool:
        """True if ``acc`` is a summary this aggregation can use (a stored state is checked before use)."""
        raise NotImplementedError

    def partials(self, acc: list[Any]) -> list[float]:
        """For a ``magnitude == "sum"`` aggregation: the exact partials of the sum its summary keeps."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{type(self).__name__}({self.field!r}, {self.window}, {self.name!r})"


@dataclass(frozen=True)
class Count(Aggregation):
    """Number of events in the window (with ``field``: events where it is not null)."""

    kind: ClassVar[str] = "count"

    def empty(self) -> list[Any]:
        return [0]

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) == 1 and S.count(acc[0])

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        if self.field is None or value is not None:
            acc[0] += 1

    def value(self, acc: list[Any], t: int) -> Any:
        return acc[0]

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        acc[0] += other[0]


@dataclass(frozen=True)
class Sum(Aggregation):
    """The sum of the numeric values (booleans as 0/1), exact: kept as partials, rounded once at the end."""

    kind: ClassVar[str] = "sum"
    magnitude: ClassVar[str] = "sum"

    def empty(self) -> list[Any]:
        return [0.0]  # the partials of the sum (see _grow)

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and S.partials(acc, 0)

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = S.number(value)
        if v is not None:
            S.grow(acc, float(v), 0)

    def value(self, acc: list[Any], t: int) -> Any:
        return math.fsum(acc)

    def partials(self, acc: list[Any]) -> list[float]:
        return acc

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        for x in other:
            S.grow(acc, x, 0)


@dataclass(frozen=True)
class Mean(Aggregation):
    """The mean of the numeric values (booleans as 0/1): their exact sum over their number; null if none."""

    kind: ClassVar[str] = "mean"
    magnitude: ClassVar[str] = "sum"

    def empty(self) -> list[Any]:
        return [0, 0.0]  # n, then the partials of the sum (see _grow)

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) >= 2 and S.count(acc[0]) and S.partials(acc, 1)

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = S.number(value)
        if v is not None:
            acc[0] += 1
            S.grow(acc, float(v), 1)

    def value(self, acc: list[Any], t: int) -> Any:
        return math.fsum(acc[1:]) / acc[0] if acc[0] else None

    def partials(self, acc: list[Any]) -> list[float]:
        return acc[1:]

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        acc[0] += other[0]
        for x in other[1:]:
            S.grow(acc, x, 1)


@dataclass(frozen=True)
class Min(Aggregation):
    """The smallest numeric value (booleans as 0/1; null and strings skipped); null if none."""

    kind: ClassVar[str] = "min"
    pick: ClassVar[Callable[..., Any]] = min  # Max: max

    def empty(self) -> list[Any]:
        return [None]

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) == 1 and (acc[0] is None or S.finite(acc[0]))

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = S.number(value)
        if v is not None:
            acc[0] = v if acc[0] is None else self.pick(acc[0], v)  # on a tie, the value held

    def value(self, acc: list[Any], t: int) -> Any:
        return acc[0]

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        v = other[0]
        if v is not None:
            acc[0] = v if acc[0] is None else self.pick(acc[0], v)


@dataclass(frozen=True)
class Max(Min):
    kind: ClassVar[str] = "max"
    pick: ClassVar[Callable[..., Any]] = max


@dataclass(frozen=True)
class Var(Aggregation):
    """Sample variance (``ddof=1``, as River's ``stats.Var``); null below 2 values.

    The accumulator is ``[n, mean, M2, c]``: Welford's running mean and sum of squared deviations, with the
    mean kept to twice float64's precision as ``mean + c`` (so values like ``1e15 + 0.5`` keep the digits
    their variance is made of); ``merge`` is Chan's parallel formula. All the values equal: exactly 0.0.

    >>> v = Var("x")
    >>> a, b = v.empty(), v.empty()
    >>> for x in (1e15, 1e15 + 1, 1e15 + 2):
    ...     v.add(a, 0, 0, x)
    >>> v.add(b, 0, 0, 1e15 + 3)
    >>> v.merge(a, b)
    >>> v.value(a, 0)
    1.6666666666666667
    """

    kind: ClassVar[str] = "var"
    magnitude: ClassVar[str] = "square"

    def empty(self) -> list[Any]:
        return [0, 0.0, 0.0, 0.0]  # n, mean, sum of squared deviations, the mean's compensation

    def valid(self, acc: Any) -> bool:
        if type(acc) is not list or len(acc) != 4 or not S.count(acc[0]) or not all(map(S.finite, acc[1:])):
            return False
        return acc[2] >= 0 and abs(acc[3]) <= math.ulp(acc[1])

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = S.number(value)
        if v is not None:
            n = acc[0] + 1
            d = (v - acc[1]) - acc[3]
            hi, lo = _two_sum(acc[1], acc[3] + d / n)
            acc[0], acc[1], acc[3] = n, hi, lo
            inc = d * ((v - hi) - lo)
            if inc > 0:  # never negative in exact arithmetic; rounding may make a tiny negative one
                acc[2] += inc

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        nb = other[0]
        if not nb:
            return
        na = acc[0]
        if not na:
            acc[:] = other
            return
        n = na + nb
        d = (other[1] - acc[1]) + (other[3] - acc[3])  # the first difference is exact for close means
        hi, lo = _two_sum(acc[1], acc[3] + d * (nb / n))
        acc[0], acc[1], acc[3] = n, hi, lo
        acc[2] += other[2] + d * (na * nb / n) * d  # in this order: no overflow below the total of squares

    def value(self, acc: list[Any], t: int) -> Any:
        return max(acc[2], 0.0) / (acc[0] - 1) if acc[0] > 1 else None

    def from_v1(self, summary: Any) -> list[Any] | None:
        if type(summary) is list and len(summary) == 3:
            acc = [*summary, 0.0]
            return acc if self.valid(acc) else None
        return None


def _two_sum(a: float, b: float) -> tuple[float, float]:
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e == a + b`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@dataclass(frozen=True)
class Std(Var):
    """Sample standard deviation: the square root of :class:`Var`."""

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
        return type(acc) is list and len(acc) == 3 and S.position(acc[0], acc[1]) and scalar(acc[2])

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        if value is not None and (acc[0] is None or (ts, seq) > (acc[0], acc[1])):
            acc[0], acc[1], acc[2] = ts, seq, value

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        if other[0] is not None and (acc[0] is None or (other[0], other[1]) > (acc[0], acc[1])):
            acc[0], acc[1], acc[2] = other[0], other[1], other[2]

    def value(self, acc: list[Any], t: int) -> Any:
        return acc[2]


@dataclass(frozen=True)
class DistinctCount(Aggregation):
    """Number of distinct non-null values (``1 == 1.0 == True``, ``"1" != 1``): exact up to 64 distinct
    values, beyond an estimate by a HyperLogLog sketch (relative standard error about 3.25%; the state keeps
    at most 64 hashes or a sketch of 1,064 bytes, whatever the cardinality). See :mod:`features.distinct`."""

    kind: ClassVar[str] = "distinct"

    def empty(self) -> list[Any]:
        return D.empty()

    def valid(self, acc: Any) -> bool:
        return D.valid(acc)

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        D.add(acc, value)

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        D.merge(acc, other)

    def copy(self, acc: list[Any]) -> list[Any]:
        return D.copy(acc)

    def value(self, acc: list[Any], t: int) -> Any:
        return D.value(acc)

    def from_v1(self, summary: Any) -> list[Any] | None:
        """A format-1 summary held the values themselves: ``[[v1, v2, ...]]``; they are hashed."""
        if type(summary) is not list or len(summary) != 1 or type(summary[0]) is not list:
            return None
        if not all(map(scalar, summary[0])):
            return None
        acc = D.empty()
        for v in summary[0]:
            D.add(acc, v)
        return acc


@dataclass(frozen=True)
class SinceLast(Aggregation):
    """Milliseconds from the latest event time in the window to the reference time: ``max(0, t - max_ts)``
    (0 when an event applied before has a later time), null if none."""

    kind: ClassVar[str] = "since_last_ms"

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(
                self,
                "name",
                "since_last_ms" if self.window.kind == "lifetime" else f"since_last_ms_{self.window.label}",
            )

    def empty(self) -> list[Any]:
        return [None]  # the latest event time

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) == 1 and S.event_time(acc[0])

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        if acc[0] is None or ts > acc[0]:
            acc[0] = ts

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        if other[0] is not None and (acc[0] is None or other[0] > acc[0]):
            acc[0] = other[0]

    def value(self, acc: list[Any], t: int) -> Any:
        return max(0, t - acc[0]) if acc[0] is not None else None
