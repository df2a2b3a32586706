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
