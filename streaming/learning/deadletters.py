"""Where the learner's rejected records go: the shared dead-letter topic, through a small sink interface.

A learner's letter is the feature worker's :class:`~features.pipeline.DeadLetter` (``reason``, ``error``,
``topic``, ``partition``, ``offset``, ``value_b64``: the original bytes, ``key_b64``) with ``stage``
(``learner``) and ``models`` (the models it was rejected for): one implementation, so one size budget
(:meth:`~features.pipeline.DeadLetter.encode`: the Kafka key only when small, key and value together
within the topic's limit, the original bytes replaced by their size and SHA-256 when they would not fit).

Sinks follow the house sink contract: ``send`` buffers, ``flush`` waits until every letter is durable, and
the learner flushes before it writes a checkpoint, so a checkpoint never moves past a rejected record whose
letter could still be lost in flight. A letter Kafka refuses outright is counted and logged by
:class:`KafkaSink`, not raised: see :meth:`KafkaSink.flush`. After a crash the records since the last
checkpoint are processed again, so a letter may be written twice (at least once), while the counters in
the checkpoint count each rejection once.

>>> sink = MemorySink()
>>> sink.send(learner_letter("label_class", "'banana' is not a class", "labels", 0, 7, b'{"label":"banana"}',
...                          models=("lr",)))
>>> letter = orjson.loads(sink.letters[0].to_json())
>>> letter["stage"], letter["reason"], letter["offset"], base64.b64decode(letter["value_b64"])
('learner', 'label_class', 7, b'{"label":"banana"}')
"""

from __future__ import annotations

import base64  # noqa: F401 (the doctests)
from collections import Counter, deque
from typing import Any, Protocol

import orjson  # noqa: F401 (the doctests)

from features.pipeline import DeadLetter, RawRecord
from streaming.errors import DeliveryError
from streaming.logs import get_logger

__all__ = ["STAGE", "DeadLetter", "DeadLetterSink", "KafkaSink", "MemorySink", "learner_letter"]

log = get_logger("rivulet.learn")

STAGE = "learner"


def learner_letter(
    reason: str,
    error: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    value: bytes | None,
    key: bytes | None = None,
    models: tuple[str, ...] = (),
) -> DeadLetter:
    """The learner's dead letter: the feature worker's :class:`~features.pipeline.DeadLetter` (one shape,
    one size budget for key and value together) with ``stage`` ``learner`` and the ``models``. A record not
    read from Kafka (a direct ``process`` call) has partition and offset ``-1``.

    >>> letter = learner_letter("undecodable", "not JSON", "t", 0, 5, b"x" * 2_000, key=b"k" * 10_000)
    >>> key, value = letter.encode(1_000)
    >>> small = orjson.loads(value)
    >>> key, small["value_bytes"], small["key_bytes"], len(small["key_sha256"]), len(value) <= 1_000
    (None, 2000, 10000, 64, True)
    """
    part = -1 if partition is None else partition
    at = -1 if offset is None else offset
    return DeadLetter(reason, error, RawRecord(value, topic, part, at, key), stage=STAGE, models=models)


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
    """Letters to the dead-letter topic through the producer SDK (idempotent, ``acks=all``), each within
    ``max_bytes`` (key and value together); a letter not acknowledged is counted in ``lost`` and logged."""

    def __init__(self, producer: Any, topic: str, max_bytes: int) -> None:
        self.producer = producer  # a streaming.ingest.producer.Producer
        self.topic = topic
        self.max_bytes = max_bytes
        self.lost = 0  # letters Kafka did not take (see flush)

    def send(self, letter: DeadLetter) -> None:
        rec = letter.record
        record_id = f"{rec.topic}[{rec.partition}]@{rec.offset}:{letter.reason}"
        key, value = letter.encode(self.max_bytes)
        try:
            self.producer.send_record(self.topic, value, key, record_id)
        except DeliveryError as exc:
            self._lost(exc)

    def flush(self) -> None:
        """Wait for every letter; one Kafka would not take is counted in ``lost`` and logged, not raised.

        A lost letter is better than a learner that never checkpoints: raising here stops the learner before
        its checkpoint, the restart reads the same record, makes the same letter, and stops again, forever.
        The record itself stays on its topic at the position the log names."""
        try:
            self.producer.flush()
        except DeliveryError as exc:
            self._lost(exc)

    def _lost(self, exc: DeliveryError) -> None:
        self.lost += len(exc.failures)
        log.error(
            "dead letters lost",
            lost=len(exc.failures),
            lost_so_far=self.lost,
            letters=[f.record_id for f in exc.failures[:20]],
            error=exc.failures[0].error,
        )

    def close(self) -> None:
        self.producer.close()
