"""Fixtures of the modules marked ``cluster``: the local cluster and settings on it."""

from __future__ import annotations

import localservices  # scripts/, put on the path by tests/conftest.py
import pytest

from streaming.settings import Settings
from tests.support.cluster import STATE, cluster_settings, services_up_cluster


@pytest.fixture(scope="module")
def cluster() -> localservices.LocalCluster:
    """The local cluster, brought up (or found up) by ``scripts/services up --cluster``."""
    services_up_cluster()
    return localservices.LocalCluster(STATE)


@pytest.fixture
def on_cluster(cluster: localservices.LocalCluster) -> Settings:
    """Settings on the cluster (RF 3, min.insync 2, Redis Cluster), with this test's own prefixes."""
    return cluster_settings(cluster.bootstrap, cluster.redis_url)
