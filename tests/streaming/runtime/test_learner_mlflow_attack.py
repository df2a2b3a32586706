"""The learner against an MLflow that can never be used or never answers, on real Kafka and Redis: a
tracking URI MLflow refuses is given up at the first attempt (its versions counted as refused, not retried
forever); a server that accepts connections and never answers neither slows nor stops learning (the
records learned are those of a run without MLflow) and a stop waits ``RIVULET_MLFLOW_FLUSH_S`` for it, not
the request's timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streaming.settings import Settings
from tests.streaming.runtime.test_learner_mlflow import learn, publish, state_summary
from tests.support.learning import learner_process, registry
from tests.support.mlflow_server import tracked
from tests.support.model_defs import LR

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("what", ["file store", "unknown scheme"])
def test_a_uri_mlflow_refuses_is_given_up_and_the_models_are_unchanged(
    topics: Settings, tmp_path: Path, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory (a file store, which MLflow 3 refuses) and ``foo://`` (settings built without validation,
    as ``model_copy`` does): one failed attempt, every version written counted as refused once."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = str(tmp_path / "store") if what == "file store" else "foo://x"
    xs = publish(topics, 1_500, drift_at=10_000)
    plain = learn(topics, [LR], prefix=f"{topics.redis_prefix}plain:")
    s = tracked(topics, uri, mlflow_retry_s=0.01, mlflow_flush_s=0.5)
    worker = learn(s, [LR], prefix=f"{topics.redis_prefix}bad:")
    assert state_summary(worker.core.models["lr"], xs[:200]) == state_summary(
        plain.core.models["lr"], xs[:200]
    )
    written = len(registry(topics, f"{topics.redis_prefix}bad:").versions("lr"))
    stats = worker.mlflow_stats()
    assert stats is not None and written >= 5
    assert stats.refused == written and stats.errors == 1
    assert stats.pending == stats.missed == stats.logged == 0


class Tarpit:
    """A TCP server that accepts every connection, reads what it is sent and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.uri = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.accepted += 1
            self._conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        self._thread.join(5)


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    pit = Tarpit()
    try:
        yield pit
    finally:
        pit.close()


def test_a_server_that_never_answers_changes_nothing_of_the_learning(
    topics: Settings, tarpit: Tarpit
) -> None:
    """In process: the learner with MLflow at the tarpit (requests that would wait 10 minutes) learns every
    record the learner without MLflow learns, the same models, and its run ends (the stop waits the flush
    time, half a second, not the request): nothing was logged, every version waits."""
    xs = publish(topics, 1_500, drift_at=10_000)
    plain = learn(topics, [LR], prefix=f"{topics.redis_prefix}plain:")
    s = tracked(topics, tarpit.uri, mlflow_flush_s=0.5, mlflow_timeout_s=600.0)
    worker = learn(s, [LR], prefix=f"{topics.redis_prefix}pit:")
    assert worker.core.models["lr"].n_learned == plain.core.models["lr"].n_learned == 1_500
    assert state_summary(worker.core.models["lr"], xs[:200]) == state_summary(
        plain.core.models["lr"], xs[:200]
    )
    written = len(registry(topics, f"{topics.redis_prefix}pit:").versions("lr"))
    stats = worker.mlflow_stats()
    assert stats is not None and tarpit.accepted >= 1  # it did try
    assert stats.logged == 0 and stats.pending == stats.missed == written >= 5  # queued ones too


def test_a_learner_stopped_while_mlflow_never_answers_exits(
    topics: Settings, tarpit: Tarpit, tmp_path: Path
) -> None:
    """``rivulet learn run`` with MLflow at the tarpit, a request timeout of 10 minutes and
    ``RIVULET_MLFLOW_FLUSH_S=1``: it learns every record, checkpoints, and on SIGTERM exits with 0 (the
    wait is bounded, a generous 90 s, against the 600 s a request would hold it)."""
    publish(topics, 1_500, drift_at=10_000)
    log = tmp_path / "learn.log"
    env = {
        "RIVULET_MLFLOW_TRACKING_URI": tarpit.uri,
        "RIVULET_MLFLOW_FLUSH_S": "1",
        "RIVULET_MLFLOW_TIMEOUT_S": "600",
        "RIVULET_MLFLOW_RETRY_S": "0.1",
    }
    proc = learner_process(topics, "tests.support.model_defs", log, **env)
    reg = registry(topics)
    try:
        deadline = time.monotonic() + 180
        while True:
            versions = reg.versions("lr")
            if versions and max(v.header.get("n_learned", 0) for v in versions) >= 1_500:
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the learner made no progress"
            time.sleep(0.05)
        while tarpit.accepted == 0:  # its MLflow thread (importing MLflow first) is waiting on the tarpit
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(90) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text
    assert "versions not logged at stop" in text  # said, with the counts
