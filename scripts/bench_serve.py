"""Benchmark the scoring API against a bare FastAPI endpoint running the same model on the same requests.

Rivulet (``rivulet serve --workers N``) reads the entity's online features from Redis, merges the request
fields, scores with the registry's current version, and queues the prediction for Kafka; the bare endpoint
(``scripts/bench_serve_bare.py``, uvicorn with as many workers) has every entity's features in memory and
does only the scoring. Both get the same requests from ``wrk``, whose Lua script picks each request's entity:

- ``hot``: one of ``--hot`` entities (default 16): the same vectors again and again (near-cache hits);
- ``uniform``: any of ``--entities`` (default 1,000,000), all of them in Redis (cache misses).

For each mix and each worker count of ``--workers`` (default 1 and 2) two loads, bare then Rivulet under
each server of ``--servers`` (default uvicorn and granian, ``rivulet serve --server``):

1. closed loop (``--connections``, no pause): requests/s, p50/p99, and the ratio (goal >= 0.7x);
2. paced near ``--rate`` requests/s (4 connections, each pausing between requests): p50/p99 (goal p99 <=
   2 ms).

``--runs 3`` repeats the measurements on the same servers and prints each run and the median of the runs.
``--profile PATH`` then records Rivulet (one worker) with py-spy under the closed loop of each mix
(``PATH-hot.txt``, collapsed stacks, and ``PATH-hot.svg``; the same for ``uniform``) and prints the
functions that take the most of its CPU (a ``py-spy top`` of the run).

    .venv/bin/python scripts/bench_serve.py --connections 8 --seconds 8 --rate 1000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import os
import pickle
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from pydantic import SecretStr
from river import metrics
from river.datasets import synth

from features.redis_store import vector_key
from streaming.clients import feature_store, redis_client, registry_writer
from streaming.ingest.topics import TopicAdmin
from streaming.learning.core import LearnerCore
from streaming.learning.keys import generate
from streaming.learning.spec import ModelSpec
from streaming.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_serve_bare import online  # noqa: E402
from benchkit import drop, fresh, scratch_dir  # noqa: E402

from tests.support.model_defs import scaled_lr  # noqa: E402

SIGNER = generate()  # signs the benchmark's model; the API gets its public key
FIELDS = '"fields": {"salary_mean_10m": 52000.0}'
PATH = "/v1/models/zipm/predict"
MIXES = ("hot", "uniform")
PACED_CONNECTIONS = 4
Figures = tuple[float, float, float, float]  # requests/s, p50 ms, p99 ms, server CPU us per request


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}{PATH}"


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
    deadline = time.monotonic() + 180  # a loaded 2-core machine starts two workers slowly
    body = '{"entity": "7", ' + FIELDS + "}"
    while True:
        try:
            r = httpx.post(
                f"http://127.0.0.1:{port}{PATH}",
                content=body,
                timeout=2,
                headers={"content-type": "application/json", **headers},
            )
            if r.status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):  # not left running: the caller knows only its own
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
            raise AssertionError(f"{cmd[-3:]} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def lua(mix: str, entities: int, hot: int, key: str | None, delay_ms: float) -> str:
    """wrk's script: a POST whose entity is drawn per request (one of ``hot`` spread over the ids, or any
    of ``entities``), the same body otherwise; ``delay_ms`` between two requests of a connection."""
    step = max(entities // hot, 1)
    pick = f"math.random(0, {hot - 1}) * {step}" if mix == "hot" else f"math.random(0, {entities - 1})"
    headers = '{["Content-Type"] = "application/json"' + (f', ["X-API-Key"] = "{key}"' if key else "") + "}"
    script = f"""
local headers = {headers}
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end
function request()
  local e = {pick}
  return wrk.format("POST", nil, headers, '{{"entity": "' .. e .. '", {FIELDS}}}')
end
"""
    if delay_ms:
        script += f"function delay()\n  return {delay_ms}\nend\n"
    return script


def cpu_s(pid: int) -> float:
    """The CPU seconds (user and system) of a process and its children so far (a server's workers)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def wrk(port: int, connections: int, seconds: int, script: Path, pid: int | None = None) -> Figures:
    """Requests/s, p50 and p99 (ms) of one wrk run, and the CPU the server ``pid`` (its process tree) took
    per request, in microseconds: a figure the other loads on a shared machine disturb much less than the
    throughput (0 without ``pid``)."""
    before = cpu_s(pid) if pid else 0.0
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url(port)],
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
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu_us = (cpu_s(pid) - before) * 1e6 / max(done, 1) if pid else 0.0
    return rps, pct("50"), pct("99"), cpu_us


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


