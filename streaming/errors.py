"""Errors of the ``streaming`` package: one root, subclasses that carry their context.

The tree (a class that lives beside the code raising it names its module)::

    StreamingError
    ├── EventTooLarge            an event over max_event_bytes, not sent (also a ValueError)
    ├── DeliveryError            records Kafka did not acknowledge (failures, delivered)
    ├── TopicError               a topic that could not be created or described
    ├── KafkaUnavailable         no broker answered at the bootstrap servers
    ├── InvalidKey               a signing or verify key that is not base64 of 32 bytes (also a ValueError)
    ├── MissingKey               a process started without the key it needs (setting)
    ├── SourceError              streaming.ingest.rows: a source that cannot be opened (also a ValueError)
    ├── RangeError               streaming.replay.kafka: a replay range that cannot be read (a ValueError)
    ├── ChampionError            streaming.replay.champion: no usable champion version (also a ValueError)
    ├── VerifyError              streaming.replay.verify: a version that cannot be rebuilt
    ├── StackError               streaming.runtime.stack: ``rivulet up``/``down`` failed (also a RuntimeError)
    └── LearningError            streaming.learning.errors: rejected records, and beside their code
        ├── InvalidLabel         a label that does not fit a model's task (also a ValueError)
        ├── OutOfDomain          a number outside the numeric domain (also a ValueError)
        ├── SpecError            streaming.learning.spec: a model spec that cannot work (also a ValueError)
        ├── HeaderError          streaming.learning.header: unreadable positions in a checkpoint header
        ├── SnapshotRejected     a snapshot that failed verification, never unpickled (header, reason)
        └── NoValidVersion       a model with no version that verifies (name, rejected)

Every error a user can cause from the command line is one of these (or a ``features.errors.FeaturesError``,
or the Kafka, Redis and file clients' own connection errors): ``rivulet`` reports those as one line and exit
code 1, and lets anything else (a bug) through with its traceback.

>>> issubclass(SourceError, StreamingError) and issubclass(SourceError, ValueError)
True
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DeliveryError",
    "DeliveryFailure",
    "EventTooLarge",
    "InvalidKey",
    "KafkaUnavailable",
    "MissingKey",
    "SourceError",
    "StreamingError",
    "TopicError",
]


class StreamingError(Exception):
    """Root of every error raised by ``streaming``. A subclass passes its context (entity, topic, setting...)
    as keyword arguments, kept as attributes of the same names.

    >>> err = TopicError("rivulet.events", "does not exist")
    >>> err.topic, str(err)
    ('rivulet.events', 'topic rivulet.events: does not exist')
    """

    def __init__(self, message: str = "", **context: object) -> None:
        self.__dict__.update(context)
        super().__init__(message)


class EventTooLarge(StreamingError, ValueError):
    """A serialised event over the configured ``max_event_bytes``; it was not sent."""

    event_id: str
    size: int
    limit: int

    def __init__(self, event_id: str, size: int, limit: int) -> None:
        why = f"event {event_id} is {size:,} bytes serialised, over the {limit:,}-byte limit"
        super().__init__(f"{why} ({_SIZE_HINT})", event_id=event_id, size=size, limit=limit)


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """One record that the broker did not acknowledge."""

    topic: str
    key: str
    record_id: str
    error: str


class DeliveryError(StreamingError):
    """Records that were not acknowledged by Kafka after retries, within the delivery timeout.

    ``failures`` lists each one; ``delivered`` counts the records acknowledged in the same call.
    """

    failures: list[DeliveryFailure]
    delivered: int

    def __init__(self, failures: list[DeliveryFailure], delivered: int) -> None:
        first = failures[0]
        why = f"{len(failures)} record(s) not delivered ({delivered} delivered)"
        super().__init__(
            f"{why}; first: {first.record_id} to {first.topic}: {first.error}",
            failures=failures,
            delivered=delivered,
        )


class TopicError(StreamingError):
    """A topic could not be created or described."""

    topic: str

    def __init__(self, topic: str, problem: str) -> None:
        super().__init__(f"topic {topic}: {problem}", topic=topic)


class KafkaUnavailable(StreamingError):
    """No broker answered at the configured bootstrap servers within the timeout."""

    bootstrap: str

    def __init__(self, bootstrap: str, cause: BaseException) -> None:
        why = f"Kafka is not reachable at {bootstrap} ({type(cause).__name__}: {cause})"
        super().__init__(f"{why}; {_KAFKA_HINT}", bootstrap=bootstrap)


class InvalidKey(StreamingError, ValueError):
    """A signing or verify key that is not the base64 of 32 raw bytes (``what`` names which one)."""

    what: str

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"{what} {problem}", what=what)


class MissingKey(StreamingError):
    """A process that signs or loads snapshots started without the key it needs: the learner without
    ``RIVULET_SIGNING_KEY``, a reader (API, replay, verify, CLI) without ``RIVULET_VERIFY_KEYS``."""

    setting: str

    def __init__(self, setting: str, role: str) -> None:
        super().__init__(f"{setting} is not set: {role} ({_KEYS_HINT})", setting=setting)


# what to do about it, the end of each message
_SIZE_HINT = "RIVULET_MAX_EVENT_BYTES; the broker's message.max.bytes must be at least as large"
_KAFKA_HINT = "check RIVULET_KAFKA_BOOTSTRAP or start it with scripts/services up"
_KEYS_HINT = "run `rivulet keys generate` for a key pair; `rivulet up` keeps one in <data dir>/stack/"


class SourceError(StreamingError, ValueError):
    """A source of rows that cannot be opened: an unknown River dataset or synthetic stream, a missing file,
    an unknown file type, an unreadable CSV header (``streaming.ingest.rows`` raises it)."""
