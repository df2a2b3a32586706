"""``rivulet up`` on the real Kafka and Redis: the feature worker, learner and API as supervised processes;
an event published with ``rivulet produce`` changes the score the API serves; ``rivulet down`` stops them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import psutil
import pytest

from streaming import clients
from streaming.ingest.topics import TopicAdmin
from streaming.learning.keys import generate
from streaming.runtime.stack import PROGRAMS, Program, Stack
from streaming.settings import Settings
from tests.support.api_env import free_port
from tests.support.processes import module_child

pytestmark = pytest.mark.integration


def rivulet(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return module_child("streaming.cli", *args, env=env, timeout=timeout)


def score(url: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    try:
        r = httpx.post(
            f"{url}/v1/models/approval-lr/predict", json={"entity": "e1", "fields": fields}, timeout=5
        )
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def isolated(base: Settings, data_dir: Path, port: int, **extra: str) -> tuple[dict[str, str], Settings]:
    """The environment of a rivulet command with this test's own topics, keys, data dir and API port, and
    the same as settings."""
    run = uuid.uuid4().hex[:10]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RIVULET_")},
        "RIVULET_TOPIC_PREFIX": f"test.{run}.",
        "RIVULET_REDIS_PREFIX": f"test:{run}:",
        "RIVULET_DATA_DIR": str(data_dir),
        "RIVULET_SERVE_PORT": str(port),
        **extra,
    }
    update = {"topic_prefix": f"test.{run}.", "redis_prefix": f"test:{run}:", "data_dir": str(data_dir)}
    return env, base.model_copy(update=update)


def forget(settings: Settings) -> None:
    """Delete the test's topics and Redis keys."""
    with TopicAdmin(settings) as admin:
        admin.delete([t for t in admin.list_topics(all_topics=True) if settings.topic_prefix in t])
    client = clients.redis_client(settings)
    for key in client.scan_iter(match=f"{settings.redis_prefix}*"):
        client.delete(key)
    client.close()


def test_up_scores_a_produced_event_and_down_stops(
    base_settings: Settings, kafka_up: str, redis_up: str, tmp_path: Path
) -> None:
    port = free_port()
    # no signing key: rivulet up generates and keeps one
    env, settings = isolated(base_settings, tmp_path / "data", port, RIVULET_LOG_LEVEL="INFO")
    stack = Stack(settings)
    url = f"http://127.0.0.1:{port}"
    logs = tmp_path / "data" / "logs"
    try:
        started = rivulet(env, "up", "--features-metrics-port", str(free_port()))
        assert started.returncode == 0, started.stdout + started.stderr
        programs = stack.programs()  # supervisord's own account, over XML-RPC
        assert {n: p.state for n, p in programs.items()} == dict.fromkeys(PROGRAMS, "RUNNING"), programs
        for name in PROGRAMS:
            assert re.search(rf"{name}\s+RUNNING\s+log: ", started.stdout), started.stdout

        produced = rivulet(env, "produce", "synth:agrawal", "--limit", "3000", "--entities", "20", "--quiet")
        assert produced.returncode == 0, produced.stdout + produced.stderr
        probe = {"salary": 60_000.0, "loan": 250_000.0, "age": 40}
        # until every event is learned and that version served: the stream is live (stamped as it was
        # sent), so none is late or dead-lettered
        settled(url, 3000, logs)
        before = score(url, probe)
        assert before is not None and before["features_found"] is True

        # one more event for e1, published with rivulet produce: its aggregates move, so does its score
        event = {"entity": "e1", "ts": int(time.time() * 1000) + 60_000, "label": True}
        event["fields"] = {
            "salary": 20_000.0,
            "commission": 0.0,
            "age": 70,
            "elevel": 4,
            "car": 1,
            "zipcode": 2,
            "hvalue": 900_000.0,
            "hyears": 30,
            "loan": 500_000.0,
        }
        path = tmp_path / "one.jsonl"
        path.write_bytes(orjson.dumps(event) + b"\n")
        produced = rivulet(env, "produce", str(path), "--quiet")
        assert produced.returncode == 0, produced.stdout + produced.stderr
        settled(url, 3001, logs)  # learned (not dead-lettered as late) and served
        after = score(url, probe)
        assert after is not None and after["probabilities"] != before["probabilities"]
        dashboard = httpx.get(f"{url}/v1/dashboard", timeout=5).json()
        assert dashboard["models"]["approval-lr"]["history"], "the learner records monitoring samples"
        # the CLI verifies with the public key rivulet up kept; only the learner holds the private key
        listed = rivulet(env, "models", "versions", "approval-lr")
        assert listed.returncode == 0 and "learned=3001" in listed.stdout, listed.stdout + listed.stderr
        home = tmp_path / "data" / "stack"
        assert (home / "signing-key").stat().st_mode & 0o077 == 0
        conf = (home / "supervisord.conf").read_text()
        assert [p for p in conf.split("[program:") if "RIVULET_SIGNING_KEY" in p] == [
            p for p in conf.split("[program:") if p.startswith("learner]")
        ]
    finally:
        stopped = rivulet(env, "down")
        forget(settings)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not stack.running() and stack.strays() == []
    assert not any(alive(p.pid) for p in programs.values())
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the API is still listening after rivulet down"
    for name in ("features", "learner", "api"):
        assert (logs / f"{name}.log").stat().st_size > 0


