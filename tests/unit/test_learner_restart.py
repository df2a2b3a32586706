"""A learner restored from its checkpoint reports only what is new in its monitoring samples."""

from __future__ import annotations

import itertools

import orjson
from river import linear_model, metrics, preprocessing
from river.datasets import synth

from streaming.learning.keys import generate
from streaming.learning.merge import Positioned
from streaming.learning.registry import MemoryRegistry
from streaming.learning.router import TopicRoles
from streaming.learning.spec import CheckpointPolicy, ModelSpec
from streaming.learning.worker import Learner

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
