"""Events sent with the SDK, read back from real Kafka with a plain consumer: all there, once, in order."""

from __future__ import annotations

from collections import defaultdict

import orjson
import pytest

from features.events import Event
from streaming.ingest.producer import Producer
from streaming.settings import Settings
from tests.support.kafka_read import read_all

pytestmark = pytest.mark.integration

N_EVENTS = 10_000
N_ENTITIES = 137


def test_ten_thousand_events_arrive_once_each_in_entity_order(rivulet_topics: Settings) -> None:
    settings = rivulet_topics
    sent = [
        {
            "entity": f"user-{i % N_ENTITIES}",
            "ts": 1_704_067_200_000 + i,
            "fields": {"seq": i, "amount": i * 0.5},
        }
        for i in range(N_EVENTS)
    ]
    with Producer(settings) as producer:
        delivered = producer.send_many(sent)
    assert delivered == N_EVENTS

    records = read_all(settings.kafka_bootstrap, settings.topics.events)
    events = [Event.from_json(r.value) for r in records]
    # each exactly once: N records, N distinct ids, and the multiset of payloads equals what was sent
    assert len(records) == N_EVENTS
    assert len({e.event_id for e in events}) == N_EVENTS
    assert sorted(e.fields["seq"] for e in events) == list(range(N_EVENTS))
    # keyed by entity, so one entity lives on one partition and its events keep the order they were sent in
    partitions: dict[str, set[int]] = defaultdict(set)
    seqs: dict[str, list[int]] = defaultdict(list)
    for r, e in zip(records, events, strict=True):
        assert r.key == e.entity.encode()
        partitions[e.entity].add(r.partition)
        seqs[e.entity].append(int(e.fields["seq"]))  # type: ignore[arg-type]
    assert all(len(p) == 1 for p in partitions.values())
    assert len(seqs) == N_ENTITIES
    for entity, order in seqs.items():
        assert order == sorted(order), f"{entity} out of order"
    # the payload is the event as sent, normalised
    first = orjson.loads(records[0].value)
    assert set(first) == {"event_id", "entity", "ts", "fields"}


def test_labels_go_to_the_labels_topic_keyed_by_event(rivulet_topics: Settings) -> None:
    settings = rivulet_topics
    with Producer(settings) as producer:
        producer.send({"event_id": "ev-1", "entity": "a", "ts": 1000, "fields": {}})
        producer.send_label("ev-1", True, 2000)
        producer.send_label(None, 3.5, "1970-01-01T00:00:03Z", prediction_id="pred-9")
    labels = read_all(settings.kafka_bootstrap, settings.topics.labels)
    assert sorted((r.key, orjson.loads(r.value)["ts"]) for r in labels) == [
        (b"ev-1", 2000),
        (b"p:pred-9", 3000),
    ]
    values = sorted((orjson.loads(r.value) for r in labels), key=lambda v: v["ts"])
    assert values[0] == {"event_id": "ev-1", "label": True, "ts": 2000}
    assert values[1] == {"prediction_id": "pred-9", "label": 3.5, "ts": 3000}
