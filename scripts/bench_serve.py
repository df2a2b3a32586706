"""Benchmark the scoring API against a bare FastAPI endpoint running the same model on the same request.

Rivulet (``serving.app``, one uvicorn worker) reads the entity's online features from Redis, merges the
request fields, scores with the registry's current version, and queues the prediction for Kafka; the bare
endpoint (``scripts/bench_serve_bare.py``) has the features in memory and does only the scoring. Loads:

1. ``wrk`` (closed loop, fixed concurrency): requests/s and p50/p99 for both, and the ratio (goal >= 0.7x);
2. ``wrk`` paced near a fixed rate (default 1,000 requests/s): p50/p99 for both (goal p99 <= 2 ms).

    .venv/bin/python scripts/bench_serve.py --connections 8 --seconds 10 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from river import metrics
from river.datasets import synth

from features.store import FeatureRow
from streaming.clients import feature_store, registry_writer
from streaming.ingest.topics import TopicAdmin
from streaming.learning.core import LearnerCore
from streaming.learning.keys import generate
from streaming.learning.spec import ModelSpec
from streaming.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchkit import drop, fresh, scratch_dir  # noqa: E402

from tests.support.model_defs import scaled_lr  # noqa: E402

SIGNER = generate()  # signs the benchmark's model; the API gets its public key
BODY = b'{"entity": "7", "fields": {"salary_mean_10m": 52000.0}}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    cmd: list[str], env: dict[str, str], port: int, log: Path, headers: dict[str, str]
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            if (
                httpx.post(
                    f"http://127.0.0.1:{port}/v1/models/zipm/predict",
                    content=BODY,
                    timeout=2,
                    headers={"content-type": "application/json", **headers},
                ).status_code
                == 200
            ):
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)


def wrk(
    port: int, connections: int, seconds: int, tmp: Path, delay_ms: float = 0, key: str | None = None
) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 (ms). With ``delay_ms`` each connection waits that long between requests,
    which paces the load near ``connections * 1000 / delay_ms`` requests/s."""
    script = tmp / "post.lua"
    lua = 'wrk.method = "POST"\nwrk.body = [[' + BODY.decode() + "]]\n"
    lua += 'wrk.headers["Content-Type"] = "application/json"\n'
    if key:
        lua += f'wrk.headers["X-API-Key"] = "{key}"\n'
    if delay_ms:
        lua += f"function delay()\n  return {delay_ms}\nend\n"
    script.write_text(lua)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v1/models/zipm/predict",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert errors is None, out
    return rps, pct("50"), pct("99")


def trained_state() -> Any:
    """The benchmark's model: 2,000 Agrawal records mapped onto the ``zip`` view's features."""
    core = LearnerCore([ModelSpec("zipm", "binary", "zip", scaled_lr, metrics=(metrics.Accuracy,))])
    for i, (x, y) in enumerate(itertools.islice(synth.Agrawal(seed=1), 2_000)):
        core.on_record(
            str(i),
            i,
            {"count_lifetime": x["age"], "salary_mean_10m": x["salary"], "loan_max_lifetime": x["loan"]},
            label=y,
        )
    return core.models["zipm"]


def seed(s: Settings, tmp: Path) -> None:
    """The model in the registry and entity 7's features in Redis (for Rivulet), both in a pickle (for the
    bare endpoint)."""
    state = trained_state()
    online = {"count_lifetime": 41, "salary_mean_10m": 61_000.0, "loan_max_lifetime": 120_000.0}
    registry_writer(s).save("zipm", state, {"offsets": {}, "view": "zip"})

    async def put() -> None:
        store = feature_store(s)
        await store.write([FeatureRow("zip", "7", online, int(time.time() * 1000))])
        await store.close()

    asyncio.run(put())
    (tmp / "state.pkl").write_bytes(pickle.dumps((state, {"7": online})))


def server_env(s: Settings, tmp: Path, api_key: str | None) -> dict[str, str]:
    keys = {}
    if api_key:
        keys = {
            "RIVULET_SCORING_API_KEYS": api_key,
            "RIVULET_INGEST_API_KEYS": "bench-ingest",
            "RIVULET_READ_API_KEYS": "bench-read",
            "RIVULET_ADMIN_API_KEYS": "bench-admin",
        }
    return {
        **os.environ,
        "RIVULET_TOPIC_PREFIX": s.topic_prefix,
        "RIVULET_REDIS_PREFIX": s.redis_prefix,
        "RIVULET_VERIFY_KEYS": SIGNER.public.encoded,
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs",
        "BENCH_STATE": str(tmp / "state.pkl"),
        **keys,
        "PYTHONPATH": str(ROOT),
    }


def measure(ports: dict[str, int], args: argparse.Namespace, tmp: Path) -> None:
    """The two loads on both servers (warmed up first), printed."""
    for name in ports:
        wrk(ports[name], args.connections, 2, tmp, key=args.api_key)  # warm up
    results = {
        name: wrk(ports[name], args.connections, args.seconds, tmp, key=args.api_key) for name in ports
    }
    print(f"wrk, {args.connections} connections, {args.seconds} s, one uvicorn worker each:")
    for name, (rps, p50, p99) in results.items():
        print(f"  {name:>8}: {rps:>8,.0f} requests/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    print(f"  ratio rivulet/bare: {results['rivulet'][0] / results['bare'][0]:.2f}x (goal >= 0.7x)")
    paced = 4
    delay = paced * 1000 / args.rate
    print(f"paced near {args.rate:,.0f} requests/s ({paced} connections, {delay:.1f} ms apart):")
    for name in ports:
        rps, p50, p99 = wrk(ports[name], paced, args.seconds, tmp, delay_ms=delay, key=args.api_key)
        print(f"  {name:>8}: {rps:>8,.0f} requests/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms (goal <= 2 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1_000)
    parser.add_argument(
        "--api-key",
        default=None,
        help="Run Rivulet with this scoring key (and a key of every other scope) and send it: the key "
        "check on the hot path (the bare endpoint ignores it).",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    s = fresh(Settings(), signing_key=SecretStr(SIGNER.encoded))
    tmp = scratch_dir()
    seed(s, tmp)
    env = server_env(s, tmp, args.api_key)
    uv = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    apps = {"bare": "scripts.bench_serve_bare:app", "rivulet": "serving.app:create_app"}
    ports = {name: free_port() for name in apps}
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    procs = []
    with TopicAdmin(s) as admin:
        admin.create()
        try:
            for name, app in apps.items():
                factory = ["--factory"] if name == "rivulet" else []
                cmd = [*uv, "--port", str(ports[name]), *factory, app]
                procs.append(start(cmd, env, ports[name], tmp / f"{name}.log", headers))
            measure(ports, args, tmp)
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            drop(s)


if __name__ == "__main__":
    main()
