"""Topic administration on the real broker."""

from __future__ import annotations

import pytest

from streaming.errors import TopicError
from streaming.ingest.producer import Producer
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings

pytestmark = pytest.mark.integration


def test_create_is_idempotent_and_describe_reports_offsets(settings: Settings, kafka_up: str) -> None:
    custom = settings.model_copy(update={"partitions": 4, "retention_ms": 3_600_000})
    with TopicAdmin(custom) as admin:
        try:
            assert admin.create() == dict.fromkeys(custom.topics.all(), True)
            assert admin.create() == dict.fromkeys(custom.topics.all(), False)
            assert admin.list_topics() == sorted(custom.topics.all())
            with Producer(custom) as producer:
                producer.send_many([{"entity": f"e{i}", "ts": i, "fields": {}} for i in range(40)])
            info = admin.describe(custom.topics.events)
            assert [p.partition for p in info.partitions] == [0, 1, 2, 3]
            assert info.messages == 40
            assert all(p.earliest == 0 for p in info.partitions)
            assert all(p.leader == 1 and p.isr == [1] for p in info.partitions)
            assert info.configs["retention.ms"] == "3600000"
            with pytest.raises(TopicError, match="does not exist"):
                admin.describe(custom.topic_prefix + "missing")
        finally:
            admin.delete(custom.topics.all())


def test_min_insync_replicas_is_set_on_created_topics(settings: Settings, kafka_up: str) -> None:
    """``RIVULET_MIN_INSYNC_REPLICAS`` reaches each created topic (the broker's describe says so); a
    replication factor given below it is refused before anything is created."""
    custom = Settings(
        kafka_bootstrap=settings.kafka_bootstrap,
        topic_prefix=settings.topic_prefix,
        replication_factor=1,
        min_insync_replicas=1,
    )
    name = custom.topics.events
    with TopicAdmin(custom) as admin:
        try:
            assert admin.create([name]) == {name: True}
            assert admin.describe(name).configs["min.insync.replicas"] == "1"
        finally:
            admin.delete([name])
    strict = Settings(
        kafka_bootstrap=settings.kafka_bootstrap,
        topic_prefix=settings.topic_prefix + "strict.",
        replication_factor=2,
        min_insync_replicas=2,
    )
    with TopicAdmin(strict) as admin:
        with pytest.raises(TopicError, match=r"min\.insync\.replicas 2 exceeds the replication factor 1"):
            admin.create([strict.topics.events], replication_factor=1)
        assert strict.topics.events not in admin.list_topics()
