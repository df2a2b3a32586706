"""The champion/challenger lifecycle through the learner crash drill (issue 14), on real Kafka and Redis: a
concept change in the features topic, the learner killed with SIGKILL at four points (before the drift,
around the challenger's start and its promotion, on probation), restarted each time from its checkpoints;
it ends with the same models, the same champion and the same decisions (ids, records and evidence) as a
learner that never crashed, on the same topics under registry keys of its own."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streaming import clients
from streaming.learning.registry import RedisRegistry
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.support.drifting import agrawal_drift
from tests.support.learning import LEARNER_IDLE_S, learner_process, registry, ts
from tests.support.model_defs import LIFECYCLE

pytestmark = pytest.mark.integration

P, N = 5_000, 10_000


def publish(s: Settings) -> list[dict[str, Any]]:
    """Agrawal 0, then 4 from record P; labels inline; one second apart. The inputs, for probes."""
    stream = agrawal_drift(6, P)
    producer = clients.kafka_producer(s)
    xs = []
    for i, (x, y) in enumerate(stream.take(N)):
        entity = f"u{i % 20}"
        event = {"event_id": f"ev{i}", "ts": ts(i), "label": bool(y)}
        record = {"view": "all", "entity": entity, "event": event, "features": x}
        producer.send(s.topics.features, orjson.dumps(record), key=entity.encode())
        xs.append(x)
    producer.flush()
    producer.close()
    return xs


def finish(s: Settings, reg: RedisRegistry) -> LearnerWorker:
    worker = LearnerWorker(s, [LIFECYCLE], registry=reg)
    # a restored learner's first fetch waits on the restore: the idle it stops after is the one before the
    # suite was trimmed (3 s), in case the trimmed one stopped it early (a failure seen once in CI)
    worker.run(max_idle_s=max(LEARNER_IDLE_S, 3.0), install_signals=False)
    return worker


def test_the_lifecycle_through_the_crash_drill(topics: Settings, tmp_path: Path) -> None:
    s = topics
    xs = publish(s)
    reg = registry(s)
    for crash, target in enumerate((2_000, 5_500, 6_000, 7_500)):
        log = tmp_path / f"learn-{crash}.log"
        proc = learner_process(s, "tests.support.model_defs:LIFECYCLE", log)
        deadline = time.monotonic() + 120
        while True:
            versions = reg.versions("m")
            if versions and versions[0].header.get("n_learned", 0) >= target:
                break
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "learner made no progress"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-stream, possibly mid-checkpoint
        proc.wait()
    crashed = finish(s, reg)
    clean_reg = registry(s, prefix=f"{s.redis_prefix}clean:")
    clean = finish(s.model_copy(update={"redis_prefix": f"{s.redis_prefix}clean:"}), clean_reg)

    decisions, clean_decisions = reg.decisions("m"), clean_reg.decisions("m")
    assert [d["kind"] for d in clean_decisions][:2] == ["challenger", "promotion"], clean_decisions

    def timeless(ds: list[dict[str, Any]]) -> list[dict[str, Any]]:  # saved_at: when a checkpoint wrote it
        return [{k: v for k, v in d.items() if k != "saved_at"} for d in ds]

    # what a failure needs to be understood (seen once in CI, never locally): the killed learners' logs and
    # the versions each model was left with
    logs = "\n".join(f"{f.name}: {f.read_text()[-1500:]}" for f in sorted(tmp_path.glob("learn-*.log")))
    kept = {m: [v.header.get("n_learned") for v in reg.versions(m)[:5]] for m in crashed.core.models}
    assert timeless(decisions) == timeless(clean_decisions), f"versions {kept}\n{logs}"
    champion = clean.core.champion("m")
    assert champion is not None and champion.name != "m"
    assert reg.champion("m") == clean_reg.champion("m") == champion.name
    assert crashed.core.champion("m").name == champion.name  # type: ignore[union-attr]
    assert set(crashed.core.models) == set(clean.core.models)
    probes = xs[-200:]
    for name, state in clean.core.models.items():
        other = crashed.core.models[name]
        assert (other.role, other.status, other.n_learned) == (state.role, state.status, state.n_learned), (
            name
        )
        assert [other.model.predict_proba_one(x) for x in probes] == [  # type: ignore[attr-defined]
            state.model.predict_proba_one(x)
            for x in probes  # type: ignore[attr-defined]
        ], name
        assert other.metrics[0].get() == state.metrics[0].get(), name
