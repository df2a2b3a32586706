"""Helpers of the Redis Cluster chaos drill (tests/deploy/test_cluster_redis_chaos.py): Rivulet's processes on
the local cluster, who owns a slot, a replica's promotion, a steady producer and a steady API load.

Kept apart from tests/deploy/test_cluster.py so that the Kafka drills and this one share only the cluster
fixture."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from redis.crc import key_slot

from features.events import Event
from streaming.ingest.producer import Producer
from streaming.settings import Settings

__all__ = [
    "Answer",
    "ApiLoad",
    "SteadyProducer",
    "cluster_env",
    "role_of",
    "slot_owner",
    "wait_promoted",
]


def cluster_env(settings: Settings) -> dict[str, str]:
    """The environment that puts a Rivulet process on the cluster of ``settings`` (it replaces the test
    shell's single-node RIVULET_KAFKA_BOOTSTRAP and RIVULET_REDIS_URL)."""
    return {
        "RIVULET_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RIVULET_REPLICATION_FACTOR": str(settings.replication_factor),
        "RIVULET_MIN_INSYNC_REPLICAS": str(settings.min_insync_replicas),
        "RIVULET_REDIS_URL": settings.redis_url,
        "RIVULET_REDIS_CLUSTER": "true",
    }


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


class SteadyProducer(threading.Thread):
    """Sends ``events`` with the SDK's Producer (acks=all, idempotent), ``per_tick`` of them every ``tick_s``:
    a steady rate while the fault happens. ``sent`` counts the acknowledged ones; an error is kept in
    ``error`` (the test asserts there is none: a send that fails must reach the caller)."""

    def __init__(self, settings: Settings, events: Sequence[Event], per_tick: int, tick_s: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.events, self.per_tick, self.tick_s = settings, events, per_tick, tick_s
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Producer(self.settings) as sdk:
                start = time.monotonic()
                for i in range(0, len(self.events), self.per_tick):
                    chunk = self.events[i : i + self.per_tick]
                    assert sdk.send_many(chunk) == len(chunk)
                    self.sent += len(chunk)
                    # the schedule, not a sleep per chunk: a slow send does not lower the rate after it
                    time.sleep(max(0.0, start + (i // self.per_tick + 1) * self.tick_s - time.monotonic()))
        except BaseException as exc:
            self.error = exc


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
