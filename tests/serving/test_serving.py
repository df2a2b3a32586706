"""The scoring API on real Redis and Kafka: a learner's checkpoint scored over HTTP, hot swaps under load,
Redis stopped and restarted, and the error contract."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from localservices import RedisNode
from river import metrics
from river.datasets import synth

from features.engine import FeatureEngine
from features.store import FeatureRow
from serving.app import create_app
from streaming import clients
from streaming.learning.core import LearnerCore, predict, select_inputs
from streaming.learning.registry import RedisRegistry
from streaming.learning.spec import ModelSpec
from streaming.settings import Settings
from tests.serving.conftest import OPS_KEY
from tests.serving.running import running
from tests.support.api_env import free_port
from tests.support.api_workers_drill import three_api_workers_drill
from tests.support.feature_defs import ZIP
from tests.support.kafka_read import read_all
from tests.support.learning import LEARNER_IDLE_S
from tests.support.model_defs import scaled_lr
from tests.support.serving_env import SIGNER

pytestmark = pytest.mark.integration

SPEC = ModelSpec("zipm", "binary", "zip", scaled_lr, metrics=(metrics.Accuracy,))


def api(app: Any) -> TestClient:
    """A client of ``app`` as a trusted host, with the test's key."""
    return TestClient(app, base_url="http://localhost", headers={"X-API-Key": OPS_KEY})


def trained_state(n: int, seed: int = 1) -> Any:
    core = LearnerCore([SPEC])
    for i, (x, y) in enumerate(itertools.islice(synth.Agrawal(seed=seed), n)):
        core.on_record(
            str(i),
            i,
            {"count_lifetime": x["age"], "salary_mean_10m": x["salary"], "loan_max_lifetime": x["loan"]},
            label=y,
        )
    return core.models["zipm"]


def registry(s: Settings) -> RedisRegistry:
    return RedisRegistry(clients.redis_client(s), s.redis_prefix, signer=SIGNER)


def put_vector(s: Settings, entity: str, values: dict[str, Any], ts: int) -> None:
    async def go() -> None:
        store = clients.feature_store(s)
        try:
            await store.write([FeatureRow("zip", entity, values, ts)])
        finally:
            await store.close()

    asyncio.run(go())


def learner_checkpoint(env: Settings, n: int) -> tuple[Any, int]:
    """Feature records on the features topic (as the feature worker writes them), learned by the real
    learner worker, which writes the checkpoint the API then serves."""
    from streaming.runtime.learner import LearnerWorker

    producer = clients.kafka_producer(env)
    for i, (x, y) in enumerate(itertools.islice(synth.Agrawal(seed=5), n)):
        vector = {"count_lifetime": x["age"], "salary_mean_10m": x["salary"], "loan_max_lifetime": x["loan"]}
        event = {"event_id": f"e{i}", "entity": str(x["zipcode"]), "ts": 1_000 * i, "fields": {}, "label": y}
        record = {"view": "zip", "entity": event["entity"], "event": event, "features": vector}
        producer.send(env.topics.features, orjson.dumps(record), key=event["entity"].encode())
    producer.flush()
    producer.close()
    worker = LearnerWorker(env, [SPEC], registry=registry(env))
    worker.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)
    assert worker.core.models["zipm"].n_learned == n
    return worker.core.models["zipm"], registry(env).current_version("zipm") or 0


def test_a_checkpoint_is_scored_with_online_features(env: Settings) -> None:
    state, version = learner_checkpoint(env, 500)
    online = {"count_lifetime": 33, "salary_mean_10m": 64_000.0, "loan_max_lifetime": 250_000.0}
    put_vector(env, "7", online, 1_700_000_000_000)
    with api(create_app(env)) as client:
        r = client.post("/v1/models/zipm/predict", json={"entity": "7", "fields": {"ignored_text": "x"}})
        assert r.status_code == 200, r.text
        body = r.json()
        # independent: the same vector through the engine, the checkpoint's model
        vector = FeatureEngine(ZIP).serve(online, {})
        label, proba = predict(state, select_inputs(vector, None), serving=True)
        assert body["model"] == "zipm" and body["version"] == version and body["features_found"] is True
        assert body["prediction"] == label
        assert body["probabilities"] == {
            ("true" if k else "false"): pytest.approx(v) for k, v in proba.items()
        }
        assert body["feature_age_ms"] >= 0
        batch = client.post(
            "/v1/models/zipm/predict/batch", json={"items": [{"entity": "7"}, {"entity": "none"}]}
        )
        assert [p["features_found"] for p in batch.json()["predictions"]] == [True, False]
        # the label for a prediction goes to the labels topic, keyed for the learner's join
        ack = client.post(
            "/v1/labels", json={"labels": [{"prediction_id": body["prediction_id"], "label": True}]}
        )
        assert ack.status_code == 202 and ack.json()["ids"] == [f"p:{body['prediction_id']}"]
    preds = [orjson.loads(r.value) for r in read_all(env.kafka_bootstrap, env.topics.predictions)]
    assert body["prediction_id"] in {p["prediction_id"] for p in preds}
    served = next(p for p in preds if p["prediction_id"] == body["prediction_id"])
    assert served["version"] == version and served["features"] == select_inputs(vector, None)


