"""The SIGSTOP fencing drill (issue 15), run by the single-node test (tests/streaming/runtime/
test_learner_fencing.py) and the cluster one (tests/deploy/test_cluster_learners_api.py): two learner
processes for one model, the owner paused (SIGSTOP) past its lease, the standby takes over and writes, the
owner resumed (SIGCONT) writes nothing more and stops with a clear message; the registry's versions form one
unbroken lineage, each written by the holder of its epoch; the final model equals one learned without any of
this. A :class:`~tests.support.chaos.LoadProducer` given as ``load`` sends events with the SDK from the pause
until the owner has stopped: the fault happens under load."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streaming.clients import kafka_producer
from streaming.learning.registry import VersionInfo
from streaming.settings import Settings
from tests.support.chaos import LoadProducer
from tests.support.learning import delayed_stream, learn, learner_process, registry

__all__ = ["fencing_drill", "kill", "send", "wait"]

N, DELAY = 3_000, 25
LEASE = {"RIVULET_LEARNER_LEASE_MS": "1500"}


def send(s: Settings, records: list[tuple[str, dict[str, Any]]]) -> None:
    producer = kafka_producer(s, acks="all", max_in_flight_requests_per_connection=1)  # in order
    for role, value in records:
        key = value.get("entity") or value["event_id"]
        producer.send(getattr(s.topics, role), orjson.dumps(value), key=str(key).encode())
    producer.flush()
    producer.close()


def wait(what: str, ok: Callable[[], bool], *procs: tuple[subprocess.Popen[bytes], Path]) -> None:
    deadline = time.monotonic() + 120
    while not ok():
        for proc, log in procs:
            tail = log.read_text()[-3000:]
            assert proc.poll() is None, f"{log.name} stopped while waiting for {what}:\n{tail}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def fencing_drill(
    s: Settings, tmp_path: Path, env: dict[str, str] | None = None, load: LoadProducer | None = None
) -> list[VersionInfo]:
    """The drill on the topics of ``s`` (created), its learners run with ``env`` added (the cluster's, on
    the cluster); the registry's versions at the end."""
    env = env or {}
    _, records = delayed_stream(N, DELAY, function=1, seed=5)
    half = len(records) // 2
    reg = registry(s)

    def versions() -> list[VersionInfo]:
        return sorted(reg.versions("lr"), key=lambda v: v.version)

    def newest(epoch: int, learned: int = 1) -> bool:
        vs = versions()
        return bool(vs) and vs[-1].header.get("epoch") == epoch and vs[-1].header["n_learned"] >= learned

    send(s, records[:half])
    owner_log, standby_log = tmp_path / "owner.log", tmp_path / "standby.log"
    # the owner stops once fenced (no standby); a standby one stays: test_learner_takeover.py
    no_standby = {**env, "RIVULET_LEARNER_STANDBY": "false", **LEASE}
    owner = learner_process(s, "tests.support.model_defs", owner_log, **no_standby)
    standby = None
    try:
        wait("the owner's first version", lambda: newest(1), (owner, owner_log))
        standby = learner_process(s, "tests.support.model_defs", standby_log, **env, **LEASE)
        both = ((owner, owner_log), (standby, standby_log))
        wait("the standby to wait", lambda: "standby" in standby_log.read_text(), *both)
        assert not any(v.header.get("epoch") != 1 for v in versions())  # the standby wrote nothing

        if load is not None:
            load.start()
        os.killpg(owner.pid, signal.SIGSTOP)  # past its lease: the standby takes over
        send(s, records[half:])
        wait("the standby's first version", lambda: newest(2), (standby, standby_log))
        by_owner = {v.version for v in versions() if v.header["epoch"] == 1}
        features = sum(1 for role, _ in records if role == "features")
        wait("the standby to learn everything", lambda: newest(2, features), (standby, standby_log))

        os.killpg(owner.pid, signal.SIGCONT)  # a zombie: it has records to learn and checkpoints due
        rc = owner.wait(timeout=120)
        if load is not None:  # it ran through the whole fault: neither run out nor crashed
            assert load.alive(), load.crashed
            load.stop()
        out = owner_log.read_text()
        assert rc == 1, out[-3000:]
        assert "lease lost" in out and "another learner took over" in out, out[-3000:]
        assert "this learner stops without writing a checkpoint" in out
        assert {v.version for v in versions() if v.header["epoch"] == 1} == by_owner  # it wrote nothing more

        standby.send_signal(signal.SIGTERM)  # a clean stop: its last checkpoint, the lease given back
        assert standby.wait(timeout=60) == 0, standby_log.read_text()[-3000:]
    finally:
        if load is not None:
            load.stop()
        kill(owner)
        if standby is not None:
            kill(standby)

    # one unbroken lineage: consecutive versions, each based on the one before it, positions never going
    # back, epochs never going back (the owner's, then the standby's)
    vs = versions()
    assert [v.version for v in vs] == list(range(1, len(vs) + 1))
    assert all(v.refused is None for v in vs)
    assert vs[0].header["base"]["version"] is None
    for before, after in itertools.pairwise(vs):
        assert after.header["base"]["version"] == before.version
        assert after.header["base"]["offsets"] == before.header["offsets"]
        assert after.header["epoch"] >= before.header["epoch"]
        for topic, parts in before.header["offsets"].items():
            for p, o in parts.items():
                assert after.header["offsets"][topic][p] >= o
    assert {v.header["epoch"] for v in vs} == {1, 2}

    # the oracle: one learner alone on the same topics (its own registry keys)
    final = reg.load("lr", vs[-1].version).state
    clean = learn(s, prefix=f"{s.redis_prefix}clean:").core.models["lr"]
    assert final.n_learned == clean.n_learned == features
    assert final.metrics[0].get() == clean.metrics[0].get()
    return vs
