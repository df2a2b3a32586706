"""Rivulet's streaming layer: settings, the producer SDK, topic administration and the CLI."""

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