def seed(s: Settings, tmp: Path, entities: int) -> None:
    """The model in the registry and in a pickle (for the bare endpoint); the vector of every entity in
    Redis, written in pipelines in the store's own format (checked by reading two back through the store)."""
    state = trained_state()
    registry_writer(s).save("zipm", state, {"offsets": {}, "view": "zip"})
    (tmp / "state.pkl").write_bytes(pickle.dumps(state))
    ts = int(time.time() * 1000)
    client = redis_client(s)
    pipe = client.pipeline(transaction=False)
    for i in range(entities):
        values = {k: orjson.dumps(v) for k, v in online(i).items()}
        pipe.hset(vector_key(s.redis_prefix, "zip", str(i)), mapping={"_ts": ts, **values})
        if i % 20_000 == 19_999:
            pipe.execute()
    pipe.execute()
    client.close()

    async def check() -> None:
        store = feature_store(s)
        last = str(entities - 1)
        rows = await store.read("zip", ["7", last])
        await store.close()
        assert [r.values if r else None for r in rows] == [online(7), online(entities - 1)], rows

    asyncio.run(check())


def unlink_all(s: Settings) -> None:
    """Remove the run's keys a thousand at a time (``drop`` deletes them one by one)."""
    client = redis_client(s)
    batch = []
    for key in client.scan_iter(match=f"{s.redis_prefix}*", count=10_000):
        batch.append(key)
        if len(batch) == 1_000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)
    client.close()


def server_env(s: Settings, tmp: Path, api_key: str | None, entities: int) -> dict[str, str]:
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
        "RIVULET_LOG_LEVEL": "WARNING",
        "BENCH_STATE": str(tmp / "state.pkl"),
        "BENCH_ENTITIES": str(entities),
        **keys,
        "PYTHONPATH": str(ROOT),
    }


def names(args: argparse.Namespace) -> list[str]:
    """The servers measured: the bare endpoint, then Rivulet under each of ``--servers``."""
    return ["bare", *(f"rivulet/{server}" for server in args.servers)]


def variant(name: str) -> tuple[str, dict[str, str]]:
    """A Rivulet server's ``--server`` and the environment it adds: ``uvicorn@RIVULET_NEAR_CACHE=false``
    runs uvicorn with the near cache off (an A/B in the same run).

    >>> variant("rivulet/uvicorn@RIVULET_NEAR_CACHE=false@A=b")
    ('uvicorn', {'RIVULET_NEAR_CACHE': 'false', 'A': 'b'})
    >>> variant("rivulet/uvicorn@PYTHONPATH=/work/base")  # another checkout's code (a value with slashes)
    ('uvicorn', {'PYTHONPATH': '/work/base'})
    """
    server, *extra = name.partition("/")[2].split("@")
    return server, dict(e.split("=", 1) for e in extra)


def measure(
    ports: dict[tuple[str, int], int], pids: dict[tuple[str, int], int], args: argparse.Namespace, tmp: Path
) -> dict[str, Figures]:
    """One run: every mix, worker count and load, bare then Rivulet back to back."""
    out: dict[str, Figures] = {}
    for mix, workers in itertools.product(args.mixes, args.workers):
        for load, conns, delay in (
            ("closed", args.connections, 0.0),
            ("paced", PACED_CONNECTIONS, PACED_CONNECTIONS * 1000 / args.rate),
        ):
            script = tmp / f"{mix}-{load}.lua"
            script.write_text(lua(mix, args.entities, args.hot, args.api_key, delay))
            for name in names(args):
                out[f"{mix} {load} w{workers} {name}"] = wrk(
                    ports[name, workers], conns, args.seconds, script, pids[name, workers]
                )
    return out


def report(results: dict[str, Figures], args: argparse.Namespace, title: str) -> None:
    print(
        f"{title} ({args.connections} connections closed loop, {PACED_CONNECTIONS} paced; "
        f"{args.seconds} s each)"
    )
    width = max(map(len, names(args)))
    for mix, workers, load in itertools.product(args.mixes, args.workers, ("closed", "paced")):
        bare = results[f"{mix} {load} w{workers} bare"][0]
        for name in names(args):
            rps, p50, p99, cpu = results[f"{mix} {load} w{workers} {name}"]
            goal = f"ratio {rps / bare:.2f}x (goal >= 0.7x)" if load == "closed" else "(goal p99 <= 2 ms)"
            goal = "" if name == "bare" else goal
            print(
                f"  {mix:<7} w{workers} {load:<6} {name:<{width}} {rps:>7,.0f}/s p50 {p50:5.2f} ms "
                f"p99 {p99:6.2f} ms cpu {cpu:5.0f} us/req {goal}"
            )


