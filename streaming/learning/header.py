"""A checkpoint's header, typed: what the learner writes beside each snapshot, and the one place reading it.

The learner builds a :class:`CheckpointHeader` and writes :meth:`CheckpointHeader.to_dict` (the registry adds
``model`` and ``version``, the seal ``key_id``, the payload's hash and size and the River and Python
versions). Every reader (the learner's restore, replay's verify and champion, ``rivulet models``, the API)
parses the verified dict once with :meth:`CheckpointHeader.of` and reads typed fields.

:meth:`CheckpointHeader.of` is total: it never raises. The header it reads was verified (signed by a trusted
key) but may have been written by an older Rivulet, so

- a missing (or null) field gets its default (``offsets`` {}, metrics {}, ``base``, ``journal`` and
  ``n_learned`` None, ...);
- a descriptive field of the wrong type (metrics, counters, rejected, drifts, names, times, classes) becomes
  its default, and a bad entry inside one (a metric that is not a finite number, a count that is not an
  int) is dropped or, for a metric, None;
- a field that decides what is replayed or resumed (``model``, ``version``, ``offsets``, ``base``,
  ``journal``) of the wrong type becomes its default *and is named in* ``invalid``: :meth:`require` raises
  :class:`HeaderError` for those, so a reader that resumes or rebuilds from positions never guesses them.

>>> h = CheckpointHeader.of({"model": "m", "version": 3, "offsets": {"f": {"0": 41}}, "n_learned": 7,
...                          "metrics": {"Accuracy": 0.5, "x": "bad"}, "classes": ["no", "yes"]})
>>> h.version, h.offsets, h.n_learned, h.metrics, h.classes
(3, {'f': {0: 41}}, 7, {'Accuracy': 0.5, 'x': None}, ('no', 'yes'))
>>> bad = CheckpointHeader.of({"model": "m", "version": 1, "offsets": {"f": {"p": "x"}}, "n_learned": "7"})
>>> bad.offsets, bad.n_learned, bad.invalid
({}, None, ('offsets',))
>>> bad.require("offsets")
Traceback (most recent call last):
...
streaming.learning.header.HeaderError: checkpoint header of model 'm' version 1: offsets has the wrong type
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streaming.learning.errors import LearningError

__all__ = ["Base", "CheckpointHeader", "HeaderDrift", "HeaderError", "Offsets", "integer", "number", "text"]

Offsets = dict[str, dict[int, int]]  # topic -> partition -> next offset to read
Scalar = str | int | float | bool


class HeaderError(LearningError, ValueError):
    """A verified header whose positions (offsets, base, journal) or identity cannot be read."""

    def __init__(self, model: str, version: int, fields: tuple[str, ...]) -> None:
        self.model, self.version, self.fields = model, version, fields
        super().__init__(
            f"checkpoint header of model {model!r} version {version}: {', '.join(fields)} "
            f"{'has' if len(fields) == 1 else 'have'} the wrong type"
        )


# ---------------------------------------------------------------- scalars (the API's views use these too)


def text(value: Any, limit: int | None = None) -> str | None:
    """A string (cut to ``limit`` characters, if given), else None."""
    if not isinstance(value, str):
        return None
    return value if limit is None else value[:limit]


def integer(value: Any) -> int | None:
    """An int (not a bool) within int64, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    return None


