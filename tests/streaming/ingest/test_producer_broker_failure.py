"""A broker that dies mid-send: the failure reaches the caller, and every acknowledged event survives.

Runs its own single-node Kafka (same jars as scripts/services, private ports and data) so that killing
it does not disturb other tests.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from kafka.producer.future import FutureRecordMetadata
from localservices import KafkaNode

from features.events import Event
from streaming.errors import DeliveryError, KafkaUnavailable
from streaming.ingest.producer import Producer
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings
from tests.support.kafka_read import read_all

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def kafka_node(tmp_path_factory: pytest.TempPathFactory, kafka_up: str) -> Iterator[KafkaNode]:
    """One private node for the module (a JVM's start-up each); each test kills it, and it is killed at
    the end."""
    home = tmp_path_factory.mktemp("kafka")
    node = KafkaNode(home / "kafka", port=_free_port(), controller_port=_free_port(), heap="256m")
    yield node
    node.kill()


@pytest.fixture
def private_kafka(kafka_node: KafkaNode) -> KafkaNode:
    """The module's node, running: started afresh, or (re)started after the test before killed it; each
    test writes topics of its own prefix."""
    kafka_node.start()
    return kafka_node


def _event(i: int) -> Event:
    return Event(event_id=f"ev-{i:06d}", entity=f"e{i % 50}", ts=1_704_067_200_000 + i, fields={"i": i})


def test_broker_killed_mid_send_reports_failures_and_keeps_acknowledged_events(
    private_kafka: KafkaNode,
) -> None:
    delivery_timeout_ms = 6_000
    settings = Settings(
        kafka_bootstrap=private_kafka.bootstrap,
        topic_prefix="failure.",
        kafka_request_timeout_ms=2_000,
        kafka_delivery_timeout_ms=delivery_timeout_ms,
        kafka_max_block_ms=3_000,
    )
    with TopicAdmin(settings) as admin:
        admin.create([settings.topics.events], partitions=3)

    producer = Producer(settings)
    futures: dict[str, FutureRecordMetadata] = {}
    for i in range(3_000):  # a first part, acknowledged
        e = _event(i)
        futures[e.event_id] = producer.send(e)
    assert producer.flush() == 3_000

    for i in range(3_000, 5_000):  # in flight when the broker dies
        e = _event(i)
        futures[e.event_id] = producer.send(e)
    private_kafka.kill()
    started = time.monotonic()
    for i in range(5_000, 7_000):  # sent while the broker is down: enqueued, not yet failed
        e = _event(i)
        futures[e.event_id] = producer.send(e)
    with pytest.raises(DeliveryError) as info:
        producer.flush()
    elapsed = time.monotonic() - started
    error = info.value
    failed_ids = {f.record_id for f in error.failures}
    assert failed_ids, "no failure reported"
    assert all(f.topic == settings.topics.events and f.error for f in error.failures)
    # every record of the second part is accounted for: delivered or reported failed, by id
    assert error.delivered + len(failed_ids) == 4_000
    assert failed_ids <= {f"ev-{i:06d}" for i in range(3_000, 7_000)}
    # bounded by the configured timeouts, not kafka-python's 120 s default (a hang guard, not a benchmark)
    assert elapsed < 10 * delivery_timeout_ms / 1000, elapsed
    # every record was accounted for by the flush above and the broker is down: a close that flushed with
    # the default timeout (the delivery timeout) again would only wait for records already reported
    producer.close(timeout_s=0.5)

    private_kafka.start()
    acked = {event_id for event_id, f in futures.items() if f.succeeded()}
    assert len(acked) >= 3_000
    assert not acked & failed_ids
    stored = [
        Event.from_json(r.value).event_id for r in read_all(private_kafka.bootstrap, settings.topics.events)
    ]
    assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged events lost"
    assert len(stored) == len(set(stored)), "idempotent producer wrote a duplicate"


def test_sending_to_a_stopped_broker_fails_within_the_block_timeout(private_kafka: KafkaNode) -> None:
    settings = Settings(
        kafka_bootstrap=private_kafka.bootstrap,
        topic_prefix="down.",
        kafka_request_timeout_ms=2_000,
        kafka_delivery_timeout_ms=4_000,
        kafka_max_block_ms=2_000,
    )
    with TopicAdmin(settings) as admin:
        admin.create([settings.topics.events], partitions=1)
    producer = Producer(settings)
    private_kafka.kill()
    with pytest.raises(DeliveryError) as info:
        producer.send_many([_event(1)])
    assert info.value.failures[0].record_id == "ev-000001"
    producer.close()
    # a producer that cannot reach any broker says so, naming where it looked
    with pytest.raises(KafkaUnavailable, match=private_kafka.bootstrap):
        Producer(settings)
