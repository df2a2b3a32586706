"""The three-API-workers drill (issue 15), run by the single-node test (tests/serving/test_serving.py) and the
cluster one (tests/deploy/test_cluster_learners_api.py): ``rivulet serve --workers 3`` (three processes, no
shared state but Redis) scored without pause while new versions are written and one is rolled back: not one
request fails, every response names a version the registry held when it was answered, and the rollback
reaches every worker. A :class:`~tests.support.chaos.LoadProducer` given as ``load`` sends events with the SDK
while the versions change and the rollback happens."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from streaming.learning.registry import RedisRegistry
from streaming.settings import Settings
from tests.support.api_env import free_port
from tests.support.chaos import LoadProducer
from tests.support.serving_env import SIGNER
from tests.support.workers import rivulet_process

__all__ = ["three_api_workers_drill"]


def three_api_workers_drill(
    s: Settings,
    reg: RedisRegistry,
    state: Callable[[int, int], Any],
    key: str,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    load: LoadProducer | None = None,
    server: str = "uvicorn",
) -> list[tuple[float, float, int, Any]]:
    """The drill for model ``zipm`` of view ``zip``, its states made by ``state(seed, n)`` and saved with
    ``reg``, the API run with ``env`` added (the cluster's, on the cluster) and scored with ``key``; the
    responses: (when sent, when answered, status, version or error text). ``server``: ``rivulet serve
    --server``."""
    written: dict[int, float] = {}  # version -> when its save started (it is held from then at the latest)

    def save(seed: int, n: int) -> int:
        started = time.monotonic()
        version = reg.save("zipm", state(seed, n), {"offsets": {}, "view": "zip"})
        written[version] = started
        return version

    first = save(1, 100)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api_env = {
        "RIVULET_VERIFY_KEYS": SIGNER.public.encoded,
        "RIVULET_SCORING_API_KEYS": key,
        "RIVULET_READ_API_KEYS": key,
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs",
        "RIVULET_SERVE_POLL_S": "0.5",
        **(env or {}),
    }
    proc = rivulet_process(
        s,
        ["serve", "--workers", "3", "--port", str(port), "--server", server],
        tmp_path / "api.log",
        **api_env,
    )

    def workers_on(version: int, deadline_s: float) -> set[int]:
        """The workers seen answering /readyz with ``version`` loaded (fresh connections), until all three
        have or the deadline passes."""
        seen: set[int] = set()
        deadline = time.monotonic() + deadline_s
        while len(seen) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "api.log").read_text()
            with contextlib.suppress(httpx.TransportError):
                r = httpx.get(f"{url}/readyz", timeout=5)
                if r.status_code == 200 and r.json()["models"].get("zipm") == version:
                    seen.add(r.json()["pid"])
            time.sleep(0.02)
        return seen

    responses: list[tuple[float, float, int, Any]] = []  # (when sent, when answered, status, version)
    stop = threading.Event()

    def score() -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=10) as c:
            while not stop.is_set():
                sent = time.monotonic()
                r = c.post("/v1/models/zipm/predict", json={"entity": "1"})
                version = r.json().get("version") if r.status_code == 200 else r.text
                responses.append((sent, time.monotonic(), r.status_code, version))

    threads = [threading.Thread(target=score) for _ in range(6)]
    try:
        assert len(workers_on(first, 120)) == 3, (tmp_path / "api.log").read_text()  # three starts at load 8+
        if load is not None:
            load.start()
        for t in threads:
            t.start()
        newest = first
        for seed in (2, 3, 4):
            time.sleep(0.5)
            newest = save(seed, 100 + 50 * seed)
        assert len(workers_on(newest, 30)) == 3
        back = sorted(written)[-2]
        reg.set_current("zipm", back)  # what `rivulet models rollback zipm` does
        assert len(workers_on(back, 30)) == 3  # every worker follows the rollback
        all_back = time.monotonic()
        time.sleep(1.0)  # the load goes on after it
        if load is not None:  # it ran through the whole drill: neither run out nor crashed
            assert load.alive(), load.crashed
    finally:  # the API and the load are stopped whatever failed (a failure before the threads started too)
        stop.set()
        try:
            for t in threads:
                if t.ident is not None:
                    t.join()
            if load is not None:
                load.stop()
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # the whole group: the server's workers too
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
    failed = [(status, v) for _, _, status, v in responses if status != 200]
    assert responses and not failed, failed[:3]
    for _, answered, _, version in responses:
        assert version in written and written[version] <= answered, (version, answered, written)
    assert {v for *_, v in responses} >= {first, newest}
    # once every worker has reported the rollback, every request sent after is answered by the rolled-back one
    after = [v for sent, _, _, v in responses if sent > all_back]
    assert after and set(after) == {back}, set(after)
    return responses