def median(runs: list[dict[str, Figures]]) -> dict[str, Figures]:
    """Each figure's median over the runs (the ratio is then of the medians)."""
    return {
        k: (
            statistics.median(r[k][0] for r in runs),
            statistics.median(r[k][1] for r in runs),
            statistics.median(r[k][2] for r in runs),
            statistics.median(r[k][3] for r in runs),
        )
        for k in runs[0]
    }


def top(collapsed: Path, limit: int = 25) -> str:
    """A ``py-spy top`` of a recording (``--format raw``): per function (lines merged), the share of the
    samples where it runs itself and where it is on the stack."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    n = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or "Thread._bootstrap" in stack:  # the idle thread pool is not the path
            continue
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        n += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    rows = [f"  {'%own':>5} {'%total':>6}  function ({n} samples of the event loop's thread)"]
    rows += [f"  {100 * c / n:5.1f} {100 * total[f] / n:6.1f}  {f[:120]}" for f, c in own.most_common(limit)]
    return "\n".join(rows)


def profile(port: int, pid: int, args: argparse.Namespace, tmp: Path) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    for mix in args.mixes:
        script = tmp / f"{mix}-profile.lua"
        script.write_text(lua(mix, args.entities, args.hot, args.api_key, 0.0))
        load = subprocess.Popen(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds + 4}s", "-s", str(script), url(port)],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(1)
        raw, svg = Path(f"{args.profile}-{mix}.txt"), Path(f"{args.profile}-{mix}.svg")
        record = [
            spy,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "-d",
            str(args.seconds // 2),
            "-r",
            "250",
        ]
        subprocess.run([*record, "--format", "raw", "-o", str(raw)], check=True, capture_output=True)
        subprocess.run([*record, "-o", str(svg)], check=True, capture_output=True)
        load.wait()
        print(f"py-spy, {names(args)[1]} w1, {mix}, closed loop ({raw}, {svg}):\n{top(raw)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rate", type=float, default=1_000)
    parser.add_argument("--entities", type=int, default=1_000_000, help="the uniform mix's entities")
    parser.add_argument("--hot", type=int, default=16, help="the hot mix's entities")
    parser.add_argument("--workers", type=lambda v: [int(n) for n in v.split(",")], default=[1, 2])
    parser.add_argument(
        "--servers",
        type=lambda v: v.split(","),
        default=["uvicorn", "granian"],
        help="rivulet serve --server of each Rivulet measured (the profile is of the first); "
        "SERVER@VAR=VALUE... adds to its environment (uvicorn,uvicorn@RIVULET_NEAR_CACHE=false: an A/B; "
        "uvicorn@PYTHONPATH=/path/to/a/worktree: another commit's code, compiled: python -m compileall)",
    )
    parser.add_argument("--mixes", type=lambda v: v.split(","), default=list(MIXES), help="hot,uniform")
    parser.add_argument("--runs", type=int, default=1, help="repeat; print each run and the medians")
    parser.add_argument("--profile", default=None, help="py-spy recordings of Rivulet (1 worker) to PATH-*")
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
    env = server_env(s, tmp, args.api_key, args.entities)
    rivulet = str(Path(sys.executable).parent / "rivulet")
    uv = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
    ports: dict[tuple[str, int], int] = {}
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores", flush=True)
    with TopicAdmin(s) as admin:
        admin.create()
        try:
            seed(s, tmp, args.entities)
            for workers in args.workers:
                for name in names(args):
                    port = ports[name, workers] = free_port()
                    serve = [rivulet, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers"]
                    server, extra = variant(name)
                    cmd = (
                        [*uv, "--port", str(port), "--workers", str(workers), "scripts.bench_serve_bare:app"]
                        if name == "bare"
                        else [*serve, str(workers), "--server", server]
                    )
                    log = tmp / f"{re.sub(r'[^A-Za-z0-9_.-]', '-', name)}{workers}.log"
                    procs[name, workers] = start(cmd, {**env, **extra}, port, log, headers)
            for mix in args.mixes:  # warm up: every server, every mix
                script = tmp / f"{mix}-warm.lua"
                script.write_text(lua(mix, args.entities, args.hot, args.api_key, 0.0))
                for port in ports.values():
                    wrk(port, args.connections, 2, script)
            runs = []
            for run in range(args.runs):
                runs.append(measure(ports, {k: p.pid for k, p in procs.items()}, args, tmp))
                report(runs[-1], args, f"run {run + 1}")
            if args.runs > 1:
                report(median(runs), args, f"median of {args.runs} runs")
            first = names(args)[1]
            if args.profile and (first, 1) in procs:
                profile(ports[first, 1], procs[first, 1].pid, args, tmp)
        finally:
            for proc in procs.values():
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            unlink_all(s)
            drop(s)
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
