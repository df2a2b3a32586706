"""What the local services of ``scripts/services`` share: messages, waiting with a deadline, and a server
process started in its own session whose pid is kept in a file and checked with ``psutil`` before any
signal (a pid left by a crash can belong to another program by now)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar

from streaming.runtime.probes import process, tcp_open  # the virtualenv has Rivulet (scripts/bootstrap)


def say(msg: str) -> None:
    print(f"services: {msg}", flush=True)


def wait_for(
    check: Callable[[], bool],
    what: str,
    timeout_s: float,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
) -> None:
    """Until ``check()`` holds; SystemExit when ``proc`` exits first or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise SystemExit(f"services: {what} exited with code {proc.returncode}\n{tail}")
        time.sleep(0.3)
    raise SystemExit(f"services: {what} not ready after {timeout_s:.0f}s" + (f"; see {log}" if log else ""))


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def require(program: str, package: str) -> str:
    """The path of ``program`` on PATH; SystemExit naming the Debian package when it is missing
    (``scripts/install-deps`` installs them all)."""
    exe = shutil.which(program)
    if exe is None:
        raise SystemExit(
            f"services: {program} not found; install the Debian package '{package}' (scripts/install-deps)"
        )
    return exe


@dataclass
class ServerProcess:
    """A server on loopback that ``scripts/services`` starts and stops by the pid it recorded.

    Subclasses name it, its pid file in ``home``, and what its command line contains (``marker``; by
    default ``home``, which tells one private server from another of the same program).
    """

    home: Path
    port: int
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    name: ClassVar[str] = "server"
    pidname: ClassVar[str] = "server.pid"
    program: ClassVar[str | None] = None  # a command line that does not show home shows this

    @property
    def pidfile(self) -> Path:
        return self.home / self.pidname

    @property
    def marker(self) -> str:
        return self.program or str(self.home)

    @property
    def pid(self) -> int | None:
        return read_pid(self.pidfile)

    def running(self) -> bool:
        return process(self.pid, self.marker) is not None

    def ensure_ports_free(self, *ports: int) -> None:
        taken = [p for p in (self.port, *ports) if tcp_open("127.0.0.1", p)]
        if taken:
            raise SystemExit(f"services: port {taken[0]} is taken by another process")

    def spawn(self, argv: list[str], out: int | IO[bytes], cwd: Path | None = None) -> subprocess.Popen:
        """Start ``argv`` in its own session (a Ctrl-C of the caller does not reach it) and record its pid."""
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
        )
        self._proc = proc
        self.pidfile.write_text(str(proc.pid))
        return proc

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; nothing when the recorded pid is not ours any more."""
        pid = self.pid
        proc = process(pid, self.marker)
        if proc is not None:
            proc.terminate()
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and self.running():
                time.sleep(0.2)
            if self.running():
                proc.kill()
            say(f"stopped {self.name} (pid {pid})")
        self._reap()

    def kill(self) -> None:
        """Hard stop (SIGKILL), as a crash would; returns once the process is gone."""
        pid = self.pid
        if pid is not None and self.running():
            os.kill(pid, signal.SIGKILL)
            if self._proc is None or self._proc.pid != pid:
                deadline = time.monotonic() + 30
                while self.running() and time.monotonic() < deadline:
                    time.sleep(0.05)
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        self.pidfile.unlink(missing_ok=True)
