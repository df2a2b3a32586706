"""Start, stop and inspect the Kafka and Redis that Rivulet runs against (behind ``scripts/services``).

Besides them, a one-node Redis Cluster (``redis-server`` with ``cluster-enabled yes`` on its own port,
``RIVULET_REDIS_CLUSTER_URL``, default ``redis://127.0.0.1:7001``, every slot assigned to it) for the tests
that prove an entity's keys share one slot; it is started from the local ``redis-server`` in every case.

Order of preference for each service:

1. the configured address (``RIVULET_KAFKA_BOOTSTRAP``, ``RIVULET_REDIS_URL``) already answers: start nothing;
2. a Docker engine answers: ``docker compose up -d kafka redis``;
3. start it locally: Apache Kafka 4.4.x in KRaft mode (combined broker and controller) from the official
   ``org.apache.kafka:kafka_2.13`` jars resolved from Maven Central with ``mvn`` and run with ``java``;
   Redis from the ``redis-server`` on PATH.

``up --cluster`` starts, instead, a three-node Kafka cluster and a Redis Cluster of six nodes on loopback
(``services_cluster.py``); ``status --cluster`` and ``down --cluster`` address it alone, while a plain
``down`` stops it too and a plain ``status`` lists its nodes when it runs.

Local data and logs live under ``.services/`` and the jars under ``.cache/``, both ignored by git.
``down`` stops only what ``up`` started, by the PIDs it recorded. :class:`KafkaNode` is also used by
tests that need a private broker they can stop and restart. This module holds the commands; the Kafka node
is in ``services_kafka.py``, the Redis nodes in ``services_redis.py``, what they share (a server process
with a pid file, waiting with a deadline) in ``services_common.py``. What the machine must have installed
(Java 17, Maven, redis-server) is installed by ``scripts/install-deps``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from services_cluster import LocalCluster
from services_common import ServerProcess, say, wait_for
from services_kafka import KAFKA_VERSION, KafkaNode, kafka_classpath, kafka_cluster_id, kafka_ready
from services_redis import RedisClusterNode, RedisNode, redis_cluster_ready, redis_ready

from streaming.runtime.probes import kafka_address, redis_address

__all__ = [
    "KafkaNode",
    "LocalCluster",
    "RedisClusterNode",
    "RedisNode",
    "ServerProcess",
    "kafka_cluster_id",
    "kafka_ready",
    "main",
    "redis_cluster_ready",
    "redis_ready",
]

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("RIVULET_SERVICES_DIR", ROOT / ".services"))


# --------------------------------------------------------------------------- docker


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker_up(services: list[str]) -> None:
    subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "up", "-d", "--wait", *services],
        check=True,
    )
    (STATE / "docker.started").write_text(" ".join(services))


# --------------------------------------------------------------------------- commands


def _endpoints() -> tuple[str, str]:
    bootstrap = os.environ.get("RIVULET_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    url = os.environ.get("RIVULET_REDIS_URL", "redis://127.0.0.1:6379/0")
    return bootstrap, url


def _cluster_node() -> RedisClusterNode:
    url = os.environ.get("RIVULET_REDIS_CLUSTER_URL", "redis://127.0.0.1:7001")
    return RedisClusterNode(STATE / "redis-cluster", port=redis_address(url, 7001)[1])


def _local_nodes(bootstrap: str, url: str) -> tuple[KafkaNode, RedisNode]:
    kport = kafka_address(bootstrap)[1]
    return (
        KafkaNode(STATE / "kafka", port=kport, controller_port=kport + 1),
        RedisNode(STATE / "redis", port=redis_address(url)[1]),
    )


def _state(label: str, address: str, up: bool, node: ServerProcess) -> str:
    """``kafka  127.0.0.1:9092: up (ours)``: whether it answers, and whether scripts/services started it."""
    return f"{label} {address}: {'up' if up else 'down'}" + (" (ours)" if node.running() else "")


def cluster_up() -> None:
    node = _cluster_node()
    if redis_cluster_ready(node.url):
        say(_state("redis cluster", node.url, True, node))
    elif shutil.which("redis-server") is None:
        # not fatal for Kafka and Redis (which Docker may provide); the cluster tests report it missing
        say("redis cluster: redis-server not found, not started; run scripts/install-deps")
    else:
        node.start()
        say(f"redis cluster (one node, all slots) started at {node.url} (pid {node.pid}, data {node.home})")


def start_local(need: list[str], kafka: KafkaNode, redis_node: RedisNode) -> None:
    if "redis" in need:
        redis_node.start()
        say(f"redis  started at {redis_node.url} (pid {redis_node.pid}, data {redis_node.home})")
    if "kafka" in need:
        t0 = time.monotonic()
        kafka.start()
        took = time.monotonic() - t0
        say(f"kafka  {KAFKA_VERSION} (KRaft) started at {kafka.bootstrap} in {took:.1f}s")
        say(f"       pid {kafka.pid}, logs {kafka.home / 'logs'}")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _refuse_elsewhere(need: list[str], bootstrap: str, url: str) -> None:
    """SystemExit when a service that does not answer is configured on another host (or an address that
    does not parse): a Kafka or Redis started here on loopback would never be the one configured, and would
    be left running after the wait for the configured one timed out."""
    hosts = {"kafka": (kafka_address(bootstrap)[0], bootstrap), "redis": (redis_address(url)[0], url)}
    elsewhere = [
        f"{name} at {address}" for name in need for host, address in [hosts[name]] if host not in LOOPBACK
    ]
    if elsewhere:
        raise SystemExit(
            f"services: {'; '.join(elsewhere)} does not answer and is not on this machine: start it there, "
            "or point RIVULET_KAFKA_BOOTSTRAP / RIVULET_REDIS_URL at 127.0.0.1"
        )


def up() -> None:
    bootstrap, url = _endpoints()
    STATE.mkdir(parents=True, exist_ok=True)
    kafka, redis_node = _local_nodes(bootstrap, url)
    ready = {"kafka": kafka_ready(bootstrap), "redis": redis_ready(url)}
    for label, address, node in (("kafka ", bootstrap, kafka), ("redis ", url, redis_node)):
        if ready[label.strip()]:
            say(_state(label, address, True, node))
    need = [name for name, ok in ready.items() if not ok]
    _refuse_elsewhere(need, bootstrap, url)
    if need and docker_available():
        say(f"starting {', '.join(need)} with docker compose")
        docker_up(need)
    elif need:
        start_local(need, kafka, redis_node)
    if need:
        wait_for(lambda: kafka_ready(bootstrap), "kafka", 60)
        wait_for(lambda: redis_ready(url), "redis", 30)
    cluster_up()


def local_cluster() -> LocalCluster:
    return LocalCluster(STATE)


def down(cluster_only: bool = False) -> None:
    local_cluster().down()
    if cluster_only:
        return
    bootstrap, url = _endpoints()
    for node in (*_local_nodes(bootstrap, url), _cluster_node()):
        node.stop()
    marker = STATE / "docker.started"
    if marker.exists():
        services = marker.read_text().split()
        subprocess.run(
            ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "stop", *services], check=False
        )
        marker.unlink()
        say(f"stopped docker services {', '.join(services)}")


def cluster_status() -> int:
    ok, lines = local_cluster().status()
    for line in lines:
        say(line)
    return 0 if ok else 1


def status() -> int:
    bootstrap, url = _endpoints()
    kafka, redis_node = _local_nodes(bootstrap, url)
    cluster = _cluster_node()
    k, r, c = kafka_ready(bootstrap), redis_ready(url), redis_cluster_ready(cluster.url)
    say(_state("kafka ", bootstrap, k, kafka))
    say(_state("redis ", url, r, redis_node))
    say(_state("redis cluster", cluster.url, c, cluster))
    if any(node.running() for node in local_cluster().nodes()):
        cluster_status()  # listed, not counted: the single-node services are what a plain status is about
    return 0 if k and r and c else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/services", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "jars"])
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the local cluster: 3 Kafka brokers and a Redis Cluster of 3 primaries with a replica each",
    )
    args = parser.parse_args(argv)
    if args.command == "up" and args.cluster:
        STATE.mkdir(parents=True, exist_ok=True)
        local_cluster().up()
    elif args.command == "up":
        up()
    elif args.command == "down":
        down(cluster_only=args.cluster)
    elif args.command == "jars":
        print(kafka_classpath())
    elif args.cluster:
        return cluster_status()
    else:
        return status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
