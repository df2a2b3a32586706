"""Where the learner's rejected records go: the shared dead-letter topic, through a small sink interface.

A :class:`DeadLetter` has the feature worker's shape (``reason``, ``error``, ``topic``, ``partition``,
``offset``, ``value_b64``: the original bytes, ``key_b64``) plus ``stage`` (``learner``) and ``models``
(the models it was rejected for). Sinks follow the house sink contract: ``send`` buffers, ``flush`` waits
until every letter is durable, and the learner flushes before it writes a checkpoint, so a checkpoint never
moves past a rejected record whose letter could still be lost. After a crash the records since the last
checkpoint are processed again, so a letter may be written twice (at least once), while the counters in
the checkpoint count each rejection once.

>>> sink = MemorySink()
>>> sink.send(DeadLetter("label_class", "'banana' is not a class", "labels", 0, 7, b'{"label":"banana"}',
...                      models=("lr",)))
>>> letter = orjson.loads(sink.letters[0].to_json())
>>> letter["stage"], letter["reason"], letter["offset"], base64.b64decode(letter["value_b64"])
('learner', 'label_class', 7, b'{"label":"banana"}')
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

__all__ = ["STAGE", "DeadLetter", "DeadLetterSink", "KafkaSink", "MemorySink"]

STAGE = "learner"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    error: str
    topic: str
    partition: int | None
    offset: int | None
    value: bytes | None  # the record's original bytes
    key: bytes | None = None
    models: tuple[str, ...] = ()
    stage: str = STAGE

    def to_dict(self) -> dict[str, Any]:
        value, key = self.value, self.key
        out: dict[str, Any] = {
            "stage": self.stage,
            "reason": self.reason,
            "error": self.error[:2_000].encode("utf-8", "replace").decode(),  # text from anywhere
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "models": list(self.models),
            "value_b64": base64.b64encode(value).decode() if value is not None else None,
        }
        if key is not None:
            out["key_b64"] = base64.b64encode(key).decode()
        return out

    def to_json(self, max_bytes: int | None = None) -> bytes:
        """The letter as JSON; over ``max_bytes``, the original value (then key) is left out and only its
        size and SHA-256 given, as the feature worker's letters do: its position says where it is.

        >>> letter = DeadLetter("undecodable", "not JSON", "t", 0, 5, b"x" * 2_000)
        >>> small = orjson.loads(letter.to_json(max_bytes=1_000))
        >>> small["value_b64"], small["value_bytes"], len(small["value_sha256"])
        (None, 2000, 64)
        """
        out = self.to_dict()
        full = orjson.dumps(out)
        if max_bytes is None or len(full) <= max_bytes:
            return full
        out["omitted"] = (
            f"original bytes over the dead-letter limit of {max_bytes}: read them at this position"
        )
        small = full
        for name, raw in (("value", self.value), ("key", self.key)):
            if raw is not None:
                out[f"{name}_b64"] = None
                out[f"{name}_bytes"] = len(raw)
                out[f"{name}_sha256"] = hashlib.sha256(raw).hexdigest()
                small = orjson.dumps(out)
                if len(small) <= max_bytes:
                    break
        return small


class DeadLetterSink(Protocol):
    """Where rejected records go: ``send`` may buffer; ``flush`` returns once all are durable (or raises)."""

    def send(self, letter: DeadLetter) -> None: ...

    def flush(self) -> None: ...


class MemorySink:
    """Letters kept in memory (the newest ``keep``) and counted by reason: the demo, replay and tests."""

    def __init__(self, keep: int = 10_000) -> None:
        self.letters: deque[DeadLetter] = deque(maxlen=keep)
        self.counts: Counter[str] = Counter()

    def send(self, letter: DeadLetter) -> None:
        self.letters.append(letter)
        self.counts[letter.reason] += 1

    def flush(self) -> None:
        pass


class KafkaSink:
    """Letters to the dead-letter topic through the producer SDK (idempotent, ``acks=all``); ``flush`` raises
    :class:`~streaming.errors.DeliveryError` when a letter was not acknowledged."""

    def __init__(self, producer: Any, topic: str, max_bytes: int) -> None:
        self.producer = producer  # a streaming.producer.Producer
        self.topic = topic
        self.max_bytes = max_bytes

    def send(self, letter: DeadLetter) -> None:
        record_id = f"{letter.topic}[{letter.partition}]@{letter.offset}:{letter.reason}"
        self.producer.send_record(self.topic, letter.to_json(self.max_bytes), letter.key, record_id)

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()
