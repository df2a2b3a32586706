"""Event-time windows over tiles. A window answers one question: at reference time ``t``, which events count?

Since issue 13 every window is kept as *tiles* of a resolution ``R`` (ms): an event at time ``ts`` falls in
tile ``ts // R``, covering ``[k*R, (k+1)*R)``, and a window at reference time ``t`` (in tile ``kt = t // R``)
is the range of tiles ``[first_tile(t), kt]``:

- ``lifetime()``: every tile up to ``kt`` (the engine picks its resolution from the view's lateness);
- ``tumbling(S)``: ``R = S``, the tile ``kt`` alone (the current fixed window);
- ``hopping(S, P)``: ``R = P``, from the start of the oldest window ``[j*P, j*P + S)`` holding ``t``
  (``(t - S) // P + 1``) to ``kt``;
- ``sliding(L, resolution=R)``: the ``L // R`` tiles ending with ``kt``: for an event in order, the events
  in ``[(kt+1)*R - L, t]``, never older than ``L`` and up to ``R`` shorter. ``R`` must divide ``L``; by
  default it is the largest divisor of ``L`` that is at most ``max(1, L // 60)`` (1h -> 1m, 10m -> 10s,
  90s -> 1.5s, 1s -> 10ms). ``resolution="1ms"`` is the exact window (event times are whole ms).

:meth:`Window.lower` is the smallest event time that counts at ``t`` (the first tile's start). Durations
are milliseconds or strings such as ``"90s"``, ``"5m"``, ``"1h"``, ``"7d"``.

>>> sliding("1m").lower(120_000), tumbling("1m").lower(119_999), hopping("10m", "1m").lower(600_000)
(61000, 60000, 60000)
>>> sliding("1h").resolution_ms, sliding("90s").resolution_ms, sliding("1m", resolution=1).lower(120_000)
(60000, 1500, 60001)
>>> sliding("1h").label, hopping("1h", "5m").label, lifetime().label, sliding("1h").key
('1h', '1h_every_5m', 'lifetime', '1h@60000')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from features.errors import DefinitionError
from features.events import MAX_TS_MS, MIN_TS_MS

__all__ = ["Window", "default_resolution", "duration_ms", "hopping", "lifetime", "sliding", "tumbling"]

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# the span of event times (features.events: 0001-01-01 to 9999-12-31): no duration can be longer
MAX_DURATION_MS = MAX_TS_MS - MIN_TS_MS
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")


def duration_ms(value: int | str) -> int:
    """``"5m"`` -> 300000; integers are milliseconds already. At most :data:`MAX_DURATION_MS`, the span of
    event times (a longer window, lateness or ttl means nothing, and made a definition hang in
    :func:`default_resolution`, or every commit fail on Redis's EXPIRE).

    >>> duration_ms("90s"), duration_ms(250), duration_ms("2h")
    (90000, 250, 7200000)
    >>> duration_ms("200000000000d")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    features.errors.DefinitionError: duration '200000000000d': longer than the span of event times ...
    """
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value
        if ms < 0:
            raise DefinitionError(f"duration {value} must not be negative")
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        ms = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise DefinitionError(
            f"duration {value!r}: expected milliseconds or a string such as '30s', '5m', '1h'"
        )
    if ms > MAX_DURATION_MS:
        raise DefinitionError(
            f"duration {value!r}: longer than the span of event times ({MAX_DURATION_MS} ms)"
        )
    return ms


def _label(ms: int) -> str:
    for unit in ("w", "d", "h", "m", "s"):
        if ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms}ms"


def default_resolution(size_ms: int) -> int:
    """A sliding window's default resolution: the largest divisor of ``size_ms`` that is at most
    ``max(1, size_ms // 60)`` (about 60 tiles per window).

    >>> [default_resolution(ms) for ms in (3_600_000, 1_800_000, 600_000, 90_000, 60_000, 1_000, 7)]
    [60000, 30000, 10000, 1500, 1000, 10, 1]
    """
    cap = max(1, size_ms // 60)
    best, d = 1, 1
    while d * d <= size_ms:  # divisors come in pairs (d, size // d): one of each pair is <= sqrt(size)
        if size_ms % d == 0:
            for x in (d, size_ms // d):
                if best < x <= cap:
                    best = x
        d += 1
    return best


@dataclass(frozen=True, slots=True)
class Window:
    """A window's kind, size, step and tile resolution (0 for lifetime: the view's lateness decides it)."""

    kind: Literal["lifetime", "sliding", "tumbling", "hopping"]
    size_ms: int = 0
    step_ms: int = 0
    resolution_ms: int = 0

    def __post_init__(self) -> None:
        if self.kind == "lifetime":
            return
        fixed = {"tumbling": self.size_ms, "hopping": self.step_ms}.get(self.kind)
        if self.resolution_ms == 0:
            object.__setattr__(self, "resolution_ms", fixed or default_resolution(self.size_ms))
        r = self.resolution_ms
        if r <= 0 or (self.size_ms % r if fixed is None else r != fixed):
            raise DefinitionError(f"window {self.label}: resolution {r} ms does not tile it")

    def first_tile(self, t: int) -> int | None:
        """The oldest tile of the window at reference time ``t`` (None for lifetime: no bound)."""
        if self.kind == "sliding":
            return t // self.resolution_ms - self.size_ms // self.resolution_ms + 1
        if self.kind == "tumbling":
            return t // self.size_ms
        if self.kind == "hopping":  # the oldest window holding t: the first j with j * step > t - size
            return (t - self.size_ms) // self.step_ms + 1
        return None

    def lower(self, t: int) -> int | None:
        """Smallest event time that counts at reference time ``t`` (None: no bound)."""
        k = self.first_tile(t)
        return None if k is None else k * self.resolution_ms

    @property
    def extent_ms(self) -> int:
        """How far back from ``t`` the window can reach (0 for lifetime, which keeps a settled summary)."""
        return self.size_ms if self.kind != "lifetime" else 0

    @property
    def label(self) -> str:
        """The window's part of a feature name (the resolution is not part of it)."""
        if self.kind == "lifetime":
            return "lifetime"
        if self.kind == "hopping":
            return f"{_label(self.size_ms)}_every_{_label(self.step_ms)}"
        if self.kind == "tumbling":
            return f"{_label(self.size_ms)}_tumbling"
        return _label(self.size_ms)

    @property
    def key(self) -> str:
        """The key of the window's tiles in a stored state: its label and resolution."""
        return f"{self.label}@{self.resolution_ms}"


def lifetime() -> Window:
    return Window("lifetime")


def sliding(size: int | str, resolution: int | str | None = None) -> Window:
    """A sliding window of ``size`` over tiles of ``resolution`` (which must divide it; see the module)."""
    ms = duration_ms(size)
    if ms <= 0:
        raise DefinitionError("a sliding window needs a positive size")
    if resolution is None:
        return Window("sliding", ms, 0, default_resolution(ms))
    r = duration_ms(resolution)
    if not 0 < r <= ms or ms % r:
        raise DefinitionError(
            f"sliding window {size!r}: resolution {resolution!r} must be positive and divide the size"
        )
    return Window("sliding", ms, 0, r)


def tumbling(size: int | str) -> Window:
    ms = duration_ms(size)
    if ms <= 0:
        raise DefinitionError("a tumbling window needs a positive size")
    return Window("tumbling", ms, 0, ms)


def hopping(size: int | str, step: int | str) -> Window:
    size_ms, step_ms = duration_ms(size), duration_ms(step)
    if not 0 < step_ms <= size_ms:
        raise DefinitionError(f"a hopping window needs 0 < step <= size, got size {size!r} and step {step!r}")
    return Window("hopping", size_ms, step_ms, step_ms)
