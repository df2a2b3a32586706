"""The scoring API on a real (one-node) Redis Cluster, started by ``scripts/services up`` on port 7001, with
``RIVULET_REDIS_CLUSTER=true``: vectors the real store wrote on the cluster for hostile entities (``}x{`` and
the rest of the feature store's cluster list) are scored over HTTP with their own values, readiness pings the
cluster, and a registry announcement published on the cluster reaches the API.

Before, the API built a plain Redis client whatever the setting: on this one-node cluster a plain client
happens to work (the node owns every slot), but on a real cluster it gets ``MOVED`` for the keys of other
nodes. The test asserts the API's store client is the cluster client besides what it reads through it.

The test's learner saves through a :class:`RedisRegistry` on redis-py's cluster client (before, its save
was a MULTI with the set of model names, of another slot: CROSSSLOT, so the keys were copied from a plain
Redis instead)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from redis.asyncio.cluster import RedisCluster

from features.store import FeatureRow
from serving.app import create_app
from streaming import clients
from streaming.learning.core import predict, select_inputs
from streaming.learning.registry import RedisRegistry
from streaming.settings import Settings
from tests.features.test_redis_cluster import CLUSTER_URL, ENTITIES, cluster  # noqa: F401 (fixture)
from tests.serving.test_serving import trained_state
from tests.support.serving_env import SIGNER, serving_settings

pytestmark = pytest.mark.integration

KEY = "cluster-ops-key"
HOSTILE = [*ENTITIES, "\x00", "{}\n{", "plain"]


@pytest.fixture
def on_cluster(rivulet_topics: Settings, cluster: redis.Redis) -> Settings:  # noqa: F811 (the fixture)
    return serving_settings(
        rivulet_topics,
        redis_url=CLUSTER_URL,
        redis_cluster=True,
        serve_poll_s=3600.0,  # no poll: a new version arrives by its announcement only
        scoring_api_keys=[KEY],
        read_api_keys=[KEY],
    )


def vector(i: int) -> dict[str, Any]:
    """A distinct vector per entity: a wrong (or missing) one gives other probabilities."""
    return {"count_lifetime": 20 + i, "salary_mean_10m": 30_000.0 + 7_000.0 * i, "loan_max_lifetime": 9e3 * i}


def write_vectors(s: Settings) -> None:
    async def go() -> None:
        store = clients.feature_store(s)
        try:
            rows = [FeatureRow("zip", e, vector(i), 1_700_000_000_000 + i) for i, e in enumerate(HOSTILE)]
            await store.write(rows)
        finally:
            await store.close()

    asyncio.run(go())


def expected(state: Any, values: dict[str, Any]) -> dict[str, float]:
    """The model's own probabilities for ``values`` (the oracle), keyed as the API writes them."""
    _, proba = predict(state, select_inputs(values, state.features), serving=True)
    assert proba is not None
    return {("true" if k else "false") if isinstance(k, bool) else str(k): float(v) for k, v in proba.items()}


def publish(registry: RedisRegistry, state: Any) -> int:
    """Save a version through the registry on the cluster client (which announces it)."""
    return registry.save("zipm", state, {"offsets": {}, "view": "zip"})


def cluster_registry(prefix: str, **roles: Any) -> RedisRegistry:
    """A registry on redis-py's cluster client (every key routed by its slot, transactions per slot)."""
    return RedisRegistry(redis.RedisCluster.from_url(CLUSTER_URL, socket_timeout=5.0), prefix, **roles)


def test_the_registry_saves_trims_and_loads_through_a_cluster_client(
    on_cluster: Settings,
    cluster: redis.Redis,  # noqa: F811 (the fixture)
) -> None:
    """Before: ``save`` put ``SADD <prefix>models`` (no hash tag) in the model's MULTI, whose keys share the
    model's slot: redis-py's cluster client refused the transaction (CrossSlotTransactionError; a server,
    CROSSSLOT). Now versions are saved, trimmed to ``keep``, listed and loaded (verified) on the cluster."""
    from streaming.learning.keys import Keyring

    writer = cluster_registry(on_cluster.redis_prefix, signer=SIGNER)
    states = [trained_state(50 + 50 * i) for i in range(4)]
    versions = [
        writer.save("zipm", st, {"offsets": {"t": {"0": i}}, "view": "zip"}, keep=2)
        for i, st in enumerate(states)
    ]
    assert versions == [1, 2, 3, 4]
    reader = cluster_registry(on_cluster.redis_prefix, keyring=Keyring.of(SIGNER.public))
    assert reader.names() == ["zipm"] and reader.current_version("zipm") == 4
    assert reader._numbers("zipm") == [3, 4]  # trimmed to keep=2 (snapshot and header together)
    assert cluster.get(f"{on_cluster.redis_prefix}model:{{zipm}}:v:1") is None
    loaded, refused = reader.load_latest("zipm", current=True)
    assert refused == [] and loaded.header["version"] == 4 and loaded.header["offsets"] == {"t": {"0": 3}}
    values = vector(2)
    assert expected(loaded.state, values) == pytest.approx(expected(states[3], values))
    assert expected(reader.load("zipm", 3).state, values) == pytest.approx(expected(states[2], values))
    writer.record("zipm", {"t": 1})
    writer.delete("zipm")  # a retired challenger past retention: every key of it, in one slot
    assert reader.names() == [] and reader.current_version("zipm") is None and reader.versions("zipm") == []
    assert not [k for k in cluster.keys(f"{on_cluster.redis_prefix}model:{{zipm}}:*")]


