"""Helpers of the Redis Cluster chaos drill (tests/deploy/test_cluster_redis_chaos.py): Rivulet's processes on
the local cluster, who owns a slot, a replica's promotion and a steady API load (the steady producer is
``LoadProducer`` in tests/support/chaos.py, the cluster environment ``cluster_env`` in
tests/support/cluster.py).

Kept apart from tests/deploy/test_cluster.py so that the Kafka drills and this one share only the cluster
fixture."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from redis.crc import key_slot

__all__ = [
    "Answer",
    "ApiLoad",
    "role_of",
    "slot_owner",
    "wait_promoted",
]


def _node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0, socket_connect_timeout=2.0)


def role_of(port: int) -> str:
    """``master`` or ``slave``, as the node at ``port`` says."""
    client = _node(port)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()


def slot_owner(any_port: int, key: str) -> tuple[int, int]:
    """(primary port, replica port) of the slot of ``key``, as the node at ``any_port`` sees the cluster."""
    slot = key_slot(key.encode())
    client = _node(any_port)
    try:
        for row in client.cluster("SLOTS"):
            if int(row[0]) <= slot <= int(row[1]):
                (replica,) = row[3:]  # the local cluster: one replica per primary
                return int(row[2][1]), int(replica[1])
    finally:
        client.close()
    raise AssertionError(f"no node serves slot {slot}")


def wait_promoted(port: int, timeout_s: float = 60.0) -> float:
    """Until the node at ``port`` is a primary; how long that took."""
    t0 = time.monotonic()
    while True:
        with contextlib.suppress(redis.RedisError):
            if role_of(port) == "master":
                return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout_s, f"node {port} was not promoted in {timeout_s} s"
        time.sleep(0.1)


@dataclass
class Answer:
    """One API call of the load: when it was sent and answered, its status and JSON body."""

    sent: float
    answered: float
    status: int
    body: Any


@dataclass
class ApiLoad:
    """Threads scoring ``entities`` against ``model`` without pause: one by one (``/predict``: one Redis
    command) and all at once (``/predict/batch``: one pipeline), every answer kept."""

    url: str
    key: str
    model: str
    entities: list[str]
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _loop(self, batch: bool) -> None:
        with httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=30) as c:
            i = 0
            while not self._stop.is_set():
                sent = time.monotonic()
                if batch:
                    r = c.post(
                        f"/v1/models/{self.model}/predict/batch",
                        json={"items": [{"entity": e} for e in self.entities]},
                    )
                else:
                    r = c.post(f"/v1/models/{self.model}/predict", json={"entity": self.entities[i]})
                    i = (i + 1) % len(self.entities)
                try:
                    body = r.json()
                except ValueError:
                    body = r.text
                self.answers.append(Answer(sent, time.monotonic(), r.status_code, body))
                time.sleep(0.02)

    def start(self) -> None:
        for batch in (False, True):
            t = threading.Thread(target=self._loop, args=(batch,), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
