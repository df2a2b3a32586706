"""Event-time windows. A window answers one question: at reference time ``t``, which event times count?

Every window is closed on the right at ``t`` (events at exactly ``t`` count) and bounded on the left by
:meth:`Window.lower` (inclusive):

- ``lifetime()``: every event of the entity;
- ``sliding(L)``: the look-back ``t - L < ts <= t`` from each event;
- ``tumbling(S)``: the current fixed window, ``floor(t / S) * S <= ts <= t``;
- ``hopping(S, P)``: of the windows ``[k * P, k * P + S)`` that contain ``t``, the oldest (the one holding
  the most history): ``(floor((t - S) / P) + 1) * P <= ts <= t``. When ``P`` divides ``S`` this is
  ``floor(t / P) * P + P - S``; when it does not, that formula (used until issue 12) reached back to an
  event time that no window holding ``t`` covers.

Durations are milliseconds or strings such as ``"90s"``, ``"5m"``, ``"1h"``, ``"7d"``.

>>> sliding("1m").lower(120_000), tumbling("1m").lower(119_999), hopping("10m", "1m").lower(600_000)
(60001, 60000, 60000)
>>> sliding("1h").label, hopping("1h", "5m").label, lifetime().label
('1h', '1h_every_5m', 'lifetime')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from features.errors import DefinitionError

__all__ = ["Window", "duration_ms", "hopping", "lifetime", "sliding", "tumbling"]

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")


def duration_ms(value: int | str) -> int:
    """``"5m"`` -> 300000; integers are milliseconds already.

    >>> duration_ms("90s"), duration_ms(250), duration_ms("2h")
    (90000, 250, 7200000)
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise DefinitionError(f"duration {value} must not be negative")
        return value
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return int(m.group(1)) * _UNITS[m.group(2)]
    raise DefinitionError(f"duration {value!r}: expected milliseconds or a string such as '30s', '5m', '1h'")


def _label(ms: int) -> str:
    for unit in ("w", "d", "h", "m", "s"):
        if ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True, slots=True)
class Window:
    kind: Literal["lifetime", "sliding", "tumbling", "hopping"]
    size_ms: int = 0
    step_ms: int = 0

    def lower(self, t: int) -> int | None:
        """Smallest event time that counts at reference time ``t`` (None: no bound)."""
        if self.kind == "sliding":
            return t - self.size_ms + 1
        if self.kind == "tumbling":
            return (t // self.size_ms) * self.size_ms
        if self.kind == "hopping":  # the start of the oldest window holding t: the first k * step > t - size
            return ((t - self.size_ms) // self.step_ms + 1) * self.step_ms
        return None

    @property
    def extent_ms(self) -> int:
        """How far back from ``t`` the window can reach (0 for lifetime, which needs no buffer)."""
        return self.size_ms if self.kind != "lifetime" else 0

    @property
    def label(self) -> str:
        if self.kind == "lifetime":
            return "lifetime"
        if self.kind == "hopping":
            return f"{_label(self.size_ms)}_every_{_label(self.step_ms)}"
        if self.kind == "tumbling":
            return f"{_label(self.size_ms)}_tumbling"
        return _label(self.size_ms)


def lifetime() -> Window:
    return Window("lifetime")


def sliding(size: int | str) -> Window:
    ms = duration_ms(size)
    if ms <= 0:
        raise DefinitionError("a sliding window needs a positive size")
    return Window("sliding", ms)


def tumbling(size: int | str) -> Window:
    ms = duration_ms(size)
    if ms <= 0:
        raise DefinitionError("a tumbling window needs a positive size")
    return Window("tumbling", ms)


def hopping(size: int | str, step: int | str) -> Window:
    size_ms, step_ms = duration_ms(size), duration_ms(step)
    if not 0 < step_ms <= size_ms:
        raise DefinitionError(f"a hopping window needs 0 < step <= size, got size {size!r} and step {step!r}")
    return Window("hopping", size_ms, step_ms)