def test_hostile_entities_on_a_cluster_are_scored_with_their_online_features(
    on_cluster: Settings,
    cluster: redis.Redis,  # noqa: F811 (the fixture)
    redis_client: redis.Redis,
) -> None:
    s = on_cluster
    registry = cluster_registry(s.redis_prefix, signer=SIGNER)
    state = trained_state(300)
    first = publish(registry, state)
    write_vectors(s)
    app = create_app(s)
    with TestClient(app, base_url="http://localhost", headers={"X-API-Key": KEY}) as client:
        assert isinstance(app.state.services.redis, RedisCluster)
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True, "redis": True, "models": {"zipm": first}, "pid": os.getpid()}
        for i, entity in enumerate(HOSTILE):
            r = client.post("/v1/models/zipm/predict", json={"entity": entity})
            assert r.status_code == 200, (entity, r.text)
            body = r.json()
            assert body["entity"] == entity and body["features_found"] is True, (entity, body)
            assert body["probabilities"] == pytest.approx(expected(state, vector(i))), entity
        batch = client.post("/v1/models/zipm/predict/batch", json={"items": [{"entity": e} for e in HOSTILE]})
        assert batch.status_code == 200, batch.text
        for i, p in enumerate(batch.json()["predictions"]):
            assert p["entity"] == HOSTILE[i] and p["features_found"] is True
            assert p["probabilities"] == pytest.approx(expected(state, vector(i)))
        unknown = client.post("/v1/models/zipm/predict", json={"entity": "}never written{"})
        assert unknown.status_code == 200 and unknown.json()["features_found"] is False

        # a new version, announced on the cluster (no poll for an hour): the API swaps to it
        newer = trained_state(600, seed=3)
        second = publish(registry, newer)
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["models"].get("zipm") != second:
            assert time.monotonic() < deadline, "the announcement did not reach the API"
            time.sleep(0.1)
        r = client.post("/v1/models/zipm/predict", json={"entity": "}x{"})
        assert r.json()["version"] == second
        assert r.json()["probabilities"] == pytest.approx(expected(newer, vector(HOSTILE.index("}x{"))))


def test_an_unreachable_cluster_is_a_503_never_a_500(settings: Settings) -> None:
    """Before: with the cluster unreachable, redis-py's cluster client raises ``RedisClusterException``
    ("cannot be connected"), which is not a ``RedisError``: ``/readyz`` and every predict were 500
    ``internal``. Now readiness says ``redis: false`` (503) and a predict is 503
    ``feature_store_unavailable``, or scored from its fields with ``RIVULET_SERVE_FALLBACK``."""
    from features.engine import FeatureEngine
    from serving.models import LoadedModel
    from streaming.learning.header import CheckpointHeader
    from tests.support.api_env import free_port
    from tests.support.feature_defs import ZIP

    dead = f"redis://127.0.0.1:{free_port()}"
    for fallback in (False, True):
        s = serving_settings(
            settings,
            redis_url=dead,
            redis_cluster=True,
            redis_connect_timeout_s=0.5,
            redis_socket_timeout_s=0.5,
            scoring_api_keys=[KEY],
            serve_fallback=fallback,
        )
        app = create_app(s)
        with TestClient(app, base_url="http://localhost", headers={"X-API-Key": KEY}) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["redis"] is False, ready.text
            # a model as if loaded earlier (the registry is on the same unreachable Redis)
            app.state.services.models.models["zipm"] = LoadedModel(
                "zipm", 1, trained_state(50), CheckpointHeader.of({"view": "zip"}), FeatureEngine(ZIP)
            )
            r = client.post("/v1/models/zipm/predict", json={"entity": "}x{"})
            if fallback:
                assert r.status_code == 200 and r.json()["fallback"] is True, r.text
            else:
                assert r.status_code == 503 and r.json()["error"] == "feature_store_unavailable", r.text
