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
        if v is not None:  # -0.0 as 0.0: a tie of the two zeros must not depend on the merge order
            acc[0] = _pick(self.pick, acc[0], v + 0.0 if type(v) is float else v)

    def value(self, acc: list[Any], t: int) -> Any:
        return acc[0]

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        v = other[0]
        if v is not None:
            acc[0] = _pick(self.pick, acc[0], v)


def _pick(pick: Callable[..., Any], held: Any, v: Any) -> Any:
    """``pick`` (min or max) of the held value and ``v``; on a tie (``5 == 5.0``) the float, whatever the
    order: a value computed from tiles merged in another order (after a restart) is the same JSON."""
    if held is None:
        return v
    if v == held:
        return v if type(v) is float else held
    return pick(held, v)


@dataclass(frozen=True)
class Max(Min):
    kind: ClassVar[str] = "max"
    pick: ClassVar[Callable[..., Any]] = max


@dataclass(frozen=True)
class Var(Aggregation):
    """Sample variance (``ddof=1``, as River's ``stats.Var``); null below 2 values.

    Exact, so that a variance depends only on the values, never on the order they came in or on how the
    tiles of a window were merged (a value computed from a cached merge and the same value computed again
    from the stored tiles after a restart must be the same bits: a re-emitted feature record is identical).
    The accumulator is ``[n, [partials of the sum of x], [partials of the sum of x*x]]``, both sums exact
    (``x*x`` split exactly into two floats, Dekker's product); the value is the exact
    ``(n * sum(x*x) - sum(x)**2) / (n * (n - 1))`` in integers, correctly rounded once: the values of
    ``1e15 + small deltas`` keep their variance, and equal values have exactly 0.0. (Values below about
    1e-146 in magnitude lose the low bits of their squares to underflow, the same way in any order.)

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
        return [0, [0.0], [0.0]]  # n, the exact sum of x, the exact sum of x*x

    def copy(self, acc: list[Any]) -> list[Any]:
        return [acc[0], acc[1][:], acc[2][:]]

    def valid(self, acc: Any) -> bool:
        return (
            type(acc) is list
            and len(acc) == 3
            and S.count(acc[0])
            and type(acc[1]) is list
            and type(acc[2]) is list
            and S.partials(acc[1], 0)
            and S.partials(acc[2], 0)
            and _total(acc[2]) >= 0.0
        )

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = S.number(value)
        if v is not None:
            x = float(v)
            acc[0] += 1
            S.grow(acc[1], x, 0)
            hi, lo = _square(x)
            S.grow(acc[2], hi, 0)
            if lo:
                S.grow(acc[2], lo, 0)

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        if not other[0]:
            return
        acc[0] += other[0]
        for part, into in ((other[1], acc[1]), (other[2], acc[2])):
            for x in part:
                if x:
                    S.grow(into, x, 0)

    def value(self, acc: list[Any], t: int) -> Any:
        n = acc[0]
        if n < 2:
            return None
        try:
            a, ea = _exact(acc[1])  # sum of x = a * 2**ea
            b, eb = _exact(acc[2])  # sum of x*x = b * 2**eb
        except (OverflowError, ValueError):  # squares past float64: the overflow rule refuses their events
            return math.nan
        m = min(eb, 2 * ea)
        num = (n * b << (eb - m)) - (a * a << (2 * ea - m))  # (n * sum(x*x) - sum(x)**2) / 2**m
        if num <= 0:
            return 0.0
        # below float64's normal range a square's low part rounds (at most 2**-1070 per value, generously):
        # n * sum(x*x) - sum(x)**2 within n * n * 2**-1070 is that noise, not spread (equal values of about
        # 1e-153 gave 5e-324, not 0.0). Out of reach of any data above the subnormals (num >= 1 there).
        s = m + 1070
        if (num << s if s >= 0 else num) <= (n * n if s >= 0 else n * n << -s):
            return 0.0
        den = n * (n - 1)
        return num / (den << -m) if m < 0 else (num << m) / den  # int / int: correctly rounded

    def partials(self, acc: list[Any]) -> list[float]:
        """The partials of the sum of squares (what the overflow rule bounds)."""
        return acc[2]

    def from_v1(self, summary: Any) -> list[Any] | None:
        """A format 1 Welford summary ``[n, mean, M2]`` as sums (to rounding: format 1 was not exact)."""
        if not (type(summary) is list and len(summary) == 3 and S.count(summary[0])):
            return None
        n, mean, m2 = summary
        if not (S.finite(mean) and S.finite(m2)):
            return None
        try:
            acc = [n, [float(n * mean)], [float(m2 + n * mean * mean)]]
        except OverflowError:
            return None
        return acc if self.valid(acc) else None


def _total(parts: list[float]) -> float:
    """The correctly rounded total of stored partials; NaN (no valid total) when it is beyond float64
    (math.fsum raises OverflowError: a stored state made check_state raise, not say why it is refused)."""
    try:
        return math.fsum(parts)
    except OverflowError:
        return math.nan


_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's split of a float64 into two halves of 26 bits


def _square(x: float) -> tuple[float, float]:
    """``(hi, lo)`` with ``hi = fl(x*x)`` and ``hi + lo == x*x`` exactly (Dekker), for ``|x| < 1e153``
    (the overflow rule keeps a variance's values there) and squares above float64's subnormals."""
    hi = x * x
    if -1e150 < x < 1e150:
        c = _SPLIT * x
        xh = c - (c - x)
        xl = x - xh
        return hi, ((xh * xh - hi) + 2.0 * xh * xl) + xl * xl
    y = math.ldexp(x, -600)  # the split would overflow: the same on x scaled by a power of two (exact)
    h = y * y
    c = _SPLIT * y
    yh = c - (c - y)
    yl = y - yh
    lo = ((yh * yh - h) + 2.0 * yh * yl) + yl * yl
    return hi, (math.ldexp(lo, 1200) if hi - hi == 0.0 else 0.0)


def _exact(parts: list[float]) -> tuple[int, int]:
    """The exact total of float partials as ``(m, e)``: ``m * 2**e``."""
    total, exp = 0, 0
    for p in parts:
        if not p:
            continue
        num, den = p.as_integer_ratio()  # den is a power of two
        e = 1 - den.bit_length()
        if e < exp:
            total <<= exp - e
            exp = e
        total += num << (e - exp)
    return total, exp


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
