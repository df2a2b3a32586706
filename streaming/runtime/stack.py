"""``rivulet up`` / ``rivulet down``: the pipeline on real Kafka and Redis as separate, supervised processes.

The feature worker, the learner and the API each run as their own process under supervisord (the
``supervisor`` package): restarted when they die, stopped with SIGTERM (each finishes its batch and, for the
learner, checkpoints), each logging to ``<data dir>/logs/<name>.log``. The supervisor's files live in
``<data dir>/stack/``; ``rivulet down`` asks it to stop everything and exit.

Snapshot keys: without ``RIVULET_SIGNING_KEY``, an Ed25519 key pair is generated on the first ``up`` and
kept in ``<data dir>/stack/signing-key`` (0600); only the learner's environment gets the private key, every
program gets the keyring (``RIVULET_VERIFY_KEYS``: the configured keys and the signer's), which is also kept
in ``<data dir>/stack/verify-keys`` for the CLI to find.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from streaming.errors import StreamingError
from streaming.learning.keys import generate, parse_keyring, parse_signing_key
from streaming.settings import Settings

__all__ = ["PROGRAMS", "Stack", "StackError", "services_reachable", "tcp_open"]

# name -> the rivulet subcommand it runs
PROGRAMS = {
    "features": ["features", "run", "--metrics-port", "{features_metrics_port}"],
    "learner": ["learn", "run", "--heartbeat", "{heartbeat}"],
    "api": ["serve"],
}


class StackError(StreamingError, RuntimeError):
    """The stack cannot start or stop (services unreachable, supervisor failure)."""


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def services_reachable(settings: Settings) -> dict[str, bool]:
    first = settings.kafka_bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not port.isdigit():  # "localhost": Kafka's default port
        host, port = first, "9092"
    url = urlparse(settings.redis_url)
    return {
        "kafka": tcp_open(host or "127.0.0.1", int(port)),
        "redis": tcp_open(url.hostname or "127.0.0.1", url.port or 6379),
    }


def _services_script() -> Path | None:
    """``scripts/services`` of the checkout Rivulet runs from, or of the current directory."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        script = root / "scripts" / "services"
        if script.is_file():
            return script
    return None


