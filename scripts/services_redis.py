"""The local Redis of ``scripts/services``: a ``redis-server`` from PATH on loopback, without persistence,
and a one-node Redis Cluster (``cluster-enabled yes``, every slot assigned to the node) for the tests that
prove an entity's keys share one slot."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from services_common import ServerProcess, require, wait_for

from streaming.runtime.probes import redis_address, tcp_open


def _probe(url: str, default_port: int, check: Callable[[Any], bool]) -> bool:
    """``check(client)`` on a short-lived client of ``url``; False when the port is closed or it fails."""
    if not tcp_open(*redis_address(url, default_port)):
        return False
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return check(client)
        finally:
            client.close()
    except Exception:
        return False


def redis_ready(url: str) -> bool:
    return _probe(url, 6379, lambda client: bool(client.ping()))


def redis_cluster_ready(url: str) -> bool:
    """True when a cluster node answers and reports ``cluster_state:ok`` (every slot served)."""
    return _probe(url, 7001, lambda client: client.cluster("INFO").get("cluster_state") == "ok")


@dataclass
class RedisNode(ServerProcess):
    """A ``redis-server`` on loopback, in its own directory, without persistence."""

    port: int = 6379

    name = "redis"
    pidname = "redis.pid"

    @property
    def marker(self) -> str:
        """Its process title, "redis-server 127.0.0.1:<port>": any redis-server would match a bare name."""
        return f"redis-server 127.0.0.1:{self.port}"

    database: ClassVar[str] = "/0"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self.database}"

    @property
    def log(self) -> Path:
        return self.home / "redis.log"

    def command(self, exe: str) -> list[str]:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.home),
            **self.options(),
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "logfile": str(self.log),
            "protected-mode": "yes",
        }
        return [exe, *(part for key, value in options.items() for part in (f"--{key}", value))]

    def options(self) -> dict[str, str]:
        """What this kind of node adds to the command line."""
        return {}

    def start(self, timeout_s: float = 20.0) -> None:
        if not self.running():
            exe = require("redis-server", "redis-server")
            self.ensure_ports_free()
            self.home.mkdir(parents=True, exist_ok=True)
            proc = self.spawn(self.command(exe), subprocess.DEVNULL)
            wait_for(lambda: redis_ready(self.url), self.name, timeout_s, proc, self.log)
        self.ready(timeout_s)

    def ready(self, timeout_s: float) -> None:
        wait_for(lambda: redis_ready(self.url), self.name, timeout_s)


@dataclass
class RedisClusterNode(RedisNode):
    """A one-node Redis Cluster: ``cluster-enabled yes``, all 16384 slots assigned to the node."""

    port: int = 7001

    name = "redis cluster"
    pidname = "redis-cluster.pid"
    database = ""  # a cluster has database 0 only

    def options(self) -> dict[str, str]:
        return {"cluster-enabled": "yes", "cluster-config-file": str(self.home / "nodes.conf")}

    def ready(self, timeout_s: float) -> None:
        self.assign_slots()
        wait_for(lambda: redis_cluster_ready(self.url), self.name, timeout_s)

    def assign_slots(self) -> None:
        """Give every slot to this node unless it serves some already (nodes.conf keeps them on restarts)."""
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            if int(client.cluster("INFO").get("cluster_slots_assigned", 0)) == 0:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        finally:
            client.close()
