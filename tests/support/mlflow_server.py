"""MLflow for the tracking tests: a SQLite store in a test's directory, and ``mlflow server`` over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streaming.settings import Settings


def free_port() -> int:
    """A port nothing listens on (bound and closed: nothing answers there until a server takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tracked(s: Settings, uri: str, artifacts: Path | None = None, **more: object) -> Settings:
    """``s`` logging to MLflow at ``uri``, retrying fast, waiting long enough at stop to log everything."""
    update: dict[str, object] = {
        "mlflow_tracking_uri": uri,
        "mlflow_artifact_location": artifacts.as_uri() if artifacts is not None else None,
        "mlflow_retry_s": 0.2,
        "mlflow_flush_s": 180.0,
        "features_module": "tests.support.feature_defs",  # its hash in each version's tags
        **more,
    }
    return s.model_copy(update=update)


def sqlite_uri(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'mlflow.db'}"


class MlflowServer:
    """``mlflow server`` (SQLite store, artifacts proxied into ``root``) on ``port``, in its own process
    group: stopped with everything it started."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        mlflow = Path(sys.executable).parent / "mlflow"
        cmd = [
            str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
        ]  # fmt: skip
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (the child's output, for a failure)
        # without MLflow's job runner (seven huey consumers, each a Python process importing MLflow, spawned
        # as the server starts: its start took 48 s instead of 21 at load 7); the tests log runs and models,
        # never a job
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.root / "server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mlflow server did not start: {tail}")
            time.sleep(0.25)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its uvicorn and job runner children too
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
        proc.wait()
