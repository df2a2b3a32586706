"""Learners that share specs, on real Kafka and Redis: one holding several specs loses one (another learner
took it over while it was paused), drops it without writing and keeps the others, then takes it back when
its lease is free again; N learners given shards ``I/N`` split the specs, a standby takes a dead one's over,
and the restarted one gets its own back. Each model equals a run without any of this, and its versions form
one unbroken lineage."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streaming.clients import redis_client
from streaming.learning.leases import RedisLeases
from streaming.learning.registry import RedisRegistry, VersionInfo
from streaming.learning.state import ModelState
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.support.fencing_drill import kill, send, wait
from tests.support.learning import LEARNER_IDLE_S, delayed_stream, learner_process, registry
from tests.support.model_defs import TRIO

pytestmark = pytest.mark.integration

N, DELAY = 1_500, 25
LEASE = {"RIVULET_LEARNER_LEASE_MS": "1500"}
NAMES = [s.name for s in TRIO]


def versions(reg: RedisRegistry, name: str) -> list[VersionInfo]:
    return sorted(reg.versions(name), key=lambda v: v.version)


def learned(reg: RedisRegistry, name: str, n: int, epoch: int | None = None) -> bool:
    """The newest version of ``name`` learned ``n`` records (written under ``epoch``, if given)."""
    vs = versions(reg, name)
    return bool(vs) and vs[-1].header["n_learned"] >= n and epoch in (None, vs[-1].header.get("epoch"))


def one_lineage(reg: RedisRegistry, name: str) -> list[int]:
    """Check ``name``'s versions form one unbroken lineage (consecutive, each based on the one before it,
    positions and epochs never going back); returns the epochs in version order."""
    vs = versions(reg, name)
    assert [v.version for v in vs] == list(range(1, len(vs) + 1)), name
    assert all(v.refused is None for v in vs)
    assert vs[0].header["base"]["version"] is None
    for before, after in itertools.pairwise(vs):
        assert after.header["base"]["version"] == before.version, (name, after.version)
        assert after.header["base"]["offsets"] == before.header["offsets"], (name, after.version)
        assert after.header["epoch"] >= before.header["epoch"], (name, after.version)
        for topic, parts in before.header["offsets"].items():
            for p, o in parts.items():
                assert after.header["offsets"][topic][p] >= o
    return [v.header["epoch"] for v in vs]


def clean_models(s: Settings) -> dict[str, ModelState]:
    """The oracle: one learner alone with the three specs on the same topics (its own registry keys)."""
    prefix = f"{s.redis_prefix}clean:"
    alone = s.model_copy(update={"redis_prefix": prefix})
    worker = LearnerWorker(alone, TRIO, registry=registry(s, prefix))
    worker.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)
    return dict(worker.core.models)


def assert_equal_to_clean(s: Settings, reg: RedisRegistry, n_features: int) -> None:
    clean = clean_models(s)
    for name in NAMES:
        final = reg.load(name, versions(reg, name)[-1].version).state
        assert final.n_learned == clean[name].n_learned == n_features, name
        assert [m.get() for m in final.metrics] == [m.get() for m in clean[name].metrics], name
        weights = final.model["LogisticRegression"].weights  # type: ignore[index]
        assert weights == clean[name].model["LogisticRegression"].weights, name  # type: ignore[index]


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """A clean stop (its last checkpoint, its leases given back)."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]


