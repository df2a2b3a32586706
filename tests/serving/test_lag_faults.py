"""The API's lag measurement (``serving.lag``) against a broken deployment, on real Kafka and Redis, the
API a real ``rivulet serve`` process: Kafka that accepts connections and never answers when the API starts
(requests and ``/metrics`` still answered, the lag not known), then Kafka back (the measurement recovers
with no restart), and SIGTERM ending the process while a measurement waits on a Kafka that never answers.

The gate in front of Kafka is a real socket: first a listener that never answers, then a forwarder to the
real broker (whose metadata then points the clients at the broker itself)."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streaming.settings import Settings
from tests.support.api_env import free_port
from tests.support.learning import learning_topics, registry
from tests.support.workers import rivulet_process

pytestmark = pytest.mark.integration


class Gate:
    """A TCP port in front of Kafka: ``silent`` (connections accepted, never answered) until
    :meth:`open`, then each new connection forwarded to ``upstream``."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.forwarding = False
        self.held: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def open(self) -> None:
        self.forwarding = True
        for conn in self.held:  # the silent ones are cut: their clients connect again, through the gate
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        self.open()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if not self.forwarding:
                self.held.append(conn)
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                conn.close()
                continue
            up.settimeout(None)
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def topics(settings: Settings, kafka_up: str, redis_client: Any) -> Iterator[Settings]:
    with learning_topics(settings) as s:
        yield s


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, resp.read().decode()


def _until(check: Any, what: str, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            if got := check():
                return got
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _known(text: str) -> dict[str, float]:
    return {m[0]: float(m[1]) for m in re.findall(r'rivulet_stage_lag_known\{stage="(\w+)"\} (\S+)', text)}


def _metrics_if(base: str, wanted: Any) -> str | None:
    text = _get(f"{base}/metrics")[1]
    return text if wanted(_known(text)) else None


def _api_behind(
    s: Settings, gate: Gate, port: int, log: Path, *, timeout_s: float
) -> subprocess.Popen[bytes]:
    """``rivulet serve`` on ``port`` whose Kafka is ``gate``, measuring lag every 0.5 s, each Kafka call
    bounded by ``timeout_s``."""
    return rivulet_process(
        s,
        ["serve", "--port", str(port)],
        log,
        RIVULET_KAFKA_BOOTSTRAP=f"127.0.0.1:{gate.port}",
        RIVULET_VERIFY_KEYS=",".join(s.verify_keys),
        RIVULET_FEATURES_MODULE="tests.support.feature_defs",
        RIVULET_SERVE_LAG_S="0.5",
        RIVULET_SERVE_LAG_TIMEOUT_S=f"{timeout_s:g}",
    )


def test_kafka_silent_at_start_then_back_and_sigterm_while_a_measurement_waits(
    topics: Settings, tmp_path: Path
) -> None:
    s = topics
    registry(s).save("lr", {"state": 1}, {"offsets": {s.topics.features: {"0": 0}}, "spec": "lr"})
    gate = Gate(s.kafka_bootstrap)
    port = free_port()
    api = _api_behind(s, gate, port, tmp_path / "api.log", timeout_s=2)
    base = f"http://127.0.0.1:{port}"
    try:
        # Kafka silent: the API starts and answers; the lag is not known (no lag series, never a 0)
        _until(lambda: _get(f"{base}/healthz")[0] == 200, "the API never answered with Kafka silent")
        text = _until(lambda: _metrics_if(base, lambda k: bool(k)), "no lag reported")
        assert _known(text) == {"features": 0.0, "learner": 0.0}
        assert "rivulet_stage_lag_records{" not in text
        assert _get(f"{base}/v1/models")[0] == 200

        # Kafka back: measured again, with no restart
        gate.open()
        text = _until(
            lambda: _metrics_if(base, lambda k: k == {"features": 1.0, "learner": 1.0}),
            "the lag measurement never recovered once Kafka answered",
        )
        series = f'partition="0",stage="learner",topic="{s.topics.features}"'
        assert f"rivulet_stage_lag_records{{{series}}}" in text
        assert api.poll() is None
    finally:
        gate.close()

    # SIGTERM while a measurement waits on a Kafka that never answers: the process ends
    silent = Gate(s.kafka_bootstrap)
    api2_port = free_port()
    api2 = _api_behind(s, silent, api2_port, tmp_path / "api2.log", timeout_s=30)
    try:
        api.send_signal(signal.SIGTERM)
        assert api.wait(timeout=60) is not None
        _until(lambda: _get(f"http://127.0.0.1:{api2_port}/healthz")[0] == 200, "the API never answered")
        _until(lambda: silent.held, "the measurement never connected")
        api2.send_signal(signal.SIGTERM)
        try:
            code = api2.wait(timeout=20)  # a measurement's Kafka call may take 30 s: not waited for
        except Exception:
            code = None
        assert code is not None, "SIGTERM did not end the API while a lag measurement waited on Kafka"
    finally:
        silent.close()
        for proc in (api, api2):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
