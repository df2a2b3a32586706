"""The near cache in the API, on uvicorn (uvloop) with real Redis: predictions served from memory report the
vector's true age, and a newer vector written to Redis is served within the staleness bound."""

from __future__ import annotations

import functools
import time
from typing import Any

import httpx
import pytest

from features.redis_store import vector_key
from serving.app import create_app
from streaming.settings import Settings
from tests.serving.conftest import OPS_KEY
from tests.serving.running import running
from tests.serving.test_near_cache import STALENESS_BOUND_S
from tests.serving.test_serving import put_vector, registry, trained_state

pytestmark = pytest.mark.integration

VECTOR = {"count_lifetime": 30, "salary_mean_10m": 60_000.0, "loan_max_lifetime": 90_000.0}


def hits(c: httpx.Client) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith("rivulet_near_cache_hits_total "):
            return float(line.split()[1])
    raise AssertionError("rivulet_near_cache_hits_total is not exported")


def test_predictions_served_from_the_near_cache_report_the_true_age_and_follow_new_vectors(
    env: Settings,
) -> None:
    registry(env).save("zipm", trained_state(50), {"offsets": {}, "view": "zip"})
    old_ts = int(time.time() * 1000) - 60_000
    put_vector(env, "7", VECTOR, old_ts)
    app = create_app(env.model_copy(update={"near_cache": True}))
    with running(app) as url, httpx.Client(base_url=url, headers={"X-API-Key": OPS_KEY}) as c:
        before = hits(c)
        ages: list[tuple[int, int, int]] = []
        deadline = time.monotonic() + 10
        while hits(c) < before + 5:  # tracking comes on in the background
            assert time.monotonic() < deadline, "nothing served from the near cache"
            start = int(time.time() * 1000)
            r = c.post("/v1/models/zipm/predict", json={"entity": "7"})
            end = int(time.time() * 1000)
            assert r.status_code == 200 and r.json()["features_found"] is True
            ages.append((start - old_ts, r.json()["feature_age_ms"], end - old_ts))
        # the age is the vector's, taken at the request (a cached vector keeps its event time)
        assert all(low - 1 <= age <= high + 1 for low, age, high in ages), ages
        new_ts = int(time.time() * 1000) - 1_000
        put_vector(env, "7", {**VECTOR, "count_lifetime": 31}, new_ts)
        acked = time.monotonic()
        while c.post("/v1/models/zipm/predict", json={"entity": "7"}).json()["feature_age_ms"] > 30_000:
            assert time.monotonic() - acked < STALENESS_BOUND_S, "the old vector is still served"
        then = hits(c)
        for _ in range(3):
            assert c.post("/v1/models/zipm/predict", json={"entity": "7"}).json()["feature_age_ms"] < 30_000
        assert hits(c) >= then + 2  # the new vector is cached in turn


def test_hostile_vectors_are_answered_as_without_the_near_cache(env: Settings, redis_client: Any) -> None:
    """Odd data under the vector keys (a wrong type, a hash with a garbage, missing or out-of-range
    ``_ts``, a value that is not JSON, many fields, entities with braces, unicode, 1,000 characters), then
    changed under the cache (deleted, replaced by a wrong type, rewritten with an older time): the API with
    the near cache answers each as the API without it does (the ids and ages aside), served from memory or
    not, and never a 500."""
    registry(env).save("zipm", trained_state(50), {"offsets": {}, "view": "zip"})
    ts = int(time.time() * 1000) - 5_000
    key = functools.partial(vector_key, env.redis_prefix, "zip")
    entities = ["ok", "{x}", "}{", "é☃", "e" * 1000, "str", "garbage", "nots", "old", "notjson", "wide"]
    put = functools.partial(put_vector, env)
    for e in entities[:5]:
        put(e, VECTOR, ts)
    redis_client.set(key("str"), "a string")
    redis_client.hset(key("garbage"), mapping={"_ts": "soon", "count_lifetime": "1"})
    redis_client.hset(key("nots"), mapping={"count_lifetime": "1"})
    redis_client.hset(key("old"), mapping={"_ts": "-5", "count_lifetime": "1"})
    redis_client.hset(key("notjson"), mapping={"_ts": str(ts), "count_lifetime": "{"})
    redis_client.hset(key("wide"), mapping={"_ts": str(ts), **{f"f{i}": "1.5" for i in range(3_000)}})

    def answers(c: httpx.Client) -> list[tuple[int, Any]]:
        out = []
        for e in entities:
            r = c.post("/v1/models/zipm/predict", json={"entity": e})
            body = r.json()
            for k in ("prediction_id", "feature_age_ms"):
                body.pop(k, None)
            out.append((r.status_code, body))
        return out

    cached_app = create_app(env.model_copy(update={"near_cache": True}))
    plain_app = create_app(env.model_copy(update={"near_cache": False}))
    with (
        running(cached_app) as cached_url,
        running(plain_app) as plain_url,
        httpx.Client(base_url=cached_url, headers={"X-API-Key": OPS_KEY}) as cached,
        httpx.Client(base_url=plain_url, headers={"X-API-Key": OPS_KEY}) as plain,
    ):
        deadline = time.monotonic() + 10
        while hits(cached) == 0:  # tracking comes on in the background
            assert time.monotonic() < deadline, "nothing served from the near cache"
            cached.post("/v1/models/zipm/predict", json={"entity": "ok"})
        for _ in range(2):  # a miss, then from memory
            got, want = answers(cached), answers(plain)
            assert got == want
            assert all(status == 200 for status, _ in got), got
        found = [a["features_found"] for _, a in got]
        assert found[:8] == [True] * 5 + [False] * 3 and found[9:] == [False, True], got
        before = hits(cached)
        assert answers(cached) and hits(cached) >= before + len(entities)  # all of them from memory
        # changed under the cache: each answer follows Redis within the staleness bound
        redis_client.delete(key("ok"))
        redis_client.delete(key("{x}"))
        redis_client.set(key("{x}"), "now a string")
        redis_client.hset(key("}{"), "_ts", str(ts - 1_000))  # older in place: Redis holds it
        redis_client.hset(key("garbage"), "_ts", str(ts))  # now a vector
        changed = time.monotonic()
        while (got := answers(cached)) != (want := answers(plain)):
            assert time.monotonic() - changed < STALENESS_BOUND_S, (got, want)
        assert [a["features_found"] for _, a in got[:3]] == [False, False, True], got
        assert got[6][1]["features_found"] is True, got
