"""Child processes for tests: a stand-in for pid checks (a process whose command line says what the test
needs), and a child pytest run from the project's root."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

__all__ = ["decoy", "module_child", "pytest_child"]

ROOT = Path(__file__).resolve().parents[2]


def decoy(title: str, deadline_s: float = 10.0) -> subprocess.Popen[bytes]:
    """A ``sleep 60`` whose command line reads ``title`` (``exec -a``), returned once it does."""
    proc = subprocess.Popen(["bash", "-c", f"exec -a '{title}' sleep 60"])
    deadline = time.monotonic() + deadline_s
    while title not in " ".join(psutil.Process(proc.pid).cmdline()):
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the decoy never took the title {title!r}")
        time.sleep(0.02)
    return proc


def module_child(
    module: str, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` from the project's root with ``env``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pytest_child(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A child pytest (:func:`module_child`), two minutes at most."""
    return module_child("pytest", *args, env=env)
