"""What the benchmark scripts share: a scratch namespace on the live Kafka and Redis, and its removal."""

from __future__ import annotations

import uuid
from typing import Any

import redis

from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings

__all__ = ["drop", "fresh"]


def fresh(base: Settings, **update: Any) -> Settings:
    """Settings with a topic prefix and a Redis key prefix of their own, so a run touches nothing else."""
    run = uuid.uuid4().hex[:8]
    prefixes = {"topic_prefix": f"bench.{run}.", "redis_prefix": f"bench:{run}:"}
    return base.model_copy(update={**prefixes, **update})


def drop(settings: Settings) -> None:
    """Delete the run's topics (repartition topics included) and every Redis key under its prefix."""
    with TopicAdmin(settings) as admin:
        admin.delete([t for t in admin.list_topics(all_topics=True) if settings.topic_prefix in t])
    client = redis.Redis.from_url(settings.redis_url)
    for key in client.scan_iter(match=f"{settings.redis_prefix}*", count=1000):
        client.delete(key)
    client.close()
