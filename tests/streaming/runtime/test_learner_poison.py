"""Poison records against the real learner process (real Kafka and Redis): a ``banana`` label, a label of 2,
bytes that are not JSON, ``1e308`` in a features record and in a served prediction. The learner is killed
with SIGKILL twice and restarted; it never stops by itself, every bad record is on the dead-letter topic with
its reason and position, no stored version ever learned ``banana``, and the final metrics equal River's
progressive validation on the good stream alone. A learner stopping on an exception writes no checkpoint."""

from __future__ import annotations

import base64
import itertools
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from river import evaluate, metrics, tree

from streaming.clients import kafka_producer
from streaming.learning.spec import CheckpointPolicy
from streaming.replay.verify import verify
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.support.kafka_read import read_all
from tests.support.learning import LEARNER_IDLE_S, Labelled, delayed_stream, learner_process, registry, ts
from tests.support.model_defs import scaled_lr
from tests.support.poison_models import MODELS

pytestmark = pytest.mark.integration

N, DELAY, HALF = 4_000, 25, 2_000


def good_stream() -> tuple[Labelled, list[tuple[str, dict[str, Any]]]]:
    return delayed_stream(N, DELAY, function=1, seed=7)


def poison(data: list[tuple[dict[str, Any], bool]]) -> list[tuple[str, int, Any, str]]:
    """(role, position in the stream by event index, value, expected reason) of the bad records."""
    x = data[0][0]
    return [
        ("labels", 600, {"event_id": "ev600", "label": "banana", "ts": ts(600) + 1}, "label_type"),
        (
            "features",
            900,
            {
                "view": "all",
                "entity": "u1",
                "event": {"event_id": "huge", "ts": ts(900) + 1},
                "features": {**x, "salary": 1e308},
            },
            "value_domain",
        ),
        ("labels", 1_400, b"\x00\xffnot json at all", "undecodable"),
        ("labels", 2_600, {"event_id": "ev2600", "label": 2, "ts": ts(2_600) + 1}, "label_type"),
        (
            "predictions",
            3_000,
            {
                "prediction_id": "pz",
                "view": "all",
                "model": "tree",
                "ts": ts(3_000) + 1,
                "features": {**x, "salary": 1e308},
            },
            "value_domain",
        ),
    ]