@dataclass
class Stack:
    settings: Settings
    features_metrics_port: int = 9101

    @property
    def home(self) -> Path:
        return Path(self.settings.data_dir).resolve() / "stack"

    @property
    def logs(self) -> Path:
        return Path(self.settings.data_dir).resolve() / "logs"

    @property
    def conf(self) -> Path:
        return self.home / "supervisord.conf"

    # ------------------------------------------------------------------ up

    def ensure_services(self) -> str:
        """Kafka and Redis reachable, starting them with ``scripts/services up`` when they are not."""
        up = services_reachable(self.settings)
        if all(up.values()):
            return "Kafka and Redis reachable"
        script = _services_script()
        missing = ", ".join(k for k, ok in up.items() if not ok)
        if script is None:
            raise StackError(
                f"{missing} not reachable at {self.settings.kafka_bootstrap} / {self.settings.redis_url}; "
                "start them (docker compose up -d kafka redis) or set RIVULET_KAFKA_BOOTSTRAP / "
                "RIVULET_REDIS_URL"
            )
        done = subprocess.run([str(script), "up"], capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"{script} up failed: {done.stderr.strip()[-2000:]}")
        return f"started {missing} with {script}"

    def keys(self) -> tuple[str, list[str]]:
        """The learner's signing key (configured, or generated once and kept, 0600, in the stack's
        directory as ``signing-key``) and the readers' keyring (configured verify keys plus the signer's
        public key), which is also kept as ``verify-keys`` for the CLI to find."""
        if self.settings.signing_key is not None:
            signer = parse_signing_key(self.settings.signing_key.get_secret_value())
        else:
            path = self.home / "signing-key"
            if not path.exists():
                self.home.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(generate().encoded)
            signer = parse_signing_key(path.read_text().strip(), str(path))
        ring = parse_keyring(self.settings.verify_keys).with_key(signer.public)
        verify = [k.encoded for k in ring]
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "verify-keys").write_text(",".join(verify) + "\n")
        return signer.encoded, verify

    def write_conf(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        signing, verify = self.keys()
        env = {
            k: v
            for k, v in os.environ.items()
            if k.startswith("RIVULET_") and k not in ("RIVULET_SIGNING_KEY", "RIVULET_SIGNING_SECRET")
        }
        env["RIVULET_VERIFY_KEYS"] = ",".join(verify)
        env["RIVULET_DATA_DIR"] = str(Path(self.settings.data_dir).resolve())
        env["PYTHONUNBUFFERED"] = "1"
        env["RIVULET_STACK_HOME"] = str(self.home)  # how rivulet down finds them if the supervisor died
        values = {
            "features_metrics_port": str(self.features_metrics_port),
            "heartbeat": str(self.home / "learner.alive"),
        }
        sections = [
            "[unix_http_server]",
            f"file={self.home / 'supervisor.sock'}",
            "chmod=0700",
            "",
            "[supervisord]",
            f"logfile={self.logs / 'supervisord.log'}",
            f"pidfile={self.home / 'supervisord.pid'}",
            f"directory={Path.cwd()}",
            "loglevel=warn",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{self.home / 'supervisor.sock'}",
            "",
        ]
        for name, args in PROGRAMS.items():
            argv = [sys.executable, "-m", "streaming.cli", *(a.format(**values) for a in args)]
            command = " ".join(shlex.quote(a) for a in argv)  # supervisord splits it as a shell would
            own = {**env, "RIVULET_SIGNING_KEY": signing} if name == "learner" else env  # it alone signs
            environment = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(own.items()))
            sections += [
                f"[program:{name}]",
                f"command={command}",
                f"environment={environment}",
                "autostart=true",
                "autorestart=true",
                "startsecs=3",
                "startretries=10",
                "stopsignal=TERM",
                "stopwaitsecs=30",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                f"stdout_logfile={self.logs / (name + '.log')}",
                "stdout_logfile_maxbytes=50MB",
                "stdout_logfile_backups=3",
                "",
            ]
        # it holds the signing key (and any API keys): readable by its owner only
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(sections))

    def running(self) -> bool:
        """Is the supervisor of this stack alive? Its pidfile's process must exist and be a supervisord
        (a pid left by a crash can belong to another process by now)."""
        pid = self._pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False  # someone else's process: not ours
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists():
            try:
                return b"supervisord" in cmdline.read_bytes()
            except OSError:
                return False
        return True

    def _pid(self) -> int | None:
        path = self.home / "supervisord.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def up(self) -> None:
        if self.running():
            raise StackError(f"already running (supervisor pid {self._pid()}); rivulet down first")
        if self.strays():
            raise StackError(
                "processes of an earlier rivulet up run without their supervisor; rivulet down first"
            )
        s = self.settings
        for what, host, port in (
            ("the API", s.serve_host, s.serve_port),
            ("the feature worker's metrics", "127.0.0.1", self.features_metrics_port),
        ):
            if tcp_open("127.0.0.1" if host in ("0.0.0.0", "::") else host, port, timeout=0.5):
                raise StackError(
                    f"port {port} of {what} is taken (another Rivulet stack, or left running?); free it or "
                    + ("set RIVULET_SERVE_PORT" if what == "the API" else "give --features-metrics-port")
                )
        from streaming.ingest.topics import TopicAdmin

        self.write_conf()
        with TopicAdmin(self.settings) as admin:
            admin.create()
        done = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise StackError(f"supervisord failed to start: {(done.stderr or done.stdout).strip()[-2000:]}")

    def status(self) -> str:
        done = self._ctl("status")
        return done.stdout.strip()

    def wait_running(self, timeout_s: float = 60.0) -> dict[str, str]:
        """Until every program is RUNNING (or the timeout); their states."""
        deadline = time.monotonic() + timeout_s
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {}
            for line in self.status().splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    states[parts[0]] = parts[1]
            if states and all(s == "RUNNING" for s in states.values()) and set(states) == set(PROGRAMS):
                return states
            if any(s == "FATAL" for s in states.values()):  # gave up restarting it: no use waiting
                return states
            time.sleep(0.5)
        return states

    # ------------------------------------------------------------------ down

    def down(self, timeout_s: float = 60.0) -> bool:
        """Stop every program and the supervisor; False if nothing was running. Programs whose
        supervisor died (killed, not shut down) are found by the stack's mark in their environment."""
        if not self.running():
            return self._stop_strays(timeout_s)
        done = self._ctl("shutdown")
        pid = self._pid()
        if done.returncode != 0 and pid is not None:  # its socket is gone: SIGTERM shuts it down as well
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.running():
            raise StackError(f"supervisor (pid {self._pid()}) did not stop within {timeout_s:.0f} s")
        return True

    def strays(self) -> list[int]:
        """Processes of this stack running without their supervisor (Linux: read from /proc)."""
        mark = f"RIVULET_STACK_HOME={self.home}".encode()
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if mark in environ.read_bytes().split(b"\0"):
                    found.append(int(environ.parent.name))
            except OSError:
                continue  # gone, or not ours to read
        return [p for p in found if p != os.getpid()]

    def _stop_strays(self, timeout_s: float) -> bool:
        pids = self.strays()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # each finishes its batch; the learner checkpoints
        deadline = time.monotonic() + timeout_s
        while self.strays() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self.strays():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return bool(pids)

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
        )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
