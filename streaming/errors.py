"""Errors of the ``streaming`` package: one root, subclasses that carry their context.

The tree::

    StreamingError
    ├── EventTooLarge            an event over max_event_bytes, not sent (also a ValueError)
    ├── DeliveryError            records Kafka did not acknowledge (failures, delivered)
    ├── TopicError               a topic that could not be created or described
    ├── KafkaUnavailable         no broker answered at the bootstrap servers
    ├── InvalidKey               a signing or verify key that is not base64 of 32 bytes (also a ValueError)
    ├── MissingKey               a process started without the key it needs (setting)
    └── LearningError            streaming.learning.errors: rejected records, and beside their code
        ├── SnapshotRejected     a snapshot that failed verification, never unpickled (header, reason)
        └── NoValidVersion       a model with no version that verifies (name, rejected)
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
    "StreamingError",
    "TopicError",
]


class StreamingError(Exception):
    """Root of every error raised by ``streaming``."""


class EventTooLarge(StreamingError, ValueError):
    """A serialised event over the configured ``max_event_bytes``; it was not sent."""

    def __init__(self, event_id: str, size: int, limit: int) -> None:
        self.event_id, self.size, self.limit = event_id, size, limit
        super().__init__(
            f"event {event_id} is {size:,} bytes serialised, over the {limit:,}-byte limit "
            "(RIVULET_MAX_EVENT_BYTES; the broker's message.max.bytes must be at least as large)"
        )


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

    def __init__(self, failures: list[DeliveryFailure], delivered: int) -> None:
        self.failures = failures
        self.delivered = delivered
        first = failures[0]
        super().__init__(
            f"{len(failures)} record(s) not delivered ({delivered} delivered); first: "
            f"{first.record_id} to {first.topic}: {first.error}"
        )


class TopicError(StreamingError):
    """A topic could not be created or described."""

    def __init__(self, topic: str, problem: str) -> None:
        self.topic = topic
        super().__init__(f"topic {topic}: {problem}")


class KafkaUnavailable(StreamingError):
    """No broker answered at the configured bootstrap servers within the timeout."""

    def __init__(self, bootstrap: str, cause: BaseException) -> None:
        self.bootstrap = bootstrap
        super().__init__(
            f"Kafka is not reachable at {bootstrap} ({type(cause).__name__}: {cause}); "
            "check RIVULET_KAFKA_BOOTSTRAP or start it with scripts/services up"
        )


class InvalidKey(StreamingError, ValueError):
    """A signing or verify key that is not the base64 of 32 raw bytes (``what`` names which one)."""

    def __init__(self, what: str, problem: str) -> None:
        self.what = what
        super().__init__(f"{what} {problem}")


class MissingKey(StreamingError):
    """A process that signs or loads snapshots started without the key it needs: the learner without
    ``RIVULET_SIGNING_KEY``, a reader (API, replay, verify, CLI) without ``RIVULET_VERIFY_KEYS``."""

    def __init__(self, setting: str, role: str) -> None:
        self.setting = setting
        super().__init__(
            f"{setting} is not set: {role} (run `rivulet keys generate` for a key pair; `rivulet up` "
            "keeps one in <data dir>/stack/)"
        )
