"""The champion/challenger lifecycle end to end on real Kafka and Redis (issue 14): a concept change in the
features topic, the real learner worker starting a challenger on the champion's drift and promoting it on
paired evidence, the registry's decisions and champion pointer, the scoring API following the pointer (the
response names the model that scored), a replay of the topic taking the same decisions, and a restarted
learner taking no decision twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from features.store import FeatureRow
from serving.app import create_app
from streaming import clients
from streaming.cli import app
from streaming.learning.header import CheckpointHeader
from streaming.learning.registry import RedisRegistry
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.serving.conftest import OPS_KEY as KEY
from tests.support.drifting import agrawal_drift, publish_labelled
from tests.support.learning import LEARNER_IDLE_S
from tests.support.model_defs import LIFECYCLE
from tests.support.serving_env import SIGNER

pytestmark = pytest.mark.integration

P, N = 6_000, 12_000  # the concept changes at record P
T0 = 1_700_000_000_000


SPEC = LIFECYCLE  # a Hoeffding tree whose loss drift starts a fresh challenger, the default policy


def registry(s: Settings) -> RedisRegistry:
    return RedisRegistry(clients.redis_client(s), s.redis_prefix, signer=SIGNER)


def publish_drifting_stream(s: Settings) -> dict[str, Any]:
    """Agrawal function 0, then 4 from record P, labels inline, one second apart; the last record's x."""
    pairs = list(agrawal_drift(3, P).take(N))
    publish_labelled(s, pairs, 0, T0)
    return pairs[-1][0]


def learn(s: Settings) -> LearnerWorker:
    worker = LearnerWorker(s, [SPEC], registry=registry(s))
    worker.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)
    return worker


def put_vector(s: Settings, entity: str, values: dict[str, Any]) -> None:
    async def go() -> None:
        store = clients.feature_store(s)
        try:
            await store.write([FeatureRow("all", entity, values, T0 + 1_000 * N)])
        finally:
            await store.close()

    asyncio.run(go())


def test_a_drift_promotes_a_challenger_that_serving_follows(env: Settings, tmp_path: Path) -> None:
    x = publish_drifting_stream(env)
    worker = learn(env)
    reg = registry(env)
    decisions = reg.decisions("m")
    kinds = [d["kind"] for d in decisions]
    assert kinds[:2] == ["challenger", "promotion"], kinds
    promotion = decisions[1]
    at = (promotion["ts"] - T0) // 1_000  # the record after which it was promoted
    assert P <= at <= P + 5_000, at
    assert promotion["champion"] == "m" and promotion["model"] == decisions[0]["model"]
    ev = promotion["evidence"]
    assert ev["n"] >= SPEC.promotion.min_labelled and ev["statistic"] >= ev["bound"]  # type: ignore[union-attr]
    assert ev["candidate_loss"] < ev["incumbent_loss"] and ev["p_value"] < 0.01
    champion = promotion["model"]
    assert reg.champion("m") == champion == worker.core.champion("m").name  # type: ignore[union-attr]
    newest = CheckpointHeader.of(next(v for v in reg.versions(champion) if v.current).header)
    assert (newest.role, newest.spec) == ("champion", "m")
    assert CheckpointHeader.of(next(v for v in reg.versions("m") if v.current).header).role in (
        "probation", "retired"
    )  # fmt: skip

    put_vector(env, "u1", x)
    with TestClient(create_app(env), base_url="http://localhost", headers={"X-API-Key": KEY}) as client:
        r = client.post("/v1/models/m/predict", json={"entity": "u1"})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == champion and r.json()["features_found"] is True
        info = client.get("/v1/models/m").json()
        assert info["champion"] == champion
        assert [d["kind"] for d in info["decisions"]] == kinds
        assert info["decisions"][1]["evidence"]["n"] == ev["n"]
        assert client.get(f"/v1/models/{champion}").json()["role"] == "champion"

    # the replay of the topic takes the same decisions on the same records, with the same evidence
    out = tmp_path / "replay"
    cli_env = {
        "RIVULET_TOPIC_PREFIX": env.topic_prefix,
        "RIVULET_REDIS_PREFIX": env.redis_prefix,
        "RIVULET_VERIFY_KEYS": SIGNER.public.encoded,
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs",
        "RIVULET_MODELS_MODULE": "tests.support.model_defs:LIFECYCLE",
    }
    res = CliRunner().invoke(
        app, ["replay", "features", "--out", str(out), "--quiet"], env=cli_env, catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    replayed = orjson.loads((out / "replay.json").read_bytes())["decisions"]
    fields = ("id", "kind", "champion", "model", "ts", "position", "evidence")
    assert [{k: d[k] for k in fields} for d in replayed] == [{k: d[k] for k in fields} for d in decisions]
    assert "promotion: " in res.output

    listed = CliRunner().invoke(app, ["models", "list"], env=cli_env, catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert "(serving)" in listed.output, listed.output
    assert f"m: promotion {champion} (champion m) evidence (paired n {ev['n']}" in listed.output
    shown = CliRunner().invoke(app, ["models", "show", "m"], env=cli_env, catch_exceptions=False)
    assert shown.exit_code == 0 and f'"champion": "{champion}"' in shown.output, shown.output

    # a restarted learner resumes from the checkpoints: no decision taken again, the same champion
    again = learn(env)
    assert again.core.champion("m").name == champion  # type: ignore[union-attr]
    assert [d["id"] for d in reg.decisions("m")] == [d["id"] for d in decisions]
