"""Per-entity aggregations over an event-time window.

Each aggregation keeps a small JSON-able *summary* (a list, made of the pieces in :mod:`features.summaries`)
that it grows one value at a time, for the lifetime windows; its value is read from the summary. Bounded
windows compute their value from the buffered events at once (:meth:`Aggregation.over`), with the same
result as adding them one by one. Values that are missing (null) are skipped;
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

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
        return type(acc) is list and len(acc) == 1 and S.count(acc[0])

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        if self.field is None or value is not None:
            acc[0] += 1

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
        return type(acc) is list and S.partials(acc, 0)

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = S.number(value)
        if v is not None:
            S.grow(acc, float(v), 0)

    def value(self, acc: list[Any], t: int) -> Any:
        return math.fsum(acc)

    def partials(self, acc: list[Any]) -> list[float]:
        return acc

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        return math.fsum(map(float, S.numbers(values)))


@dataclass(frozen=True)
class Mean(Aggregation):
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

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        nums = S.numbers(values)
        return math.fsum(map(float, nums)) / len(nums) if nums else None


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

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        nums = S.numbers(values)
        return self.pick(nums) if nums else None


@dataclass(frozen=True)
class Max(Min):
    kind: ClassVar[str] = "max"
    pick: ClassVar[Callable[..., Any]] = max


@dataclass(frozen=True)
class Var(Aggregation):
    """Sample variance (``ddof=1``, as River's ``stats.Var``), by Welford's method; null below 2 values."""

    kind: ClassVar[str] = "var"
    magnitude: ClassVar[str] = "square"

    def empty(self) -> list[Any]:
        return [0, 0.0, 0.0]  # n, mean, sum of squared deviations

    def valid(self, acc: Any) -> bool:
        return type(acc) is list and len(acc) == 3 and S.count(acc[0]) and all(map(S.finite, acc[1:]))

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        v = S.number(value)
        if v is not None:
            acc[0] += 1
            delta = v - acc[1]
            acc[1] += delta / acc[0]
            acc[2] += delta * (v - acc[1])

    def value(self, acc: list[Any], t: int) -> Any:
        return max(acc[2], 0.0) / (acc[0] - 1) if acc[0] > 1 else None

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        """Two passes with exact sums, corrected for the rounding of the mean, and 0 for equal values:
        three values of -1.78e106 had a variance of 6.2e180 when the squared deviations were taken from
        a rounded mean. Every term stays within the field's total of squares: nothing overflows."""
        nums = [float(x) for x in S.numbers(values)]
        n = len(nums)
        if n < 2:
            return None
        if min(nums) == max(nums):
            return 0.0  # and so is its square root, the Std
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
        return type(acc) is list and len(acc) == 3 and S.position(acc[0], acc[1]) and scalar(acc[2])

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        if value is not None and (acc[0] is None or (ts, seq) > (acc[0], acc[1])):
            acc[0], acc[1], acc[2] = ts, seq, value

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
        return type(acc) is list and len(acc) == 1 and S.event_time(acc[0])

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        if acc[0] is None or ts > acc[0]:
            acc[0] = ts

    def value(self, acc: list[Any], t: int) -> Any:
        return t - acc[0] if acc[0] is not None else None

    def over(self, items: list[list[Any]], values: list[Any], t: int) -> Any:
        return t - items[-1][0] if items else None
