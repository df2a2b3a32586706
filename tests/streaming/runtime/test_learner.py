"""The learner on real Kafka and Redis: River's progressive validation as the oracle, a crash drill with
SIGKILL, and the registry refusing a tampered newest version."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from river import evaluate, metrics

from streaming.clients import redis_client
from streaming.ingest.feed import LabelPolicy, publish
from streaming.ingest.producer import Producer
from streaming.ingest.rows import Row, RowMapping
from streaming.learning.snapshot import SnapshotRejected
from streaming.settings import Settings
from tests.support.learning import (
    events,
    featurise,
    learn,
    learner_process,
    registry,
    river_data,
)
from tests.support.model_defs import scaled_lr

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("delay", [None, 25])
def test_learner_metric_equals_progressive_val_score(
    topics: Settings, tmp_path: Path, delay: int | None
) -> None:
    s = topics
    evs = events(1_500, seed=21)
    with Producer(s) as producer:
        if delay is None:
            producer.send_many(evs)  # labels inline
        else:
            rows = [Row(i + 1, e.to_dict()) for i, e in enumerate(evs)]
            publish(rows, producer, RowMapping(), labels=LabelPolicy("topic", delay_events=delay))
    featurise(s, tmp_path)

    worker = learn(s)

    data = river_data(s, {e.event_id: e for e in evs})
    expected = evaluate.progressive_val_score(data, scaled_lr(), metrics.LogLoss(), delay=delay)
    state = worker.core.models["lr"]
    assert state.n_learned == len(evs) and state.counters["pending"] == 0
    assert state.metrics[0].get() == pytest.approx(expected.get(), rel=1e-9)
    # the checkpoint holds the same, tied to the offsets it has seen
    opened, rejected = registry(s).load_latest("lr")
    assert not rejected and opened.header["n_learned"] == len(evs)
    assert opened.header["metrics"]["LogLoss"] == pytest.approx(expected.get(), rel=1e-9)
    ends = {p: o for p, o in opened.header["offsets"][s.topics.features].items()}
    assert sum(ends.values()) == len(evs)


def test_crash_drill_learns_every_event_once(topics: Settings, tmp_path: Path) -> None:
    s = topics
    evs = events(6_000, seed=22)
    with Producer(s) as producer:
        producer.send_many(evs)
    featurise(s, tmp_path)
    reg = registry(s)
    for crash, target in enumerate((1_000, 2_500, 4_000)):
        proc = learner_process(s, "tests.support.model_defs", tmp_path / f"learn-{crash}.log")
        deadline = time.monotonic() + 120
        while True:
            versions = reg.versions("lr")
            if versions and versions[0].header.get("n_learned", 0) >= target:
                break
            assert proc.poll() is None, (tmp_path / f"learn-{crash}.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "learner made no progress"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-stream, possibly mid-checkpoint
        proc.wait()
    final = learn(s)  # restarts from the newest valid checkpoint and finishes
    state = final.core.models["lr"]
    assert state.n_learned == len(evs)
    # a model trained once, without crashes, on the same topics (its own registry keys)
    clean = learn(s, prefix=f"{s.redis_prefix}clean:").core.models["lr"]
    assert clean.n_learned == len(evs)
    probes = [x for x, _ in river_data(s, {e.event_id: e for e in evs})[:200]]
    assert [state.model.predict_proba_one(x) for x in probes] == [
        clean.model.predict_proba_one(x) for x in probes
    ]
    assert state.metrics[0].get() == clean.metrics[0].get()


def test_a_tampered_newest_version_is_refused_and_the_previous_one_used(topics: Settings) -> None:
    reg = registry(topics)
    v1 = reg.save("m", {"w": 1}, {"offsets": {}})
    v2 = reg.save("m", {"w": 2}, {"offsets": {}})
    client = redis_client(topics)
    key = f"{topics.redis_prefix}model:{{m}}:v:{v2}"
    blob = bytearray(client.get(key))  # type: ignore[arg-type]
    blob[-2] ^= 0x10
    client.set(key, bytes(blob))
    opened, rejected = reg.load_latest("m")
    assert opened.state == {"w": 1} and opened.header["version"] == v1
    # the signed header carries the payload's SHA-256: an altered payload fails that check
    assert len(rejected) == 1 and "payload hash mismatch" in rejected[0] and f"version {v2}" in rejected[0]
    with pytest.raises(SnapshotRejected, match="payload hash mismatch"):
        reg.set_current("m", v2)  # a version that does not verify cannot be promoted
    reg.set_current("m", v1)
    assert reg.current_version("m") == v1
