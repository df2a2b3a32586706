"""The predict route's hot path (:class:`serving.routes.scoring.FastPredict`) on uvicorn with real Redis and
Kafka while the model is hot-swapped: every answer is a 200 from one whole version, the version a client
sees never goes back, and the newest is served once announced."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from serving.app import create_app
from streaming.settings import Settings
from tests.serving.conftest import OPS_KEY
from tests.serving.running import running
from tests.serving.test_serving import put_vector, registry, trained_state

pytestmark = pytest.mark.integration

VECTOR = {"count_lifetime": 30, "salary_mean_10m": 60_000.0, "loan_max_lifetime": 90_000.0}


def test_a_model_swapped_under_concurrent_predictions(env: Settings) -> None:
    reg = registry(env)
    reg.save("zipm", trained_state(20), {"offsets": {}, "view": "zip"})
    put_vector(env, "7", VECTOR, int(time.time() * 1000) - 1_000)
    stop = threading.Event()
    seen: list[list[tuple[int, int, bool]]] = [[], []]

    def client(url: str, out: list[tuple[int, int, bool]]) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": OPS_KEY}) as c:
            while not stop.is_set():
                r = c.post("/v1/models/zipm/predict", json={"entity": "7"})
                body = r.json()
                classes = set(body.get("probabilities") or {})
                whole = body.get("entity") == "7" and classes == {"true", "false"}
                out.append((r.status_code, body.get("version", -1), whole))

    with running(create_app(env)) as url:
        threads = [threading.Thread(target=client, args=(url, out)) for out in seen]
        for t in threads:
            t.start()
        try:
            for n in range(5):
                reg.save("zipm", trained_state(30 + 10 * n, seed=n + 2), {"offsets": {}, "view": "zip"})
                time.sleep(0.2)
            deadline = time.monotonic() + 10
            while not all(out and out[-1][1] == 6 for out in seen):
                assert time.monotonic() < deadline, [out[-3:] for out in seen]
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    for out in seen:
        assert out and all(s == 200 and whole for s, _, whole in out), [a for a in out if a[0] != 200][:5]
        versions = [v for _, v, _ in out]
        assert versions == sorted(versions) and set(versions) <= set(range(1, 7)), versions[-20:]
