"""The learner's dead letters on real Kafka: a record with a large key cannot make a letter the broker
refuses (the letter carries the key's size and SHA-256, not its bytes), and a letter the broker refuses
anyway is counted and logged, never a learner stopped before its checkpoint."""

from __future__ import annotations

import hashlib
import itertools

import orjson
import pytest
from river import metrics
from river.datasets import synth

from streaming.clients import kafka_producer
from streaming.ingest.producer import Producer
from streaming.learning.deadletters import KafkaSink, learner_letter
from streaming.learning.spec import CheckpointPolicy, ModelSpec
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.support.kafka_read import read_all
from tests.support.learning import LEARNER_IDLE_S, registry
from tests.support.model_defs import scaled_lr

pytestmark = pytest.mark.integration

N = 300
T0 = 1_700_000_000_000
FEATURES = ("salary", "age", "loan", "hvalue", "commission")
SPECS = [
    ModelSpec("lr", "binary", "all", scaled_lr, features=FEATURES, metrics=(metrics.Accuracy,),
              checkpoint=CheckpointPolicy(every_records=100, every_seconds=1e9, keep=100)),
]  # fmt: skip


def test_a_record_with_a_700_kb_key_is_dead_lettered_and_the_learner_checkpoints(topics: Settings) -> None:
    s = topics
    data = [(x, bool(y)) for x, y in itertools.islice(synth.Agrawal(classification_function=2, seed=5), N)]
    producer = kafka_producer(s, acks="all", max_request_size=1_048_576)
    big_key, big_value = b"k" * 700_000, b"\xff" * 300_000  # fits the broker; not JSON
    bad = producer.send(s.topics.labels, big_value, key=big_key).get(timeout=30)
    for i, (x, y) in enumerate(data):
        event = {"event_id": f"ev{i}", "ts": T0 + 1_000 * i, "label": None}
        record = {"view": "all", "entity": f"u{i % 20}", "event": event, "features": x}
        producer.send(s.topics.features, orjson.dumps(record), key=f"u{i % 20}".encode())
        label = {"event_id": f"ev{i}", "label": y, "ts": T0 + 1_000 * i + 1}
        producer.send(s.topics.labels, orjson.dumps(label), key=f"ev{i}".encode())
    producer.flush()
    producer.close()

    worker = LearnerWorker(s, SPECS, registry=registry(s))
    # before: DeliveryError from the checkpoint's flush
    worker.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)

    state = worker.core.models["lr"]
    assert state.status == "learning" and state.n_learned == N
    assert sum(state.rejected.values()) == 1, state.rejected
    assert registry(s).versions("lr"), "no checkpoint"
    # the checkpointed positions are past the refused record: a restart does not meet it again
    assert worker.offsets["lr"][s.topics.labels][bad.partition] > bad.offset
    assert getattr(worker.sink, "lost", None) == 0

    letters = [r for r in read_all(s.kafka_bootstrap, s.topics.dead_letters)]
    learner = [(r, orjson.loads(r.value)) for r in letters if orjson.loads(r.value).get("stage") == "learner"]
    assert len(learner) == 1
    record, letter = learner[0]
    assert (letter["topic"], letter["partition"], letter["offset"]) == (bad.topic, bad.partition, bad.offset)
    assert letter["models"] == ["lr"]
    assert record.key is None  # a large key is never the letter's Kafka key
    assert letter["key_b64"] is None and letter["key_bytes"] == len(big_key)
    assert letter["key_sha256"] == hashlib.sha256(big_key).hexdigest()
    assert len(record.value) + len(record.key or b"") <= 1_048_576


def test_a_letter_kafka_refuses_is_counted_not_raised(topics: Settings) -> None:
    s = topics
    # a budget larger than the producer takes: the letter is refused by the client and the broker
    sink = KafkaSink(Producer(s), s.topics.dead_letters, 10_000_000)
    labels = s.topics.labels
    sink.send(learner_letter("undecodable", "not JSON", labels, 0, 3, b"\xff" * 3_000_000, models=("m",)))
    sink.send(learner_letter("undecodable", "not JSON", labels, 0, 4, b"\xfe", models=("m",)))
    sink.flush()  # before: DeliveryError, and the learner never checkpointed again
    assert sink.lost == 1
    letters = [orjson.loads(r.value) for r in read_all(s.kafka_bootstrap, s.topics.dead_letters)]
    assert [(d["offset"], d["models"]) for d in letters] == [(4, ["m"])]
    sink.close()
