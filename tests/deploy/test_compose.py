"""docker-compose.yml parses and names the services users need, on safe images, with healthchecks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_compose_declares_kafka_and_redis_with_healthchecks() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"kafka", "redis"} <= set(services)
    for name in ("kafka", "redis"):
        assert services[name]["healthcheck"]["test"], name

    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.4\.\d+", kafka["image"])  # scripts/services_kafka.py's line
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node

    image = services["redis"]["image"]
    match = re.fullmatch(r"redis:(\d+)\.(\d+)\.(\d+)(-alpine)?", image)
    assert match, image
    version = tuple(int(x) for x in match.groups()[:3])
    # CVE-2025-49844 (Lua RCE) is fixed in 7.4.6 and 8.2.2
    assert (7, 4, 6) <= version < (8, 0, 0) or version >= (8, 2, 2), image


def test_kafka_and_redis_keep_their_data_across_restarts() -> None:
    """The registry (every model version) and the feature store live in Redis: an in-memory-only Redis
    would lose them whenever its container restarts."""
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    for name, mount in (("kafka", "/var/lib/kafka/data"), ("redis", "/data")):
        service = services[name]
        assert service.get("restart") == "unless-stopped", name
        volume = next(v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == mount)
        assert volume in spec["volumes"], (name, volume)
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert '""' not in " ".join(command) and "" not in command[1:]  # no --save "" turning persistence off


def _cluster_services(spec: dict) -> dict[str, dict]:
    return {name: s for name, s in spec["services"].items() if "cluster" in s.get("profiles", [])}


def test_the_cluster_profile_is_three_kraft_nodes_with_one_quorum() -> None:
    """``--profile cluster``: the topology of ``scripts/services up --cluster`` (services_cluster.py's
    defaults), each node a broker and a controller, all in one static quorum of one cluster id, with the
    replication the cluster suite relies on."""
    import base64

    import services_cluster  # scripts/ is on the path (tests/conftest.py)

    spec = yaml.safe_load(COMPOSE.read_text())
    cluster = _cluster_services(spec)
    brokers = {name: s for name, s in cluster.items() if name.startswith("kafka-")}
    assert sorted(brokers) == ["kafka-1", "kafka-2", "kafka-3"]
    envs = [brokers[f"kafka-{n}"]["environment"] for n in (1, 2, 3)]
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert [env["KAFKA_NODE_ID"] for env in envs] == ["1", "2", "3"]
    cluster_ids = {env["CLUSTER_ID"] for env in envs}
    assert len(cluster_ids) == 1
    default_id = re.fullmatch(r"\$\{RIVULET_KAFKA_CLUSTER_ID:-([A-Za-z0-9_-]+)\}", cluster_ids.pop())
    assert default_id and len(base64.urlsafe_b64decode(default_id[1] + "==")) == 16  # a KRaft cluster id
    published = []
    for n, env in enumerate(envs, 1):
        service = brokers[f"kafka-{n}"]
        assert re.fullmatch(r"apache/kafka:4\.4\.\d+", service["image"])
        assert service["hostname"] == f"kafka-{n}"
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert re.search(r"-Xmx\d+m", env["KAFKA_HEAP_OPTS"])
        # the address it advertises to the host is the one it publishes and listens on
        (port,) = {p.split(":")[-1] for p in service["ports"]}
        assert f"PLAINTEXT://127.0.0.1:{port}" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        assert f"PLAINTEXT://0.0.0.0:{port}" in env["KAFKA_LISTENERS"].split(",")
        assert f"INTERNAL://kafka-{n}:19092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        assert f"127.0.0.1:{port}" in service["healthcheck"]["test"][1]
        volume = service["volumes"][0].split(":")[0]
        assert volume in spec["volumes"] and volume == f"kafka-{n}-data"
        published.append(f"127.0.0.1:{port}")
    assert ",".join(published) == services_cluster.DEFAULT_BOOTSTRAP


def test_the_cluster_profile_makes_a_redis_cluster_of_three_primaries_with_replicas() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    cluster = _cluster_services(spec)
    nodes = {name: s for name, s in cluster.items() if re.fullmatch(r"redis-\d", name)}
    assert sorted(nodes) == [f"redis-{n}" for n in range(1, 7)]
    volumes = set()
    for name, node in nodes.items():
        command = node["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes", name
        assert command[command.index("--appendonly") + 1] == "yes", name  # the registry survives restarts
        assert node["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
        assert node["restart"] == "unless-stopped"
        match = re.fullmatch(r"redis:(\d+)\.(\d+)\.(\d+)(-alpine)?", node["image"])
        assert match and tuple(int(x) for x in match.groups()[:3]) >= (7, 4, 6), node["image"]
        (volume,) = (v.split(":")[0] for v in node["volumes"] if v.endswith(":/data"))
        volumes.add(volume)
    assert volumes == {f"redis-{n}-data" for n in range(1, 7)} and volumes <= set(spec["volumes"])

    create = cluster["redis-cluster-create"]
    assert create["restart"] == "no"
    assert create["depends_on"] == {name: {"condition": "service_healthy"} for name in nodes}
    script = " ".join(create["command"])
    assert "--cluster create" in script and "--cluster-replicas 1" in script and "--cluster-yes" in script
    assert "for n in 1 2 3 4 5 6" in script and "redis-$$n" in script  # every node, by its address
    assert "cluster_state:ok" in script  # a second up leaves a formed cluster alone


def test_the_cluster_profile_stays_out_of_the_default_stack() -> None:
    """A plain ``docker compose up`` starts none of it, and nothing outside the profile depends on it."""
    spec = yaml.safe_load(COMPOSE.read_text())
    cluster = set(_cluster_services(spec))
    assert len(cluster) == 10
    for name, service in spec["services"].items():
        if name not in cluster:
            assert not set(service.get("depends_on", {})) & cluster, name
