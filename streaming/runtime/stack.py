"""``rivulet up`` / ``rivulet down``: the pipeline on real Kafka and Redis as separate, supervised processes.

The feature worker, the learner and the API each run as their own process under supervisord (the
``supervisor`` package): restarted when they die, stopped with SIGTERM (each finishes its batch and, for the
learner, checkpoints), each logging to ``<data dir>/logs/<name>.log``. The supervisor's files live in
``<data dir>/stack/``; ``rivulet down`` asks it to stop everything and exit. If the supervisor is killed
instead, its programs run on without it until they write to their output (a pipe it read): ``rivulet up``
refuses to start beside them and ``rivulet down`` stops them. The stack speaks to supervisord
through its XML-RPC interface (on a unix socket, with supervisor's ``SupervisorTransport``) and finds and
checks processes with ``psutil``.

Snapshot keys: without ``RIVULET_SIGNING_KEY``, an Ed25519 key pair is generated on the first ``up`` and
kept in ``<data dir>/stack/signing-key`` (0600); only the learner's environment gets the private key, every
program gets the keyring (``RIVULET_VERIFY_KEYS``: the configured keys and the signer's), which is also kept
in ``<data dir>/stack/verify-keys`` for the CLI to find (:func:`kept_keys` reads them back, with the HMAC
secret an older ``rivulet up`` kept as ``<data dir>/stack/signing-secret``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from pydantic import TypeAdapter
from supervisor.xmlrpc import SupervisorTransport

from streaming.clients import signing_key
from streaming.errors import StreamingError
from streaming.learning.keys import generate, parse_keyring, parse_signing_key
from streaming.runtime.probes import kafka_address, process, redis_address, tcp_open
from streaming.settings import CommaList, Settings

__all__ = [
    "PROGRAMS",
    "KeptKeys",
    "Program",
    "Stack",
    "StackError",
    "kept_keys",
    "services_reachable",
    "tcp_open",
]

# name -> the rivulet subcommand it runs
PROGRAMS = {
    "features": ["features", "run", "--metrics-port", "{features_metrics_port}"],
    "learner": ["learn", "run", "--heartbeat", "{heartbeat}"],
    "api": ["serve"],
}

# how supervisord runs every program: restarted when it dies, SIGTERM to its process group on stop
PROGRAM_OPTIONS = [
    "autostart=true",
    "autorestart=true",
    "startsecs=3",
    "startretries=10",
    "stopsignal=TERM",
    "stopwaitsecs=30",
    "stopasgroup=true",
    "killasgroup=true",
    "redirect_stderr=true",
    "stdout_logfile_maxbytes=50MB",
    "stdout_logfile_backups=3",
]


class StackError(StreamingError, RuntimeError):
    """The stack cannot start or stop (services unreachable, supervisor failure)."""


@dataclass(frozen=True)
class Program:
    """One supervised program as supervisord's ``getProcessInfo`` reports it."""

    name: str
    state: str  # STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL, UNKNOWN
    pid: int  # 0 when it does not run
    start: int  # when it was last started (Unix seconds)
    description: str  # "pid 123, uptime 0:01:02", or why it stopped

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Program:
        """
        >>> Program.from_info({"name": "api", "statename": "RUNNING", "pid": 7, "start": 1,
        ...                    "description": "pid 7, uptime 0:00:01"}).state
        'RUNNING'
        """
        return cls(info["name"], info["statename"], int(info["pid"]), int(info["start"]), info["description"])


# the files of the stack's directory that hold keys
SIGNING_KEY, VERIFY_KEYS, LEGACY_SECRET = "signing-key", "verify-keys", "signing-secret"


@dataclass(frozen=True)
class KeptKeys:
    """The keys kept in the stack's directory; ``None`` (or empty) where there is no such file."""

    signing_key: str | None  # the private key ``rivulet up`` generated
    verify_keys: list[str]  # the keyring it handed its programs
    legacy_secret: str | None  # the HMAC secret of format-1 snapshots, kept by an older ``rivulet up``


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.is_file() else None


def kept_keys(settings: Settings) -> KeptKeys:
    """What ``rivulet up`` kept for ``settings``' data dir, for the commands run against its stack.

    >>> import tempfile
    >>> kept_keys(Settings(data_dir=tempfile.mkdtemp()))
    KeptKeys(signing_key=None, verify_keys=[], legacy_secret=None)
    """
    home = Stack(settings).home
    return KeptKeys(
        signing_key=_read(home / SIGNING_KEY),
        # the same comma list as RIVULET_VERIFY_KEYS, read by the settings' own parser
        verify_keys=TypeAdapter(CommaList).validate_python(_read(home / VERIFY_KEYS) or ""),
        legacy_secret=_read(home / LEGACY_SECRET),
    )