def test_errors_are_clear_and_never_a_500(env: Settings) -> None:
    registry(env).save("zipm", trained_state(50), {"offsets": {}, "view": "zip"})
    with api(create_app(env)) as client:
        assert client.post("/v1/models/nope/predict", json={"entity": "1"}).status_code == 404
        bad = client.post("/v1/models/zipm/predict", json={"entity": "", "extra": 1})
        assert (
            bad.status_code == 422
            and "body.entity" in bad.json()["detail"]
            and "body.extra" in bad.json()["detail"]
        )
        big = client.post(
            "/v1/models/zipm/predict",
            content=b"{" + b" " * 2_000_000 + b"}",
            headers={"content-type": "application/json"},
        )
        assert big.status_code == 413
        assert client.post("/v1/models/zipm/rollback", headers={"X-API-Key": ""}).status_code == 401
        assert client.post("/v1/models/zipm/rollback", headers={"X-API-Key": "wrong"}).status_code == 403
        assert client.post("/v1/models/zipm/rollback", headers={"X-API-Key": "admin-key"}).status_code == 409
        ev = client.post("/v1/events", json={"events": [{"entity": "a", "ts": "soon"}]})
        assert ev.status_code == 422 and "body.events.0.ts" in ev.json()["detail"]
        nan = client.post(
            "/v1/events",
            content=b'{"events": [{"entity": "a", "ts": 1, "fields": {"x": NaN}}]}',
            headers={"content-type": "application/json"},
        )
        assert nan.status_code in (400, 422) and nan.json()["error"] in ("bad_request", "invalid_request")
        assert client.get("/readyz").json()["models"] == {"zipm": 1}


