"""A hostile producer against the real learner (real Kafka and Redis): a features record stamped
9999-12-31, a class of another type for a multiclass model, a string where every model has taken numbers,
a label whose id is 10,000 characters long. The learner never stops, quarantines nothing, each bad record is
on the dead-letter topic with its reason and position, the final metrics equal River's progressive
validation on the good stream alone, and the newest version of each model verifies from the log."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from river import evaluate, metrics, tree

from streaming.clients import kafka_producer
from streaming.learning.spec import CheckpointPolicy, ModelSpec
from streaming.replay.verify import verify
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.support.kafka_read import read_all
from tests.support.learning import LEARNER_IDLE_S, Labelled, delayed_stream, registry, ts
from tests.support.model_defs import scaled_lr

pytestmark = pytest.mark.integration

N, DELAY = 1_500, 25
LAST_MS = 253_402_300_799_000  # 9999-12-31T23:59:59Z: a valid event time
FEATURES = ("salary", "age", "loan", "hvalue", "commission")
POLICY = CheckpointPolicy(every_records=300, every_seconds=1e9, keep=100)
SPECS = [
    ModelSpec("lr", "binary", "all", scaled_lr, features=FEATURES,
              metrics=(metrics.LogLoss, metrics.Accuracy), checkpoint=POLICY),
    ModelSpec("tree", "binary", "all", tree.HoeffdingTreeClassifier, features=FEATURES,
              metrics=(metrics.Accuracy,), checkpoint=POLICY),
    ModelSpec("multi", "multiclass", "all", tree.HoeffdingTreeClassifier, features=FEATURES,
              metrics=(metrics.Accuracy,), checkpoint=POLICY),
]  # fmt: skip


def good_stream() -> tuple[Labelled, list[tuple[str, dict[str, Any]]]]:
    return delayed_stream(N, DELAY, function=2, seed=5)


def attack(data: list[tuple[dict[str, Any], bool]]) -> list[tuple[int, str, dict[str, Any], str | None]]:
    """(event index it follows, role, record, expected reason or None when no model rejects it)."""
    x = data[0][0]
    return [
        # valid, but stamped at the end of time: before, every pending prediction expired at once and the
        # rest of its partition was processed after every other record
        (200, "features", {"view": "all", "entity": "u3", "event": {"event_id": "far", "ts": LAST_MS},
                           "features": x}, None),
        (400, "labels", {"event_id": "ev380", "label": "x", "ts": ts(400) + 1}, "label_type"),
        (700, "features", {"view": "all", "entity": "u4", "features": {**x, "salary": "abc"},
                           "event": {"event_id": "str", "ts": ts(700) + 1, "label": True}}, "feature_type"),
        (900, "labels", {"event_id": "e" * 10_000, "label": True, "ts": ts(900) + 1}, "malformed_label"),
    ]  # fmt: skip


def test_a_hostile_producer_against_the_real_learner(topics: Settings) -> None:
    s = topics
    data, good = good_stream()
    bad = attack(data)
    # one request in flight per connection: records land in the order sent, without waiting for each
    producer = kafka_producer(s, acks="all", max_in_flight_requests_per_connection=1)
    sent: list[tuple[Any, str]] = []  # the futures of the bad records a model rejects, and why
    waiting = list(bad)

    def send(role: str, value: dict[str, Any]) -> Any:
        key = str(value.get("entity") or value.get("event_id"))[:100].encode()
        return producer.send(getattr(s.topics, role), orjson.dumps(value), key=key)

    for role, value in good:
        send(role, value)
        at = (value.get("event") or value)["ts"]
        while waiting and ts(waiting[0][0]) < at:
            _, b_role, b_value, reason = waiting.pop(0)
            future = send(b_role, b_value)
            if reason is not None:
                sent.append((future, reason))
    producer.flush()
    positions = {(m.topic, m.partition, m.offset): reason for f, reason in sent for m in (f.get(timeout=30),)}
    producer.close()

    worker = LearnerWorker(s, SPECS, registry=registry(s))
    worker.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)

    expected = {"label_type": 1, "feature_type": 1, "malformed_label": 1}
    only = [({k: x[k] for k in FEATURES}, y) for x, y in data]
    for spec in SPECS:
        state = worker.core.models[spec.name]
        assert state.status == "learning", state.quarantine
        assert state.n_learned == N and state.rejected == expected, (spec.name, state.rejected)
        assert state.counters["expired"] == 0 and state.counters["unknown_labels"] == 0
        for factory in spec.metrics:
            want = evaluate.progressive_val_score(only, spec.new_model(), factory(), delay=DELAY).get()
            got = state.metric_values()[factory.__name__]  # type: ignore[attr-defined]
            assert got == pytest.approx(want, rel=1e-9), (spec.name, factory)
    assert set(worker.core.models["multi"].model.classes) == {False, True}  # type: ignore[attr-defined]

    reg = registry(s)
    for spec in SPECS:
        newest = max(v.version for v in reg.versions(spec.name))
        verified = verify(s, reg, SPECS, spec.name, newest)
        assert verified.ok, verified.mismatches

    letters = [orjson.loads(r.value) for r in read_all(s.kafka_bootstrap, s.topics.dead_letters)]
    found = {(d["topic"], d["partition"], d["offset"]): d for d in letters if d.get("stage") == "learner"}
    assert {p: d["reason"] for p, d in found.items()} == positions
    for d in found.values():
        assert sorted(d["models"]) == ["lr", "multi", "tree"]
