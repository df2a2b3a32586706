"""A learner restored from its checkpoint reports only what is new in its monitoring samples."""

from __future__ import annotations

import itertools

import orjson
import pytest
from river import linear_model, metrics, preprocessing
from river.datasets import synth

from streaming.learning.keys import generate
from streaming.learning.merge import Positioned
from streaming.learning.registry import MemoryRegistry
from streaming.learning.router import TopicRoles
from streaming.learning.spec import CheckpointPolicy, ModelSpec
from streaming.runtime.learner import Learner

pytestmark = pytest.mark.unit

ROLES = TopicRoles("f", "l", "p")
SPEC = ModelSpec(
    "lr",
    "binary",
    "v",
    lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    metrics=(metrics.Accuracy,),
    checkpoint=CheckpointPolicy(every_records=1_000_000, every_seconds=3600),
)


def records(start: int, n: int) -> list[Positioned]:
    # the concept changes completely at 1,000: what was approved is refused
    stream = synth.Agrawal(classification_function=0, seed=5)
    out = []
    for i, (x, y) in enumerate(itertools.islice(stream, start, start + n), start=start):
        y = y if i < 1_000 else not y
        value = {"view": "v", "entity": f"e{i % 7}", "event": {"event_id": f"ev{i}", "ts": i, "label": y}}
        out.append(Positioned(i, 1, 0, i, "f", orjson.loads(orjson.dumps({**value, "features": x}))))
    return out


def test_drifts_before_a_restart_are_not_reported_again() -> None:
    registry = MemoryRegistry(signer=generate())
    first = Learner([SPEC], registry, ROLES)
    for rec in records(0, 3_000):
        first.process(rec)
    first.checkpoint()
    drifts = first.core.models["lr"].counters["drifts"]
    assert drifts >= 1, "the concept drift at 1,000 is detected"
    assert len(registry.history("lr")[-1]["drifts"]) == drifts

    second = Learner([SPEC], registry, ROLES)  # a restart: restored from the checkpoint
    second.restore()
    for rec in records(3_000, 200):
        second.process(rec)
    second.checkpoint()
    state = second.core.models["lr"]
    new = state.counters["drifts"] - drifts
    latest = registry.history("lr")[-1]
    assert latest["learned"] == 3_200 and len(latest["drifts"]) == new


def test_rejections_are_in_the_checkpoint_header_and_survive_a_restart() -> None:
    from streaming.learning.deadletters import MemorySink

    registry = MemoryRegistry(signer=generate())
    sink = MemorySink()
    first = Learner([SPEC], registry, ROLES, sink=sink)
    recs = records(0, 300)
    banana = Positioned(150, 0, 0, 0, "l", {"event_id": "ev10", "label": "banana", "ts": 150}, b"x")
    for rec in [*recs[:150], banana, *recs[150:]]:
        first.process(rec)
    first.checkpoint()
    opened, _ = registry.load_latest("lr")
    assert opened.header["rejected"] == {"label_type": 1}
    assert [(d.reason, d.record.topic, d.record.offset) for d in sink.letters] == [("label_type", "l", 0)]

    second = Learner([SPEC], registry, ROLES)  # a restart: the counts come back with the state
    second.restore()
    assert second.core.models["lr"].rejected == {"label_type": 1}
    second.process(Positioned(400, 0, 0, 1, "l", {"event_id": "ev11", "label": 7, "ts": 400}, b"y"))
    assert second.core.models["lr"].rejected == {"label_type": 2}
