"""The local cluster of ``scripts/services up --cluster`` for the tests marked ``cluster``: bringing it up
(or a killed node back) as a user does, and settings on it with a test's own prefixes. The fixtures built
on these are in ``tests/deploy/conftest.py``; the environment that puts a child process on it is
:func:`cluster_env`."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from streaming.settings import Settings

__all__ = ["ROOT", "STATE", "cluster_env", "cluster_settings", "services_up_cluster"]

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("RIVULET_SERVICES_DIR", ROOT / ".services"))


def services_up_cluster() -> str:
    """``scripts/services up --cluster``, as a user runs it; its output. The nodes it starts outlive it (and
    this test process): a node a test killed is started again this way, not as a child of the test."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "services"), "up", "--cluster"], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/services up --cluster failed:\n{done.stdout}\n{done.stderr}")
    assert "cluster ready" in done.stdout, done.stdout
    return done.stdout


def cluster_settings(bootstrap: str, redis_url: str) -> Settings:
    """Settings on the cluster (RF 3, min.insync 2, Redis Cluster), with fresh prefixes of their own."""
    run = uuid.uuid4().hex[:10]
    return Settings(
        kafka_bootstrap=bootstrap,
        replication_factor=3,
        min_insync_replicas=2,
        redis_url=redis_url,
        redis_cluster=True,
        topic_prefix=f"test.{run}.",
        redis_prefix=f"test:{run}:",
    )


def cluster_env(settings: Settings) -> dict[str, str]:
    """The environment that puts a Rivulet process on the cluster of ``settings`` (it replaces the test
    shell's single-node RIVULET_KAFKA_BOOTSTRAP and RIVULET_REDIS_URL); the test's prefixes are added by
    ``rivulet_process``."""
    return {
        "RIVULET_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RIVULET_REPLICATION_FACTOR": str(settings.replication_factor),
        "RIVULET_MIN_INSYNC_REPLICAS": str(settings.min_insync_replicas),
        "RIVULET_REDIS_URL": settings.redis_url,
        "RIVULET_REDIS_CLUSTER": "true",
    }