def test_hot_swap_under_load_fails_no_request(env: Settings) -> None:
    reg = registry(env)
    first = reg.save("zipm", trained_state(100, seed=1), {"offsets": {}, "view": "zip"})
    seen: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def load(url: str) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": OPS_KEY}) as c:
            while not stop.is_set():
                r = c.post("/v1/models/zipm/predict", json={"entity": "1"})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                else:
                    seen.append(r.json()["version"])

    with running(create_app(env)) as url:
        threads = [threading.Thread(target=load, args=(url,)) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            versions = [first]
            for seed in (2, 3, 4):
                time.sleep(0.5)
                newer = trained_state(100 + seed * 50, seed=seed)
                versions.append(reg.save("zipm", newer, {"offsets": {}, "view": "zip"}))
            deadline = time.monotonic() + 10
            while (not seen or seen[-1] != versions[-1]) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert not failures, failures[:3]
    assert seen[-1] == versions[-1] and set(seen) <= set(versions) and len(set(seen)) >= 2


def test_redis_stopped_then_restarted(env: Settings, tmp_path: Path) -> None:
    node = RedisNode(tmp_path / "redis", port=free_port())
    node.start()
    s = env.model_copy(update={"redis_url": node.url})
    try:
        registry(s).save("zipm", trained_state(50), {"offsets": {}, "view": "zip"})
        with api(create_app(s)) as client:
            assert client.post("/v1/models/zipm/predict", json={"entity": "1"}).status_code == 200
            node.stop()
            down = client.post("/v1/models/zipm/predict", json={"entity": "1"})
            assert down.status_code == 503 and "feature store is unreachable" in down.json()["detail"]
            assert client.get("/readyz").status_code == 503
            node.start()
            deadline = time.monotonic() + 20
            while client.post("/v1/models/zipm/predict", json={"entity": "1"}).status_code != 200:
                assert time.monotonic() < deadline, "no recovery"
                time.sleep(0.2)
        # this Redis keeps no data across restarts: the registry is written again for the next app
        registry(s).save("zipm", trained_state(50), {"offsets": {}, "view": "zip"})
        with api(create_app(s.model_copy(update={"serve_fallback": True}))) as client:
            node.stop()
            r = client.post(
                "/v1/models/zipm/predict", json={"entity": "1", "fields": {"salary_mean_10m": 1.0}}
            )
            assert r.status_code == 200 and r.json()["fallback"] is True
    finally:
        node.stop()


# entities with their online vectors and the labels their served predictions get: varied values, so that after
# learning them a scaled model's score depends on the features (after a single record a StandardScaler maps
# every input to 0, and a model trained on the right features, on none or on the wrong ones scores alike)
LABELLED = {
    "3": ({"count_lifetime": 40, "salary_mean_10m": 90_000.0, "loan_max_lifetime": 1_000.0}, True),
    "4": ({"count_lifetime": 2, "salary_mean_10m": 20_000.0, "loan_max_lifetime": 400_000.0}, False),
    "5": ({"count_lifetime": 25, "salary_mean_10m": 130_000.0, "loan_max_lifetime": 50_000.0}, True),
    "6": ({"count_lifetime": 60, "salary_mean_10m": 35_000.0, "loan_max_lifetime": 250_000.0}, False),
}


def test_a_label_for_a_served_prediction_trains_the_learner_on_the_served_features(env: Settings) -> None:
    from streaming.runtime.learner import LearnerWorker

    registry(env).save("zipm", trained_state(200), {"offsets": {}, "view": "zip"})
    for entity, (vector, _) in LABELLED.items():
        put_vector(env, entity, vector, 5)
    with api(create_app(env)) as client:
        served = [client.post("/v1/models/zipm/predict", json={"entity": e}).json() for e in LABELLED]
        # label times after every prediction, in order: the learner's merge learns them in this order
        after = int(time.time() * 1000) + 1_000
        labels = [
            {"prediction_id": p["prediction_id"], "label": label, "ts": after + i}
            for i, (p, (_, label)) in enumerate(zip(served, LABELLED.values(), strict=True))
        ]
        assert client.post("/v1/labels", json={"labels": labels}).status_code == 202
    # a fresh learner (its own registry prefix): only these labels train it
    learner = LearnerWorker(
        env,
        [SPEC],
        registry=RedisRegistry(clients.redis_client(env), f"{env.redis_prefix}learner:", signer=SIGNER),
    )
    learner.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)
    state = learner.core.models["zipm"]
    assert state.n_learned == len(LABELLED) and state.counters["pending"] == 0
    inputs = [served_features(env, p["prediction_id"]) for p in served]
    assert inputs == [select_inputs(FeatureEngine(ZIP).serve(v, {}), None) for v, _ in LABELLED.values()]
    ys = [label for _, label in LABELLED.values()]

    def scores(model: Any) -> list[float]:
        return [model.predict_proba_one(x)[True] for x in inputs]

    def trained(xs: list[dict[str, Any]]) -> Any:
        core = LearnerCore([SPEC])
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            core.on_record(str(i), i, x, label=y)
        return core.models["zipm"].model

    # the oracle: the same learning steps on exactly the served inputs, in the labels' order
    assert scores(state.model) == pytest.approx(scores(trained(inputs)), rel=1e-12)
    # a model that learned without those features, or with them on the wrong records, scores otherwise
    others: list[list[dict[str, Any]]] = [[{} for _ in inputs], inputs[1:] + inputs[:1], inputs[::-1]]
    for other in others:
        gaps = [abs(a - b) for a, b in zip(scores(state.model), scores(trained(other)), strict=True)]
        assert max(gaps) > 1e-3, (other, gaps)


def served_features(env: Settings, prediction_id: str) -> dict[str, Any]:
    preds = [orjson.loads(r.value) for r in read_all(env.kafka_bootstrap, env.topics.predictions)]
    return next(p["features"] for p in preds if p["prediction_id"] == prediction_id)


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_three_api_workers_follow_new_versions_and_a_rollback_under_load(
    env: Settings, tmp_path: Path, server: str
) -> None:
    """``rivulet serve --workers 3`` scored without pause while new versions are written and one is rolled
    back (tests/support/api_workers_drill.py; on the local cluster: tests/deploy/
    test_cluster_learners_api.py), under either server (granian: issue 16)."""
    three_api_workers_drill(
        env, registry(env), lambda seed, n: trained_state(n, seed=seed), OPS_KEY, tmp_path, server=server
    )