def services_reachable(settings: Settings) -> dict[str, bool]:
    return {
        "kafka": tcp_open(*kafka_address(settings.kafka_bootstrap)),
        "redis": tcp_open(*redis_address(settings.redis_url)),
    }


def _services_script() -> Path | None:
    """``scripts/services`` of the checkout Rivulet runs from, or of the current directory."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
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
            signer = signing_key(self.settings)
        else:
            path = self.home / SIGNING_KEY
            if not path.exists():
                self.home.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(generate().encoded)
            signer = parse_signing_key(path.read_text().strip(), str(path))
        ring = parse_keyring(self.settings.verify_keys).with_key(signer.public)
        verify = [k.encoded for k in ring]
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / VERIFY_KEYS).write_text(",".join(verify) + "\n")
        return signer.encoded, verify

    @property
    def socket(self) -> Path:
        return self.home / "supervisor.sock"

    def environment(self) -> tuple[dict[str, str], dict[str, str]]:
        """The environments of the programs and of the learner, which alone gets the signing key."""
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
        return env, {**env, "RIVULET_SIGNING_KEY": signing}

    def _supervisor_sections(self) -> list[str]:
        return [
            "[unix_http_server]",
            f"file={self.socket}",
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
            f"serverurl=unix://{self.socket}",
            "",
        ]

    def _program_section(self, name: str, env: dict[str, str]) -> list[str]:
        values = {
            "features_metrics_port": str(self.features_metrics_port),
            "heartbeat": str(self.home / "learner.alive"),
        }
        argv = [sys.executable, "-m", "streaming.cli", *(a.format(**values) for a in PROGRAMS[name])]
        command = " ".join(shlex.quote(a) for a in argv)  # supervisord splits it as a shell would
        environment = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(env.items()))
        return [
            f"[program:{name}]",
            f"command={command}",
            f"environment={environment}",
            *PROGRAM_OPTIONS,
            f"stdout_logfile={self.logs / (name + '.log')}",
            "",
        ]

    def write_conf(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        env, learner = self.environment()
        sections = self._supervisor_sections()
        for name in PROGRAMS:
            sections += self._program_section(name, learner if name == "learner" else env)
        # it holds the signing key (and any API keys): readable by its owner only
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(sections))

    def running(self) -> bool:
        """Is the supervisor of this stack alive? Its pidfile's process must exist and be a supervisord
        (a pid left by a crash can belong to another process by now)."""
        return process(self._pid(), f"-c {self.conf}") is not None  # this stack's supervisord, no other

    def _pid(self) -> int | None:
        path = self.home / "supervisord.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def call(self, method: str, *args: Any) -> Any:
        """``supervisor.<method>`` of supervisord's XML-RPC interface, on the stack's unix socket."""
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        with xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport) as proxy:
            return getattr(proxy.supervisor, method)(*args)

    def programs(self) -> dict[str, Program]:
        """Every program's state and pid, from supervisord; StackError when it does not answer."""
        try:
            infos = self.call("getAllProcessInfo")
        except (OSError, xmlrpc.client.Error) as exc:
            raise StackError(f"supervisor at {self.socket} does not answer: {exc}") from exc
        return {p.name: p for p in map(Program.from_info, infos)}

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
        """One line per program, as ``supervisorctl status`` prints it."""
        try:
            programs = self.programs()
        except StackError as exc:
            return str(exc)
        return "\n".join(f"{p.name:9s} {p.state:9s} {p.description}" for p in programs.values())

    def wait_running(self, timeout_s: float = 60.0) -> dict[str, str]:
        """Until every program is RUNNING (or the timeout); their states."""
        deadline = time.monotonic() + timeout_s
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(StackError):  # its socket is not there yet
                states = {name: p.state for name, p in self.programs().items()}
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
        try:
            self.call("shutdown")
        except (OSError, xmlrpc.client.Error):  # its socket is gone: SIGTERM shuts it down as well
            pid = self._pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.running():
            raise StackError(f"supervisor (pid {self._pid()}) did not stop within {timeout_s:.0f} s")
        return True

    def strays(self) -> list[int]:
        """Processes of this stack running without their supervisor, found by the stack's mark in their
        environment (zombies, and processes whose environment we may not read, are not)."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.pid != os.getpid() and proc.environ().get("RIVULET_STACK_HOME") == str(self.home):
                    found.append(proc.pid)
        return found

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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
