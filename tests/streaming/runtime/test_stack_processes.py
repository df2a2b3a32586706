"""The stack's process checks without services: which pid is still our process (psutil, not a reused pid or
a zombie), which processes are the stack's strays (its mark in their environment), how ``down`` stops them,
and where ``rivulet up`` finds ``scripts/services``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streaming.runtime import stack as stack_module
from streaming.runtime.probes import process
from streaming.runtime.stack import KeptKeys, Program, Stack, kept_keys
from streaming.settings import Settings
from tests.support.workers import ROOT

pytestmark = pytest.mark.unit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by a test; killed and reaped afterwards whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def sleeper(spawn: list[subprocess.Popen[bytes]], **env: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(SLEEPER, env={**os.environ, **env})
    spawn.append(proc)
    return proc


def test_a_pid_is_ours_while_it_runs_the_program_we_started(spawn: list[subprocess.Popen[bytes]]) -> None:
    proc = sleeper(spawn)
    assert process(proc.pid, "time.sleep(120)") is not None
    assert process(proc.pid, "supervisord") is None  # the pid of another program: a reused pid
    proc.send_signal(signal.SIGKILL)
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # until it is dead, leaving it unreaped
    # a zombie still has its pid (os.kill(pid, 0) succeeds), and is not running
    os.kill(proc.pid, 0)
    assert process(proc.pid, "") is None
    proc.wait(timeout=30)
    assert process(proc.pid, "") is None


def test_a_stack_is_running_only_when_its_pidfile_names_a_live_supervisord(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    stack = Stack(Settings(data_dir=str(tmp_path)))
    stack.home.mkdir(parents=True)
    assert not stack.running()  # no pidfile
    (stack.home / "supervisord.pid").write_text(f"{sleeper(spawn).pid}\n")
    assert not stack.running()  # a live process, but not a supervisord
    other = subprocess.Popen([*SLEEPER, "supervisord"])  # a supervisord, but not of this stack
    spawn.append(other)
    (stack.home / "supervisord.pid").write_text(f"{other.pid}\n")
    assert not stack.running()
    fake = subprocess.Popen([*SLEEPER, "supervisord", "-c", str(stack.conf)])  # this stack's
    spawn.append(fake)
    (stack.home / "supervisord.pid").write_text(f"{fake.pid}\n")
    assert stack.running()
    fake.kill()
    fake.wait(timeout=30)
    assert not stack.running()


def test_down_without_a_supervisor_stops_exactly_the_processes_marked_with_this_stack(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    stack = Stack(Settings(data_dir=str(tmp_path / "mine")))
    other = Stack(Settings(data_dir=str(tmp_path / "other")))
    ours = [sleeper(spawn, RIVULET_STACK_HOME=str(stack.home)) for _ in range(2)]
    theirs = sleeper(spawn, RIVULET_STACK_HOME=str(other.home))
    unmarked = sleeper(spawn)
    assert sorted(stack.strays()) == sorted(p.pid for p in ours)
    assert stack.down(timeout_s=30) is True
    assert [p.wait(timeout=30) for p in ours] == [-signal.SIGTERM, -signal.SIGTERM]
    assert theirs.poll() is None and unmarked.poll() is None
    assert stack.strays() == [] and other.strays() == [theirs.pid]
    assert stack.down(timeout_s=30) is False  # nothing left: nothing was running


def test_up_finds_scripts_services_of_its_checkout_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the move to streaming/runtime/ the checkout is two levels up (it looked in streaming/)."""
    monkeypatch.chdir(tmp_path)
    assert stack_module._services_script() == ROOT / "scripts" / "services"


def test_a_program_reads_supervisors_process_info() -> None:
    description = "Exited too quickly (process log may have details)"
    info: dict[str, object] = {
        "name": "learner",
        "group": "learner",
        "statename": "BACKOFF",
        "state": 30,
        "pid": 0,
        "start": 1_700_000_000,
        "stop": 0,
        "description": description,
        "exitstatus": 1,
    }
    assert Program.from_info(info) == Program("learner", "BACKOFF", 0, 1_700_000_000, description)


def test_the_keys_rivulet_up_keeps_are_read_back_as_it_wrote_them(tmp_path: Path) -> None:
    """``kept_keys`` is the one reader of the stack's key files; the kept keyring is the comma list
    RIVULET_VERIFY_KEYS would be (spaces and empty entries dropped), and the data dir may be relative."""
    settings = Settings(data_dir=str(tmp_path), signing_key=None, verify_keys=[])
    assert kept_keys(settings) == KeptKeys(signing_key=None, verify_keys=[], legacy_secret=None)
    signer, ring = Stack(settings).keys()
    kept = kept_keys(Settings(data_dir=os.path.relpath(tmp_path)))
    assert (kept.signing_key, kept.verify_keys, kept.legacy_secret) == (signer, ring, None)
    assert len(ring) == 1
    (tmp_path / "stack" / "verify-keys").write_text(f" {ring[0]} ,, b ,\n")
    (tmp_path / "stack" / "signing-secret").write_text("old-secret\n")
    assert kept_keys(settings) == KeptKeys(signer, [ring[0], "b"], "old-secret")
    assert Settings(verify_keys=f" {ring[0]} ,, b ,").verify_keys == [ring[0], "b"]  # the same parser
