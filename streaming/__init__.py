"""Rivulet's streaming layer, by role: ``ingest`` (the producer SDK, row sources, topic admin), ``runtime``
(the feature worker, the learner process, the embedded stack, the demo, ``rivulet up``), ``learning`` (the
learner core, the registry), ``replay`` and ``cli``; at the top only what every role shares: ``settings``,
``errors``, ``logs`` and ``clients`` (every Kafka, Redis and registry client built from the settings).

The names below are the public surface of the package root."""

from streaming.errors import DeliveryError, DeliveryFailure, EventTooLarge, StreamingError, TopicError
from streaming.ingest.producer import Producer, producer_config
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings, Topics

__all__ = [
    "DeliveryError",
    "DeliveryFailure",
    "EventTooLarge",
    "Producer",
    "Settings",
    "StreamingError",
    "TopicAdmin",
    "TopicError",
    "Topics",
    "producer_config",
]
