"""The local services script's pure parts."""

from __future__ import annotations

import base64
import uuid

import localservices  # scripts/ is on the path (tests/conftest.py)
import pytest

pytestmark = pytest.mark.unit


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    """kafka-storage format -t -3zU... reads the id as an option and fails (1 start in 64)."""
    dashed = uuid.UUID(bytes=base64.urlsafe_b64decode("-3zUclu-Q_uJz0hXxLwecw=="))
    plain = uuid.UUID(int=42)
    draws = iter([dashed, dashed, plain])
    cluster_id = localservices.kafka_cluster_id(lambda: next(draws))
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).rstrip(b"=").decode()
    assert all(not localservices.kafka_cluster_id().startswith("-") for _ in range(2_000))


def test_the_cluster_node_runs_cluster_enabled_in_its_own_directory(tmp_path) -> None:
    node = localservices.RedisClusterNode(tmp_path / "redis-cluster", port=7001)
    cmd = node.command("redis-server")
    args = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert args["--cluster-enabled"] == "yes" and args["--port"] == "7001"
    assert args["--dir"] == str(tmp_path / "redis-cluster")
    assert args["--cluster-config-file"] == str(tmp_path / "redis-cluster" / "nodes.conf")
    assert args["--bind"] == "127.0.0.1"
    assert node.pidfile != localservices.RedisNode(tmp_path / "redis").pidfile
    assert node.url == "redis://127.0.0.1:7001"


def test_a_bootstrap_without_a_port_is_kafkas_default_port(tmp_path) -> None:
    """RIVULET_KAFKA_BOOTSTRAP=localhost made scripts/services fail on int("localhost"); one parse now."""
    kafka, redis_node = localservices._local_nodes("localhost", "redis://127.0.0.1")
    assert (kafka.port, kafka.controller_port, redis_node.port) == (9092, 9093, 6379)
    kafka, redis_node = localservices._local_nodes("127.0.0.1:29092,127.0.0.1:29093", "redis://h:6380/1")
    assert (kafka.port, kafka.controller_port, redis_node.port) == (29092, 29093, 6380)


def test_a_node_is_ours_only_by_its_pid_file_and_program(tmp_path) -> None:
    """A pid file left by a crash whose pid now runs another program is not our server."""
    import os

    kafka = localservices.KafkaNode(tmp_path / "kafka", port=1)
    redis_node = localservices.RedisNode(tmp_path / "redis", port=1)
    for node in (kafka, redis_node):
        node.home.mkdir(parents=True)
        assert not node.running()  # no pid file
        node.pidfile.write_text(str(os.getpid()))  # pytest: neither a broker in this home nor a redis-server
        assert not node.running()
        node.stop()  # signals nothing (this process lives on) and forgets the stale pid file
        assert not node.pidfile.exists()
    assert (kafka.marker, redis_node.marker) == (str(tmp_path / "kafka"), "redis-server 127.0.0.1:1")


def test_the_local_cluster_is_configured_from_its_two_variables(tmp_path) -> None:
    """Three brokers on the bootstrap's ports, their controllers 100 above, one static quorum of the three
    and one cluster id; six Redis nodes from the URL's port on; nothing of it on the single-node ports."""
    env = {
        "RIVULET_CLUSTER_KAFKA_BOOTSTRAP": "127.0.0.1:31001,127.0.0.1:31002,127.0.0.1:31003",
        "RIVULET_CLUSTER_REDIS_URL": "redis://127.0.0.1:7401",
    }
    cluster = localservices.LocalCluster(tmp_path, env=env)
    kafka = cluster.kafka_nodes()
    assert [(n.node_id, n.port, n.controller_port) for n in kafka] == [
        (1, 31001, 31101),
        (2, 31002, 31102),
        (3, 31003, 31103),
    ]
    lines = [dict(line.split("=", 1) for line in n.config() if line) for n in kafka]
    assert {c["controller.quorum.voters"] for c in lines} == {
        "1@127.0.0.1:31101,2@127.0.0.1:31102,3@127.0.0.1:31103"
    }
    assert [c["node.id"] for c in lines] == ["1", "2", "3"]
    for c in lines:
        assert (c["default.replication.factor"], c["min.insync.replicas"]) == ("3", "2")
        assert (c["offsets.topic.replication.factor"], c["transaction.state.log.replication.factor"]) == (
            "3",
            "3",
        )
    assert len({n.cluster_id() for n in kafka}) == 1 and len({n.home for n in kafka}) == 3
    assert [n.port for n in cluster.redis_nodes()] == list(range(7401, 7407))
    assert all(n.options()["cluster-enabled"] == "yes" for n in cluster.redis_nodes())

    defaults = localservices.LocalCluster(tmp_path, env={})
    assert defaults.bootstrap == "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094"
    assert defaults.redis_url == "redis://127.0.0.1:7301"
    single = {9092, 9093, 6379, 7001, 16379, 17001}  # scripts/services up, and the Redis cluster buses
    ports = {n.port for n in defaults.kafka_nodes()} | {n.controller_port for n in defaults.kafka_nodes()}
    redis_ports = {n.port for n in defaults.redis_nodes()}
    assert not (ports | redis_ports | {p + 10000 for p in redis_ports}) & single

    bad = localservices.LocalCluster(
        tmp_path, env={"RIVULET_CLUSTER_KAFKA_BOOTSTRAP": "127.0.0.1:1,127.0.0.1:1"}
    )
    with pytest.raises(SystemExit, match="must name 3 ports"):
        bad.kafka_nodes()
