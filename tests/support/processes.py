"""Stand-in processes for tests of pid checks: a process whose command line says what the test needs."""

from __future__ import annotations

import subprocess
import time

import psutil

__all__ = ["decoy"]


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
