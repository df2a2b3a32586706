"""The records that cross the feature pipeline's boundary: what it reads (:class:`RawRecord`), what it
publishes (:class:`FeatureRecord`) and what it refuses (:class:`DeadLetter`, with a reason of
:data:`REASONS`; see :mod:`features.pipeline` for what each means).

A dead letter always fits the same limit (:meth:`DeadLetter.encode`): when the original bytes would not (a
record near the size limit grows by a third in base64), they are left out (the larger of value and key
first) and the dead letter says how many there were and their SHA-256; its position still finds them on
the source topic. A key over ``MAX_KEY_BYTES`` is never the letter's Kafka key.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from features.engine import Vector
from features.events import Event

__all__ = ["MAX_KEY_BYTES", "REASONS", "STAGE", "DeadLetter", "FeatureRecord", "RawRecord", "describe"]

STAGE = "features"
REASONS = ("invalid", "future", "late", "overflow", "corrupt_state", "too_large", "error")
# the longest error text a dead letter carries (an error may quote its input, which may be huge)
MAX_ERROR_CHARS = 2_000
# the longest original key a dead letter keeps as its own Kafka key
MAX_KEY_BYTES = 4_096


@dataclass(frozen=True, slots=True)
class RawRecord:
    value: bytes | None
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    timestamp_ms: int | None = None  # the Kafka record's timestamp, when known
    # a re-keyed view's record: where the event was read before the repartition topic (topic, partition,
    # offset), from the feature worker's header; None when unknown (features.pipeline)
    source: tuple[str, int, int] | None = None


@dataclass(frozen=True, slots=True)
class FeatureRecord:
    """What goes on the features topic: the event and its point-in-time vector in one view."""

    view: str
    entity: str
    event: Event
    features: Vector
    source: RawRecord | None = field(default=None, compare=False)  # where the event was read
    payload: bytes | None = field(default=None, compare=False, repr=False)  # to_json(), when checked

    def to_json(self) -> bytes:
        if self.payload is not None:
            return self.payload
        return self.encode(self.view, self.entity, self.event, self.features)

    @staticmethod
    def encode(view: str, entity: str, event: Event, features: Vector) -> bytes:
        """The record's JSON, without making the record (the pipeline checks it before applying)."""
        return orjson.dumps({"view": view, "entity": entity, "event": event.to_dict(), "features": features})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be applied, with why and where it came from; the original bytes are kept.

    The one dead letter of every stage: the feature worker's (``stage`` ``features``, ``view``) and the
    learner's (``stage`` ``learner``, ``models``: see :mod:`streaming.learning.deadletters`); both reach the
    topic through :meth:`encode`, so a large key can never make a letter larger than the topic takes.
    """

    reason: str  # one of REASONS
    error: str
    record: RawRecord
    view: str | None = None
    stage: str = STAGE
    models: tuple[str, ...] | None = None  # the learner's: the models the record was rejected for

    def to_json(self, limit: int | None = None) -> bytes:
        """The dead letter as JSON; with ``limit``, at most that many bytes (see :meth:`encode`)."""
        value, key = self.record.value, self.record.key
        error = self.error if len(self.error) <= MAX_ERROR_CHARS else self.error[:MAX_ERROR_CHARS] + "..."
        out: dict[str, Any] = {
            "reason": self.reason,
            "stage": self.stage,
            "error": error.encode("utf-8", "replace").decode(),  # text from anywhere: always UTF-8
            "topic": self.record.topic,
            "partition": self.record.partition,
            "offset": self.record.offset,
            "value_b64": base64.b64encode(value).decode() if value is not None else None,
        }
        if key is not None:
            out["key_b64"] = base64.b64encode(key).decode()
        if self.view is not None:
            out["view"] = self.view
        if self.models is not None:
            out["models"] = list(self.models)
        full = orjson.dumps(out)
        if limit is None or len(full) <= limit:
            return full
        out["omitted"] = f"original bytes over the dead-letter limit of {limit}: read them at this position"
        # too large for the topic: leave bytes out, the larger first (so as much as fits is kept; on a
        # tie the value, then the key)
        parts = sorted((("value", value), ("key", key)), key=lambda p: -len(p[1] or b""))
        for name, raw in parts:
            if raw is not None:
                out[f"{name}_b64"] = None
                out[f"{name}_bytes"] = len(raw)
                out[f"{name}_sha256"] = hashlib.sha256(raw).hexdigest()
                small = orjson.dumps(out)
                if len(small) <= limit:
                    return small
        return orjson.dumps(out)

    def encode(self, limit: int) -> tuple[bytes | None, bytes]:
        """``(key, value)`` for the dead-letter topic, together at most ``limit`` bytes: the original
        key when it is small (at most ``MAX_KEY_BYTES``), the JSON with the original bytes when they fit.

        >>> d = DeadLetter("invalid", "x", RawRecord(b"y" * 3000, "events", 0, 7, key=b"k"))
        >>> key, value = d.encode(1000)
        >>> key, len(value) <= 999, orjson.loads(value)["value_bytes"]
        (b'k', True, 3000)
        """
        key = (
            self.record.key if self.record.key is not None and len(self.record.key) <= MAX_KEY_BYTES else None
        )
        return key, self.to_json(limit - (len(key) if key else 0))


def describe(exc: BaseException) -> str:
    """An exception as a dead letter error text: its type, then its message (at most 1,000 characters)."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {text}"[:1000]
