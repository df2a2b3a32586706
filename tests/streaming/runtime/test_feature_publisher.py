"""The feature worker's publisher (streaming.runtime.feature_publisher) on real Kafka."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streaming.ingest.topics import TopicAdmin
from streaming.runtime.feature_publisher import AsyncPublisher
from streaming.settings import Settings
from tests.support.kafka_read import read_all

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(settings: Settings, kafka_up: str, redis_client: Any) -> Any:
    with TopicAdmin(settings) as admin:
        admin.create()
        yield settings
        admin.delete([t for t in admin.list_topics(all_topics=True) if settings.topic_prefix in t])


def test_the_first_publishes_of_two_agents_at_once_start_the_producer_once(topics: Settings) -> None:
    """The worker's agents (a direct one and a re-keyed one) share one publisher, and their first batches
    may publish at the same time. Both started the producer: aiokafka's second start set its producer id
    twice and raised ``InvalidStateError`` in the agent, which crashed the worker (seen with the eager
    consumer in CI, and in ``rivulet up``)."""
    topic = topics.topics.features

    async def go() -> None:
        publisher = AsyncPublisher(topics)
        try:
            await asyncio.gather(
                *(publisher.publish(topic, [(f"k{i}".encode(), f"v{i}".encode())]) for i in range(4))
            )
        finally:
            await publisher.stop()

    asyncio.run(go())
    assert sorted(r.value for r in read_all(topics.kafka_bootstrap, topic)) == [
        f"v{i}".encode() for i in range(4)
    ]