def settled(url: str, learned: int, logs: Path, timeout_s: float = 120) -> None:
    """Until approval-lr's newest version has learned ``learned`` records and the API serves it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            m = httpx.get(f"{url}/v1/dashboard", timeout=5).json()["models"].get("approval-lr", {})
        except (httpx.HTTPError, ValueError):
            m = {}
        if m.get("learned") == learned and m.get("loaded_version") == m.get("current_version"):
            return
        assert m.get("learned") is None or m["learned"] <= learned, m.get("learned")
        assert time.monotonic() < deadline, f"not {learned} learned and served: {m}\n" + _tail(logs)
        time.sleep(0.5)


def _tail(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(logs.glob("*.log")))


def test_the_supervisor_restarts_a_program_and_down_stops_the_orphans_of_a_killed_one(
    base_settings: Settings, kafka_up: str, redis_up: str, tmp_path: Path
) -> None:
    """Through supervisord's XML-RPC API: three programs RUNNING, its children by psutil; a killed API is
    started again while the other two keep their pid. kill -9 of supervisord orphans the programs: they
    keep working, up must not start a second learner beside them, and down must stop them.

    An orphan lives until it writes to its output, a pipe whose reader was the dead supervisor: the feature
    worker then fails on EPIPE and exits (seen with strace some 30 s after the kill). So after the kill
    the strays are a subset of the programs, and down stops whichever are left."""
    port = free_port()
    # a space in the data dir: every path is quoted for supervisord
    env, settings = isolated(
        base_settings, tmp_path / "data dir", port, RIVULET_SIGNING_KEY=generate().encoded
    )
    stack = Stack(settings)
    home = tmp_path / "data dir" / "stack"
    assert stack.home == home
    metrics = free_port()
    try:
        started = rivulet(env, "up", "--features-metrics-port", str(metrics))
        assert started.returncode == 0, started.stdout + started.stderr
        assert (home / "supervisord.conf").stat().st_mode & 0o077 == 0  # it holds the signing key
        programs = stack.programs()
        assert {n: p.state for n, p in programs.items()} == dict.fromkeys(PROGRAMS, "RUNNING")
        supervisor = psutil.Process(int((home / "supervisord.pid").read_text()))
        assert {c.pid for c in supervisor.children()} == {p.pid for p in programs.values()}

        # supervision: the API killed, started again under a new pid; the others' pids and start times
        # unchanged over that window (a crash of either would have changed them)
        os.kill(programs["api"].pid, signal.SIGKILL)
        restarted = until(lambda: _restarted(stack, programs["api"]), "the API restarted", home)
        until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), "the restarted API answers", home)
        now = stack.programs()
        assert now["api"].pid == restarted.pid != programs["api"].pid
        for name in ("features", "learner"):
            assert (now[name].pid, now[name].start) == (programs[name].pid, programs[name].start), name
        pids = sorted(p.pid for p in now.values())

        supervisor.kill()
        until(lambda: not stack.running(), "supervisord gone", home)
        killed_at = time.time()
        # the programs outlive it: the stack finds them by its mark; the API and the learner, which write
        # nothing at this log level, still do their work after it (the feature worker dies at its first
        # output, whenever Faust writes one)
        strays = set(stack.strays())
        assert strays <= set(pids), (strays, pids)
        assert {now["api"].pid, now["learner"].pid} <= strays, (strays, now)
        until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), "the orphaned API answers", home)
        beat = home / "learner.alive"
        until(lambda: beat.exists() and beat.stat().st_mtime > killed_at, "the learner's heartbeat", home)

        again = rivulet(env, "up", "--features-metrics-port", str(metrics))
        assert again.returncode == 1 and "rivulet down first" in again.stderr, again.stdout + again.stderr
        assert set(stack.strays()) <= set(pids)  # the refused up started nothing
        stopped = rivulet(env, "down")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not any(alive(p) for p in pids), [p for p in pids if alive(p)]
        assert stack.strays() == []
    finally:
        rivulet(env, "down")
        forget(settings)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the API is still listening after rivulet down"


def _restarted(stack: Stack, before: Program) -> Program | None:
    """The program ``before`` RUNNING again under another pid, by supervisord's account."""
    now = stack.programs()[before.name]
    return now if now.state == "RUNNING" and now.pid not in (0, before.pid) else None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


T = TypeVar("T")


def until(check: Callable[[], T], what: str, home: Path, timeout_s: float = 90) -> T:
    """Until ``check()`` gives a true value (returned); fails with the logs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"not {what} within {timeout_s:.0f} s\n" + _tail(
            home.parent / "logs"
        )
        time.sleep(0.2)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