def number(value: Any) -> float | None:
    """A finite int or float (not a bool) as a float, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _numbers(raw: Any) -> dict[str, float | None]:
    if not isinstance(raw, Mapping):
        return {}
    return {k: number(v) for k, v in raw.items() if isinstance(k, str)}


def _counts(raw: Any) -> dict[str, int]:
    if not isinstance(raw, Mapping):
        return {}
    return {k: n for k, v in raw.items() if isinstance(k, str) and (n := integer(v)) is not None}


def _partition(key: Any) -> int | None:
    """A partition number: an int, or the decimal string JSON made of it (within int64: a string of
    thousands of digits is not one, and ``int()`` would raise on it)."""
    if isinstance(key, str) and key.isascii() and key.isdigit():
        return integer(int(key)) if len(key) <= 19 else None
    return integer(key)


def _offsets(raw: Any) -> Offsets | None:
    """Positions with int partitions, or None if anything in them is not a position."""
    if not isinstance(raw, Mapping):
        return None
    out: Offsets = {}
    for topic, parts in raw.items():
        if not isinstance(topic, str) or not isinstance(parts, Mapping):
            return None
        out[topic] = {}
        for p, o in parts.items():
            partition, offset = _partition(p), integer(o)
            if partition is None or offset is None:
                return None
            out[topic][partition] = offset
    return out


def _journal(raw: Any) -> dict[str, Any] | None:
    """An order journal (``{"tps": [[topic, partition], ...], "runs": [index, count, ...]}``, see
    :class:`~streaming.learning.merge.OrderJournal`), or None if it is not one."""
    if not isinstance(raw, Mapping):
        return None
    tps, runs = raw.get("tps"), raw.get("runs")
    if not isinstance(tps, list) or not isinstance(runs, list) or len(runs) % 2:
        return None
    pairs = []
    for tp in tps:
        if not isinstance(tp, list | tuple) or len(tp) != 2 or not isinstance(tp[0], str):
            return None
        if (partition := integer(tp[1])) is None:
            return None
        pairs.append([tp[0], partition])
    if any(integer(n) is None or n < 0 for n in runs) or any(i >= len(pairs) for i in runs[0::2]):
        return None
    return {"tps": pairs, "runs": list(runs)}


# ---------------------------------------------------------------- parts


@dataclass(frozen=True, slots=True)
class Base:
    """What a version was learned from: a previous ``version`` (None: a fresh model) at ``offsets``."""

    version: int | None
    offsets: Offsets = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "offsets": self.offsets}

    @classmethod
    def of(cls, raw: Any) -> Base | None:
        if not isinstance(raw, Mapping):
            return None
        version, offsets = raw.get("version"), _offsets(raw.get("offsets", {}))
        if (version is not None and integer(version) is None) or offsets is None:
            return None
        return cls(version, offsets)


@dataclass(frozen=True, slots=True)
class HeaderDrift:
    """A drift the learner detected: the detector, the event time, the records learned by then, and where
    in the log (topic, partition, offset) when the learner knew it."""

    detector: str
    ts: int | None = None
    learned: int | None = None
    position: tuple[str, int, int] | None = None

    def to_list(self) -> list[Any]:
        return [self.detector, self.ts, self.learned, list(self.position or ())]

    @classmethod
    def of(cls, raw: Any) -> HeaderDrift | None:
        if not isinstance(raw, list | tuple) or not raw or (detector := text(raw[0])) is None:
            return None
        ts = integer(raw[1]) if len(raw) > 1 else None
        learned = integer(raw[2]) if len(raw) > 2 else None
        pos = raw[3] if len(raw) > 3 else None
        position = None
        if isinstance(pos, list | tuple) and len(pos) == 3 and isinstance(pos[0], str):
            p, o = integer(pos[1]), integer(pos[2])
            position = (pos[0], p, o) if p is not None and o is not None else None
        return cls(detector, ts, learned, position)


def _classes(raw: Any) -> tuple[Scalar, ...] | None:
    if not isinstance(raw, list | tuple):
        return None
    return tuple(c for c in raw if isinstance(c, Scalar)) or None


def _drifts(raw: Any) -> tuple[HeaderDrift, ...]:
    return tuple(d for d in map(HeaderDrift.of, raw if isinstance(raw, list | tuple) else ()) if d)


# how :meth:`CheckpointHeader.of` reads each field (a parser gives None for a value of the wrong type). The
# fields that decide what is replayed or resumed: the default *and named in* ``invalid`` when wrong
_DECIDING: dict[str, Callable[[Any], Any]] = {
    "model": text,
    "version": integer,
    "offsets": _offsets,
    "base": Base.of,
    "journal": _journal,
}
# the descriptive fields: what the parser gives, missing or not (its default for the wrong type)
_DESCRIPTIVE: dict[str, Callable[[Any], Any]] = {
    "metrics": _numbers,
    "counters": _counts,
    "rejected": _counts,
    "n_learned": integer,
    "last_learned_ts": integer,
    "saved_at": number,
    "drifts": _drifts,
    "classes": _classes,
    "payload_bytes": integer,
    **dict.fromkeys(
        (
            "spec",
            "view",
            "feature_hash",
            "status",
            "quarantine",
            "role",
            "key_id",
            "payload_sha256",
            "river",
            "python",
        ),
        text,
    ),
}


# ---------------------------------------------------------------- the header


@dataclass(frozen=True, slots=True)
class CheckpointHeader:
    """The header of one checkpoint (see the module docstring for how :meth:`of` reads one)."""

    model: str = ""
    version: int = 0
    offsets: Offsets = field(default_factory=dict)  # where learning goes on from
    base: Base | None = None  # how to rebuild it: from this base...
    journal: dict[str, Any] | None = None  # ...taking the records in this order
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    counters: Mapping[str, int] = field(default_factory=dict)
    rejected: Mapping[str, int] = field(default_factory=dict)  # reason -> records rejected (dead letters)
    n_learned: int | None = None
    last_learned_ts: int | None = None
    saved_at: float | None = None
    spec: str | None = None
    view: str | None = None
    feature_hash: str | None = None
    drifts: tuple[HeaderDrift, ...] = ()
    classes: tuple[Scalar, ...] | None = None  # the spec's declared classes (None: any label of its task)
    status: str | None = None
    quarantine: str | None = None
    role: str | None = None  # in its spec's lifecycle: champion, challenger, probation, retired
    key_id: str | None = None  # stamped by the seal:
    payload_sha256: str | None = None
    payload_bytes: int | None = None
    river: str | None = None
    python: str | None = None
    invalid: tuple[str, ...] = ()  # fields present with the wrong type (see require)

    @property
    def rebuildable(self) -> bool:
        """Does it say how to rebuild it (a base and an order journal: written since Rivulet has them)?"""
        return self.base is not None and self.journal is not None

    def require(self, *fields: str) -> CheckpointHeader:
        """This header, or :class:`HeaderError` if any of ``fields`` was present with the wrong type."""
        bad = tuple(f for f in fields if f in self.invalid)
        if bad:
            raise HeaderError(self.model, self.version, bad)
        return self

    def to_dict(self) -> dict[str, Any]:
        """What the learner writes (JSON-ready; partitions become strings in JSON). The identity, the seal's
        stamps, ``classes``, ``status``, ``quarantine`` and ``role`` are written only when set."""
        out: dict[str, Any] = {
            "offsets": self.offsets,
            "base": self.base.to_dict() if self.base is not None else None,
            "journal": self.journal,
            "metrics": dict(self.metrics),
            "counters": dict(self.counters),
            "rejected": dict(self.rejected),
            "n_learned": self.n_learned,
            "last_learned_ts": self.last_learned_ts,
            "saved_at": self.saved_at,
            "spec": self.spec,
            "view": self.view,
            "feature_hash": self.feature_hash,
            "drifts": [d.to_list() for d in self.drifts],
        }
        if self.model:
            out["model"], out["version"] = self.model, self.version
        if self.classes is not None:
            out["classes"] = list(self.classes)
        for name in (
            "status", "quarantine", "role", "key_id", "payload_sha256", "payload_bytes", "river", "python"
        ):  # fmt: skip
            if (value := getattr(self, name)) is not None:
                out[name] = value
        return out

    @classmethod
    def of(cls, raw: Mapping[str, Any] | CheckpointHeader) -> CheckpointHeader:
        """The typed header of a verified dict; never raises (see the module docstring)."""
        if isinstance(raw, CheckpointHeader):
            return raw
        values: dict[str, Any] = {name: parse(raw.get(name)) for name, parse in _DESCRIPTIVE.items()}
        invalid: list[str] = []
        for name, parse in _DECIDING.items():
            value = raw.get(name)
            if value is None:  # missing (or null): the default
                continue
            parsed = parse(value)
            if parsed is None:
                invalid.append(name)
            else:
                values[name] = parsed
        return cls(**values, invalid=tuple(invalid))
