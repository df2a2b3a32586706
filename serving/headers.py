"""Typed views of what the registry holds, read in one place: a version's verified header and a monitoring
sample. Every value is checked for its type here (a number is a finite number, a name is a string of bounded
length); anything else is dropped, never passed through. The API's responses (``/v1/models``,
``/v1/dashboard``) are built from these, not from the raw dicts. A version's header is parsed by
:meth:`streaming.learning.header.CheckpointHeader.of` (the one place that decides its types) and only bounded
here for display.

>>> h = VersionHeader.of({"view": "zip", "n_learned": 5, "metrics": {"Accuracy": 0.5, "x": "bad"},
...                       "drifts": [["<b>adwin</b>", 1000, 4, []], "junk"], "saved_at": 1.5})
>>> h.view, h.learned, h.metrics, h.drifts
('zip', 5, {'Accuracy': 0.5, 'x': None}, (Drift(detector='<b>adwin</b>', ts=1000, learned=4),))
>>> VersionHeader.of({"n_learned": "<img src=x>", "view": 3}).learned is None
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streaming.learning.header import CheckpointHeader, HeaderDrift, integer, number
from streaming.learning.header import text as checkpoint_text
from streaming.learning.registry import VersionInfo

__all__ = ["Drift", "ListedVersion", "Sample", "VersionHeader"]

_MAX_TEXT = 200  # a name longer than this is cut (a model, metric or detector name is short)
_MAX_ITEMS = 200  # metrics, counters or drifts kept per header


def text(value: Any, limit: int = _MAX_TEXT) -> str | None:
    """A string (cut to ``limit`` characters), else None."""
    return checkpoint_text(value, limit)


def _numbers(raw: Any) -> dict[str, float | None]:
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, float | None] = {}
    for k, v in list(raw.items())[:_MAX_ITEMS]:
        if (name := text(k)) is not None:
            out[name] = number(v)
    return out


def _counts(raw: Any) -> dict[str, int]:
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, int] = {}
    for k, v in list(raw.items())[:_MAX_ITEMS]:
        name, count = text(k), integer(v)
        if name is not None and count is not None:
            out[name] = count
    return out


@dataclass(frozen=True, slots=True)
class Drift:
    """A drift the learner detected: the detector, the event time, how many records had been learned."""

    detector: str
    ts: int | None
    learned: int | None

    @classmethod
    def of(cls, raw: Any) -> Drift | None:
        """The drift of a raw ``[detector, ts, learned, ...]`` (parsed by :meth:`HeaderDrift.of`), bounded."""
        drift = HeaderDrift.of(raw)
        return None if drift is None else cls.bounded(drift)

    @classmethod
    def bounded(cls, drift: HeaderDrift) -> Drift:
        """What the API shows of a header's drift (the detector's name cut)."""
        return cls(drift.detector[:_MAX_TEXT], drift.ts, drift.learned)


def _drifts(raw: Any) -> tuple[Drift, ...]:
    if not isinstance(raw, list | tuple):
        return ()
    return tuple(d for d in (Drift.of(x) for x in raw[-_MAX_ITEMS:]) if d is not None)


@dataclass(frozen=True, slots=True)
class VersionHeader:
    """What the API shows of a checkpoint header (one the registry verified)."""

    view: str | None = None
    spec: str | None = None
    learned: int | None = None
    saved_at: float | None = None
    metrics: dict[str, float | None] | None = None
    counters: dict[str, int] | None = None
    rejected: dict[str, int] | None = None
    drifts: tuple[Drift, ...] = ()
    offsets: dict[str, dict[str, int]] | None = None
    role: str | None = None

    @classmethod
    def of(cls, header: Mapping[str, Any] | CheckpointHeader) -> VersionHeader:
        """The view of a header: its types decided by :meth:`CheckpointHeader.of`, bounded here for display
        (names cut, at most ``_MAX_ITEMS`` metrics, counters, drifts or topics)."""
        h = CheckpointHeader.of(header)
        offsets = {
            t[:_MAX_TEXT]: {str(p): o for p, o in list(parts.items())[:_MAX_ITEMS]}
            for t, parts in list(h.offsets.items())[:_MAX_ITEMS]
        }
        return cls(
            view=text(h.view),
            spec=text(h.spec),
            learned=h.n_learned,
            saved_at=h.saved_at,
            metrics=_numbers(h.metrics),
            counters=_counts(h.counters),
            rejected=_counts(h.rejected),
            drifts=tuple(Drift.bounded(d) for d in h.drifts[-_MAX_ITEMS:]),
            offsets=offsets,
            role=text(h.role),
        )


@dataclass(frozen=True, slots=True)
class ListedVersion:
    """A retained version as the API lists it: its number, whether it is served, and its header's view."""

    version: int
    current: bool
    learned: int | None
    saved_at: float | None
    metrics: dict[str, float | None]
    offsets: dict[str, dict[str, int]]

    @classmethod
    def of(cls, info: VersionInfo) -> ListedVersion:
        h = VersionHeader.of(info.header)
        return cls(info.version, info.current, h.learned, h.saved_at, h.metrics or {}, h.offsets or {})


@dataclass(frozen=True, slots=True)
class Sample:
    """One monitoring sample of a model's history (written by the learner at each checkpoint).

    >>> Sample.of({"t": 2.5, "learned": 7, "rate": "fast", "drifts": [["adwin", 1, 2]], "status": 3})
    Sample(t=2.5, learned=7, rate=None, freshness_ms=None, metrics={}, drifts=(Drift(detector='adwin', ts=1, \
learned=2),), status=None, quarantine=None)
    >>> Sample.of({"learned": 7}) is None  # no time: not a sample
    True
    """

    t: float
    learned: int | None
    rate: float | None
    freshness_ms: float | None
    metrics: dict[str, float | None]
    drifts: tuple[Drift, ...]
    status: str | None = None  # "quarantined" when the learner quarantined the model at this sample
    quarantine: str | None = None  # why (the model's error)

    @classmethod
    def of(cls, raw: Any) -> Sample | None:
        if not isinstance(raw, Mapping) or (t := number(raw.get("t"))) is None:
            return None
        return cls(t, **{name: parse(raw.get(name)) for name, parse in _SAMPLE_FIELDS})


def _quarantine(value: Any) -> str | None:
    return text(value, 500)  # the model's error: longer than a name


# each field of a sample but its time, and its parser (a value of another type is None, or empty)
_SAMPLE_FIELDS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("learned", integer),
    ("rate", number),
    ("freshness_ms", number),
    ("metrics", _numbers),
    ("drifts", _drifts),
    ("status", text),
    ("quarantine", _quarantine),
)
