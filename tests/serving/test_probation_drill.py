"""The probation drill on real Kafka and Redis (issue 14): an operator starts a deliberately bad challenger
and forces it through promotion with ``rivulet models challenge`` and ``rivulet models promote-challenger``
(signed control records in the features topic) while the real learner worker runs and the API scores all
along. Probation rolls the promotion back on the policy's test, serving follows the champion pointer both
ways and never returns an error, and a replay of the topic takes the same decisions at the same records."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from river.datasets import synth
from typer.testing import CliRunner

from features.store import FeatureRow
from serving.app import create_app
from streaming import clients
from streaming.cli import app
from streaming.learning.registry import RedisRegistry
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.serving.conftest import OPS_KEY as KEY
from tests.support.drifting import publish_labelled
from tests.support.model_defs import BY_HAND
from tests.support.serving_env import SIGNER

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
STREAM = list(synth.Agrawal(classification_function=0, seed=5).take(6_000))
BAD = "[dummy.NoChangeClassifier: {}]"  # predicts the last label it saw: far worse than the tree


def publish(s: Settings, start: int, stop: int) -> None:
    publish_labelled(s, STREAM[start:stop], start, T0)


def wait(what: str, ok: Callable[[], Any], timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = ok()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Scorer(threading.Thread):
    """Scores ``pm`` for one entity without pause, keeping every status and the model that scored."""

    def __init__(self, s: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = s
        self.stop = threading.Event()
        self.seen: list[tuple[int, str | None]] = []

    def run(self) -> None:
        with TestClient(
            create_app(self.settings), base_url="http://localhost", headers={"X-API-Key": KEY}
        ) as client:
            while not self.stop.is_set():
                r = client.post("/v1/models/pm/predict", json={"entity": "u1"})
                self.seen.append((r.status_code, r.json().get("model") if r.status_code == 200 else r.text))
                time.sleep(0.01)

    def served(self, model: str, after: int = 0) -> bool:
        return any(m == model for _, m in self.seen[after:])


def test_a_bad_challenger_forced_through_promotion_is_rolled_back_while_serving_goes_on(
    env: Settings, tmp_path: Path
) -> None:
    cli_env = {
        "RIVULET_TOPIC_PREFIX": env.topic_prefix,
        "RIVULET_REDIS_PREFIX": env.redis_prefix,
        "RIVULET_SIGNING_KEY": SIGNER.encoded,  # an operator's key in the learner's keyring (here its own)
        "RIVULET_VERIFY_KEYS": SIGNER.public.encoded,
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs",
        "RIVULET_MODELS_MODULE": "tests.support.model_defs:BY_HAND",
    }

    def cli(*args: str) -> str:
        res = CliRunner().invoke(app, list(args), env=cli_env, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    reg = RedisRegistry(clients.redis_client(env), env.redis_prefix, signer=SIGNER)
    publish(env, 0, 2_000)
    worker = LearnerWorker(env, [BY_HAND], registry=reg)
    learner = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    learner.start()
    scorer = Scorer(env)
    try:
        wait("the champion's pointer", lambda: reg.champion("pm") == "pm")

        async def put() -> None:
            store = clients.feature_store(env)
            try:
                await store.write([FeatureRow("all", "u1", STREAM[0][0], T0)])
            finally:
                await store.close()

        asyncio.run(put())
        scorer.start()
        wait("a score", lambda: scorer.served("pm"))

        # each at the stream time where it goes: after record 1,999, and after record 2,299 (the stream is
        # stamped from 2023, not with the wall clock)
        assert "sent to" in cli("models", "challenge", "pm", "--challenger", BAD, "--at", str(T0 + 1_999_001))
        started = wait(
            "the challenger", lambda: [d for d in reg.decisions("pm") if d["kind"] == "challenger"]
        )
        bad = started[0]["model"]
        assert bad == f"pm~{T0 + 1_999_000}" and "by hand (control" in started[0]["why"]
        publish(env, 2_000, 2_300)
        cli("models", "promote-challenger", bad, "--at", str(T0 + 2_299_001))
        wait("the forced promotion", lambda: reg.champion("pm") == bad)
        mark = len(scorer.seen)
        wait("serving the promoted model", lambda: scorer.served(bad, mark))

        publish(env, 2_300, 4_500)
        wait("the rollback", lambda: reg.champion("pm") == "pm", timeout_s=120)
        mark = len(scorer.seen)
        wait("serving the champion again", lambda: scorer.served("pm", mark))
    finally:
        scorer.stop.set()
        worker.stop()
        learner.join(60)
        scorer.join(60)
    assert not learner.is_alive()

    decisions = reg.decisions("pm")
    kinds = [(d["kind"], d["model"]) for d in decisions]
    assert kinds[:3] == [("challenger", bad), ("promotion", bad), ("rollback", "pm")], kinds
    rollback = decisions[2]
    ev = rollback["evidence"]
    assert ev["candidate_loss"] < ev["incumbent_loss"] and ev["statistic"] >= ev["bound"]
    assert "by hand" in decisions[1]["why"]
    # serving never returned an error, and it followed the pointer: the tree, the bad model, the tree
    statuses = {status for status, _ in scorer.seen}
    assert statuses == {200}, [x for x in scorer.seen if x[0] != 200][:5]
    served = [m for _, m in scorer.seen]
    changes = [m for i, m in enumerate(served) if i == 0 or m != served[i - 1]]
    assert changes == ["pm", bad, "pm"], changes

    # the replay of the topic applies the same controls at the same records and takes the same decisions
    out = tmp_path / "replay"
    cli("replay", "features", "--out", str(out), "--quiet")
    replayed = orjson.loads((out / "replay.json").read_bytes())["decisions"]
    fields = ("id", "kind", "champion", "model", "ts", "position", "evidence")
    assert [{k: d[k] for k in fields} for d in replayed] == [{k: d[k] for k in fields} for d in decisions]