def test_a_learner_drops_the_spec_it_lost_keeps_the_others_and_takes_it_back(
    topics: Settings, tmp_path: Path
) -> None:
    s = topics
    reg = registry(s)
    _, records = delayed_stream(N, DELAY, function=1, seed=7)
    features = sum(1 for role, _ in records if role == "features")
    first, second, third = records[: len(records) // 3], records[len(records) // 3 : -200], records[-200:]
    done = sum(1 for role, _ in first + second if role == "labels")  # learned once the first two are read

    send(s, first)
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a = learner_process(s, "tests.support.model_defs:TRIO", a_log, **LEASE)  # every spec its own, a standby
    b = None
    try:
        wait("a's first versions", lambda: all(learned(reg, n, 1, epoch=1) for n in NAMES), (a, a_log))
        b = learner_process(s, "tests.support.model_defs:TRIO_T1", b_log, **LEASE)  # t1 only
        both = ((a, a_log), (b, b_log))
        wait("b to stand by", lambda: "standby" in b_log.read_text(), *both)

        os.killpg(a.pid, signal.SIGSTOP)  # past its leases: b takes t1; t2 and t3 lapse, nobody takes them
        send(s, second)
        wait("b's first version of t1", lambda: learned(reg, "t1", 1, epoch=2), (b, b_log))
        assert not any(v.header["epoch"] != 1 for n in ("t2", "t3") for v in versions(reg, n))
        os.killpg(a.pid, signal.SIGCONT)  # t1 is b's now; a keeps t2 and t3
        wait("b to learn t1", lambda: learned(reg, "t1", done, epoch=2), *both)
        wait("a to learn t2 and t3", lambda: learned(reg, "t2", done) and learned(reg, "t3", done), *both)
        out = a_log.read_text()
        lost = [line for line in out.splitlines() if "lease lost" in line]
        assert lost and all('"t1"' in line for line in lost), out[-3000:]  # t1 alone
        assert "lease lapsed and taken again" in out  # t2, t3: nobody held them meanwhile (epoch + 1)
        assert a.poll() is None  # it holds t2 and t3: it goes on
        by_a = {v.version for v in versions(reg, "t1") if v.header["epoch"] == 1}
        # a dropped t1: it wrote nothing of it since b took it over, and no longer computes it
        assert max(by_a) < min(v.version for v in versions(reg, "t1") if v.header["epoch"] == 2)

        stop(b, b_log)  # t1's lease given back: a, its standby, takes it over from b's last version
        send(s, third)
        for name in NAMES:
            wait(f"a to learn {name}", lambda name=name: learned(reg, name, features), (a, a_log))
        stop(a, a_log)
    finally:
        kill(a)
        if b is not None:
            kill(b)

    assert one_lineage(reg, "t1")[-1] == 3  # a's again: a new epoch, restored from b's version
    assert set(one_lineage(reg, "t1")) == {1, 2, 3}
    for name in ("t2", "t3"):
        assert set(one_lineage(reg, name)) == {1, 2}  # a's all along, the epoch moved when the lease lapsed
    assert_equal_to_clean(s, reg, features)


def test_shards_split_the_specs_a_standby_takes_over_and_gives_back(topics: Settings, tmp_path: Path) -> None:
    s = topics
    reg = registry(s)
    leases = RedisLeases(redis_client(s), s.redis_prefix, 1500, owner="test")
    _, records = delayed_stream(N, DELAY, function=2, seed=11)
    features = sum(1 for role, _ in records if role == "features")
    half = len(records) // 2

    def holder(name: str) -> str:
        return (leases.holder(name) or "").split("/")[1] if leases.holder(name) else ""

    send(s, records[:half])
    logs = [tmp_path / f"shard{i}.log" for i in range(3)]

    def start(i: int) -> subprocess.Popen[bytes]:
        env = {**LEASE, "RIVULET_LEARNER_SHARD": f"{i}/3"}
        return learner_process(s, "tests.support.model_defs:TRIO", logs[i], **env)

    procs = [start(i) for i in range(3)]
    try:
        every = list(zip(procs, logs, strict=True))
        # shard i/3 prefers t{i+1} (tests.support.model_defs.TRIO): each learns its own, and only its own
        wait("each shard's spec", lambda: all(holder(f"t{i + 1}") == str(p.pid) for i, p in enumerate(procs)))
        wait("first versions", lambda: all(learned(reg, n, 1) for n in NAMES), *every)

        os.killpg(procs[1].pid, signal.SIGKILL)  # shard 1 dies: one of the others takes t2 as a standby
        procs[1].wait()
        send(s, records[half:])
        alive = [every[0], every[2]]
        wait("t2 taken over", lambda: holder("t2") in (str(procs[0].pid), str(procs[2].pid)), *alive)
        wait("t2 learned by the standby", lambda: learned(reg, "t2", features), *alive)
        standby = holder("t2")

        procs[1] = start(1)  # back: it wants t2; the standby checkpoints it and gives it back
        every = list(zip(procs, logs, strict=True))
        wait("t2 given back", lambda: holder("t2") == str(procs[1].pid), *every)
        assert standby != str(procs[1].pid)
        assert holder("t1") == str(procs[0].pid) and holder("t3") == str(procs[2].pid)
        for i in range(3):
            stop(procs[i], logs[i])
    finally:
        for p in procs:
            kill(p)

    for name in NAMES:
        one_lineage(reg, name)
    assert_equal_to_clean(s, reg, features)


def test_a_lost_spec_leaves_the_learners_memory_and_comes_back_restored(topics: Settings) -> None:
    """In one process, to see its memory: t1's lease is taken by another holder (who raises its fence and
    writes nothing); the learner drops t1 (its state freed, records no longer routed to it) and goes on with
    t2 and t3; once the lease is free again it takes t1 back from the registry."""
    s = topics.model_copy(update={"learner_lease_ms": 600})
    reg = registry(s)
    _, records = delayed_stream(N, DELAY, function=3, seed=13)
    features = sum(1 for role, _ in records if role == "features")
    third = len(records) // 3
    send(s, records[:third])
    worker = LearnerWorker(s, TRIO, registry=registry(s))
    runner = threading.Thread(target=lambda: worker.run(install_signals=False))
    runner.start()
    try:
        until("every spec learning", lambda: all(learned(reg, n, 1) for n in NAMES), runner)
        before = {n: versions(reg, n)[-1].version for n in NAMES}
        thief = RedisLeases(redis_client(s), s.redis_prefix, 60_000, owner="thief")
        while (epoch := thief.acquire("t1")) is None:  # between two of the learner's renewals
            redis_client(s).delete(f"{s.redis_prefix}model:{{t1}}:lease")
        registry(s).hold("t1", epoch)  # another learner's: t1's fence raised to its epoch
        until("t1 dropped", lambda: set(worker.core.models) == {"t2", "t3"}, runner)
        send(s, records[third : 2 * third])
        until(
            "t2, t3 go on",
            lambda: all(versions(reg, n)[-1].version > before[n] for n in ("t2", "t3")),
            runner,
        )
        assert set(worker.core.models) == {"t2", "t3"}  # t1 is not computed (nor written: see below)
        assert all(v.header["epoch"] < epoch for v in versions(reg, "t1"))  # nothing written since

        thief.release("t1")  # free again: t1 is the learner's own, taken back at its next turn
        send(s, records[2 * third :])
        until("t1 back", lambda: "t1" in worker.core.models, runner)
        until("everything learned", lambda: all(learned(reg, n, features) for n in NAMES), runner)
    finally:
        worker.stop()
        runner.join(60)
    assert not runner.is_alive()
    epochs = one_lineage(reg, "t1")
    assert epochs[0] == 1 and epochs[-1] > epoch and epoch not in epochs  # the thief wrote nothing
    assert_equal_to_clean(s, reg, features)


def until(what: str, ok: Callable[[], bool], runner: threading.Thread) -> None:
    deadline = time.monotonic() + 120
    while not ok():
        assert runner.is_alive(), f"the learner stopped while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
