"""The local cluster of ``scripts/services up --cluster``, on loopback: what a user past one machine runs.

* Kafka: three KRaft nodes, each a combined broker and controller, with a static controller quorum of the
  three (``controller.quorum.voters``), one cluster id; the brokers' defaults are replication factor 3 and
  ``min.insync.replicas=2``, and the offsets and transaction state topics are replicated three times. The
  brokers listen on ``RIVULET_CLUSTER_KAFKA_BOOTSTRAP`` (default ``127.0.0.1:29092,29093,29094``), each
  controller on its broker's port + 100; each JVM has ``RIVULET_CLUSTER_KAFKA_HEAP`` (default 384m).
* Redis: a Redis Cluster of six ``redis-server --cluster-enabled yes`` on ``RIVULET_CLUSTER_REDIS_URL``'s port
  and the five after it (default 7301..7306; the cluster bus is each port + 10000), made three primaries with
  one replica each by ``redis-cli --cluster create --cluster-replicas 1``. No persistence: ``down`` forgets
  the cluster's layout as well (its ``nodes.conf``) and the next ``up`` creates it afresh.

State lives under ``<services dir>/cluster/``. ``up`` is idempotent: it starts the nodes that do not run
(one killed by a test rejoins), creates the Redis Cluster when none is formed, and returns once every broker
is registered, a topic of replication factor 3 has all its replicas in sync and every Redis node reports
``cluster_state:ok`` with six nodes known.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from services_common import ServerProcess, require, say, wait_for
from services_kafka import LISTENERS, KafkaNode, kafka_cluster_id, kafka_ready
from services_redis import RedisNode, redis_ready

from streaming.runtime.probes import kafka_address, redis_address

__all__ = ["ClusterKafkaNode", "ClusterRedisNode", "LocalCluster"]

DEFAULT_BOOTSTRAP = "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094"
DEFAULT_REDIS_URL = "redis://127.0.0.1:7301"
CONTROLLER_OFFSET = 100  # a broker's controller listens on its port + 100
REDIS_NODES = 6
CHECK_TOPIC = "rivulet-cluster-check"

CLUSTER_BROKER_CONFIG = [
    "process.roles=broker,controller",
    "node.id={node_id}",
    "controller.quorum.voters={voters}",
    *LISTENERS,
    "num.partitions=3",
    "default.replication.factor=3",
    "min.insync.replicas=2",
    "unclean.leader.election.enable=false",
    "auto.create.topics.enable=false",
    "offsets.topic.replication.factor=3",
    "offsets.topic.num.partitions=8",
    "transaction.state.log.replication.factor=3",
    "transaction.state.log.min.isr=2",
    "group.initial.rebalance.delay.ms=0",
    "delete.topic.enable=true",
    "log.retention.hours=168",
    # three JVMs share two cores here: fewer threads than Kafka's defaults (3 network, 8 I/O)
    "num.network.threads=2",
    "num.io.threads=2",
    "background.threads=2",
    "",
]


@dataclass
class ClusterKafkaNode(KafkaNode):
    """One of the three combined broker and controller nodes; ``voters`` is the static quorum."""

    node_id: int = 1
    voters: str = ""
    cluster: str = ""  # the shared cluster id its storage is formatted with

    name = "kafka node"

    def config(self) -> list[str]:
        values = {
            "node_id": self.node_id,
            "voters": self.voters,
            "port": self.port,
            "controller_port": self.controller_port,
            "data": self.home / "data",
        }
        return [line.format(**values) for line in CLUSTER_BROKER_CONFIG]

    def cluster_id(self) -> str:
        return self.cluster


@dataclass
class ClusterRedisNode(RedisNode):
    """One node of the Redis Cluster: ``cluster-enabled yes``, its layout in ``nodes.conf`` of its home."""

    name = "redis cluster node"
    database = ""

    def options(self) -> dict[str, str]:
        return {
            "cluster-enabled": "yes",
            "cluster-config-file": str(self.home / "nodes.conf"),
            "cluster-node-timeout": "3000",  # a primary is failed over ~3 s after it stops answering
        }


def _redis_info(port: int) -> dict[str, str] | None:
    import redis

    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            return {k: str(v) for k, v in client.cluster("INFO").items()}
        finally:
            client.close()
    except Exception:
        return None


@dataclass
class LocalCluster:
    """The three Kafka nodes and six Redis nodes under ``state / "cluster"``, configured from ``env``."""

    state: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def bootstrap(self) -> str:
        return self.env.get("RIVULET_CLUSTER_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)

    @property
    def redis_url(self) -> str:
        return self.env.get("RIVULET_CLUSTER_REDIS_URL", DEFAULT_REDIS_URL)

    @property
    def home(self) -> Path:
        return self.state / "cluster"

    def kafka_nodes(self) -> list[ClusterKafkaNode]:
        ports = [kafka_address(server)[1] for server in self.bootstrap.split(",") if server.strip()]
        if len(ports) != 3 or len(set(ports)) != 3:
            raise SystemExit(
                f"services: RIVULET_CLUSTER_KAFKA_BOOTSTRAP must name 3 ports: {self.bootstrap!r}"
            )
        voters = ",".join(f"{i}@127.0.0.1:{p + CONTROLLER_OFFSET}" for i, p in enumerate(ports, 1))
        heap = self.env.get("RIVULET_CLUSTER_KAFKA_HEAP", "384m")
        return [
            ClusterKafkaNode(
                self.home / f"kafka-{i}",
                port=p,
                controller_port=p + CONTROLLER_OFFSET,
                heap=heap,
                node_id=i,
                voters=voters,
                cluster=self._cluster_id(),
            )
            for i, p in enumerate(ports, 1)
        ]

    def redis_nodes(self) -> list[ClusterRedisNode]:
        first = redis_address(self.redis_url, 7301)[1]
        return [ClusterRedisNode(self.home / f"redis-{p}", port=p) for p in range(first, first + REDIS_NODES)]

    def nodes(self) -> list[ServerProcess]:
        return [*self.kafka_nodes(), *self.redis_nodes()]

    def _cluster_id(self) -> str:
        path = self.home / "kafka-cluster.id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(kafka_cluster_id())
        return path.read_text().strip()

    # ------------------------------------------------------------------ up

    def up(self, timeout_s: float = 240.0) -> None:
        t0 = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        redis_nodes = self.redis_nodes()
        for node in redis_nodes:
            if not node.running():
                node.ensure_ports_free(node.port + 10000)  # its cluster bus
                node.start()
                say(f"redis cluster node started at 127.0.0.1:{node.port} (pid {node.pid})")
        kafka_nodes = self.kafka_nodes()
        launched = [(node, node.launch()) for node in kafka_nodes]
        for node, proc in launched:
            if proc is not None:
                say(f"kafka node {node.node_id} started at {node.bootstrap} (pid {node.pid})")
        self._create_redis_cluster(redis_nodes)
        for node, proc in launched:
            wait_for(
                lambda n=node: kafka_ready(n.bootstrap),
                f"kafka node {node.node_id}",
                timeout_s,
                proc,
                node.stdout,
            )
        wait_for(self.kafka_replicated, "kafka cluster (3 brokers, a topic of 3 in-sync replicas)", timeout_s)
        wait_for(self.redis_ok, "redis cluster (cluster_state:ok, 6 nodes)", 60)
        say(f"cluster ready in {time.monotonic() - t0:.1f}s")
        say(f"  kafka bootstrap: {self.bootstrap}")
        say(f"  redis cluster:   {self.redis_url}")
        say(
            f"  use: RIVULET_KAFKA_BOOTSTRAP={self.bootstrap} RIVULET_REPLICATION_FACTOR=3 "
            f"RIVULET_MIN_INSYNC_REPLICAS=2 RIVULET_REDIS_URL={self.redis_url} RIVULET_REDIS_CLUSTER=true"
        )

    def _create_redis_cluster(self, nodes: list[ClusterRedisNode]) -> None:
        """``redis-cli --cluster create`` when no node serves a slot yet (else the cluster exists: a node
        that restarted rejoins it from its nodes.conf)."""
        infos = [_redis_info(node.port) for node in nodes]
        if any(
            info is not None
            and int(info.get("cluster_slots_assigned", 0)) > 0
            and int(info.get("cluster_known_nodes", 1)) > 1
            for info in infos
        ):
            return
        cli = require("redis-cli", "redis-tools")
        for node, info in zip(nodes, infos, strict=True):
            # a node alone that still claims slots kept a stale nodes.conf (Redis rewrites it as it stops,
            # which can land after down removed it): forgotten, or create refuses the node
            if info is not None and int(info.get("cluster_slots_assigned", 0)) > 0:
                for command in (["FLUSHALL"], ["CLUSTER", "RESET", "HARD"]):
                    reset = [cli, "-p", str(node.port), *command]
                    subprocess.run(reset, check=True, stdout=subprocess.DEVNULL)
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        say(f"creating the redis cluster (3 primaries, 1 replica each) on {', '.join(addresses)}")
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    # ------------------------------------------------------------------ probes

    def kafka_brokers(self) -> set[int]:
        """The node ids of the brokers the cluster has registered (empty when none answers)."""
        from kafka import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        except Exception:
            return set()
        try:
            return {b["broker_id"] for b in admin.describe_cluster().get("brokers", [])}
        except Exception:
            return set()
        finally:
            admin.close()

    def kafka_replicated(self) -> bool:
        """Every broker registered, and a topic of replication factor 3 (created when absent) has all three
        replicas of each partition in sync."""
        if self.kafka_brokers() != {1, 2, 3}:
            return False
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        except Exception:
            return False
        try:
            if CHECK_TOPIC not in admin.list_topics():
                admin.create_topics([NewTopic(CHECK_TOPIC, num_partitions=3, replication_factor=3)])
            meta = admin.describe_topics([CHECK_TOPIC])[0]
            parts = meta.get("partitions") or []
            return bool(parts) and all(len(p["isr_nodes"]) == 3 for p in parts)
        except Exception:
            return False
        finally:
            admin.close()

    def redis_ok(self) -> bool:
        """Every node answers, reports ``cluster_state:ok``, knows six nodes, and three serve slots."""
        infos = [_redis_info(node.port) for node in self.redis_nodes()]
        return all(
            info is not None
            and info.get("cluster_state") == "ok"
            and info.get("cluster_known_nodes") == str(REDIS_NODES)
            and info.get("cluster_size") == "3"
            for info in infos
        )

    # ------------------------------------------------------------------ down and status

    def down(self) -> None:
        for node in self.nodes():
            node.stop()
        for node in self.redis_nodes():
            # no data is kept (no persistence): the next up creates the cluster afresh
            (node.home / "nodes.conf").unlink(missing_ok=True)

    def status(self) -> tuple[bool, list[str]]:
        """Whether the whole cluster is ready, and a line per node."""
        lines = []
        brokers = self.kafka_brokers()
        for node in self.kafka_nodes():
            registered = node.node_id in brokers and kafka_ready(node.bootstrap)
            lines.append(self._line(f"kafka node {node.node_id}", node.bootstrap, registered, node))
        for rnode in self.redis_nodes():
            info = _redis_info(rnode.port) if redis_ready(rnode.url) else None
            role = f" {self._role(rnode.port)}" if info is not None else ""
            state = f", cluster_state:{info.get('cluster_state')}" if info is not None else ""
            lines.append(
                self._line(f"redis node{role}", f"127.0.0.1:{rnode.port}", info is not None, rnode) + state
            )
        ok = all(": up" in line for line in lines) and self.redis_ok()
        return ok, lines

    @staticmethod
    def _line(label: str, address: str, up: bool, node: ServerProcess) -> str:
        return f"{label} {address}: {'up' if up else 'down'}" + (" (ours)" if node.running() else "")

    @staticmethod
    def _role(port: int) -> str:
        import redis

        try:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0, socket_connect_timeout=2.0)
            try:
                role = str(client.info("replication").get("role", "?"))
                return {"master": "primary", "slave": "replica"}.get(role, role)
            finally:
                client.close()
        except Exception:
            return "?"
