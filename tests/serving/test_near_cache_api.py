"""The near cache in the API, on uvicorn (uvloop) with real Redis: predictions served from memory report the
vector's true age, and a newer vector written to Redis is served within the staleness bound."""

from __future__ import annotations

import time

import httpx
import pytest

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