class Stream:
    """Produces the stream in parts, recording where each bad record landed."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        # one request in flight per connection: records land in the order sent, without waiting for each
        self.producer = kafka_producer(s, acks="all", max_in_flight_requests_per_connection=1)
        self.positions: dict[tuple[str, int, int], tuple[str, bytes]] = {}  # position -> (reason, bytes)
        self._bad: list[tuple[Any, str, bytes]] = []  # (future, reason, bytes) of the bad records

    def send(self, role: str, value: Any, reason: str | None = None) -> None:
        topic = getattr(self.s.topics, role)
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        key = (value.get("entity") or value.get("event_id") or "k") if isinstance(value, dict) else "k"
        future = self.producer.send(topic, raw, key=str(key).encode())
        if reason is not None:
            self._bad.append((future, reason, raw))

    def flush(self) -> None:
        self.producer.flush()
        for future, reason, raw in self._bad:
            meta = future.get(timeout=30)
            self.positions[(meta.topic, meta.partition, meta.offset)] = (reason, raw)
        self._bad.clear()

    def close(self) -> None:
        self.flush()
        self.producer.close()


def kill_when_learned(s: Settings, proc: subprocess.Popen[bytes], log: Path, target: int) -> None:
    """SIGKILL once a checkpoint of both models has learned ``target`` records; the learner must not have
    stopped by itself before."""
    reg = registry(s)
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, f"the learner stopped by itself:\n{log.read_text()[-3000:]}"
        done = [reg.versions(m.name) for m in MODELS]
        if all(v and v[0].header.get("n_learned", 0) >= target for v in done):
            break
        assert time.monotonic() < deadline, f"no progress:\n{log.read_text()[-3000:]}"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_poison_records_across_kill_and_restart(topics: Settings, tmp_path: Path) -> None:
    s = topics
    data, good = good_stream()
    bad = poison(data)
    stream = Stream(s)
    cut = next(k for k, (role, v) in enumerate(good) if role == "features" and v["event"]["ts"] == ts(HALF))

    waiting = list(bad)

    def produce(part: list[tuple[str, dict[str, Any]]]) -> None:
        for role, value in part:
            stream.send(role, value)
            at = (value.get("event") or value)["ts"]
            while waiting and ts(waiting[0][1]) < at:  # just after its place in event time
                b_role, _, b_value, reason = waiting.pop(0)
                stream.send(b_role, b_value, reason)

    produce(good[:cut])
    stream.flush()
    log = tmp_path / "learn.log"
    first = learner_process(s, "tests.support.poison_models", log)
    kill_when_learned(s, first, log, 1_500)  # past the banana label and the 1e308 record
    produce(good[cut:])
    stream.close()
    second = learner_process(s, "tests.support.poison_models", log)
    kill_when_learned(s, second, log, 3_000)

    final = LearnerWorker(s, MODELS, registry=registry(s))  # restarts from the newest checkpoints
    final.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)

    # the final metrics equal River's progressive validation on the good stream alone
    expected_rejected = {"label_type": 2, "undecodable": 1, "value_domain": 2}
    for spec, model in (("lr", scaled_lr()), ("tree", tree.HoeffdingTreeClassifier())):
        state = final.core.models[spec]
        assert state.status == "learning" and state.n_learned == N
        for metric in (metrics.LogLoss(), metrics.Accuracy()):
            name = type(metric).__name__
            want = evaluate.progressive_val_score(data, model.clone(), metric, delay=DELAY).get()
            assert state.metric_values()[name] == pytest.approx(want, rel=1e-9), (spec, name)
        assert state.rejected == expected_rejected  # each counted once, across two crashes
    assert set(final.core.models["tree"].model.classes) == {False, True}

    # every stored version: never learned banana, serves a prediction, counts only grow
    reg = registry(s)
    for spec in ("lr", "tree"):
        versions = sorted(reg.versions(spec), key=lambda v: v.version)
        assert len(versions) >= 3
        last_learned, last_rejected = -1, 0
        for info in versions:
            opened = reg.load(spec, info.version)
            assert opened.header["n_learned"] >= last_learned
            assert sum(opened.header["rejected"].values()) >= last_rejected
            last_learned, last_rejected = opened.header["n_learned"], sum(opened.header["rejected"].values())
            model = opened.state.model
            if spec == "tree":
                assert "banana" not in model.classes and 2 not in model.classes
            assert set(model.predict_proba_one(data[5][0])) <= {False, True}
        assert last_learned == N and opened.header["rejected"] == expected_rejected

    # the newest version rebuilds from the log through the same router: the bad records rejected again
    for spec in ("lr", "tree"):
        newest = max(v.version for v in reg.versions(spec))
        verified = verify(s, reg, MODELS, spec, newest)
        assert verified.ok and verified.base == "a fresh model", verified.mismatches

    # each bad record is on the dead-letter topic with its reason, stage, position and original bytes
    letters = [orjson.loads(r.value) for r in read_all(s.kafka_bootstrap, s.topics.dead_letters)]
    found = {(d["topic"], d["partition"], d["offset"]): d for d in letters if d.get("stage") == "learner"}
    assert set(found) == set(stream.positions)
    for position, (reason, raw) in stream.positions.items():
        d = found[position]
        assert d["reason"] == reason and sorted(d["models"]) == ["lr", "tree"]
        assert base64.b64decode(d["value_b64"]) == raw


def test_a_learner_stopping_on_an_exception_writes_no_checkpoint(topics: Settings) -> None:
    s = topics
    _, good = good_stream()
    stream = Stream(s)
    for role, value in good[:600]:
        stream.send(role, value)
    stream.close()
    calls = itertools.count()

    def clock() -> float:  # fails once the learner has been turning a while (records processed)
        if next(calls) > 40:
            raise RuntimeError("the clock broke")
        return time.monotonic()

    spec = MODELS[0]
    lazy = spec.__class__(
        **{**spec.__dict__, "checkpoint": CheckpointPolicy(every_records=10**9, every_seconds=1e9)}
    )
    worker = LearnerWorker(s, [lazy], registry=registry(s), clock=clock)
    with pytest.raises(RuntimeError, match="the clock broke"):
        worker.run(install_signals=False)
    assert worker.core.models["lr"].n_learned > 0  # it had learned: the old learner checkpointed that
    assert registry(s).versions("lr") == []
