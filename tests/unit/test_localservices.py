"""The local services script's pure parts."""

from __future__ import annotations

import base64
import uuid

import localservices  # scripts/ is on the path (tests/conftest.py)


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    """kafka-storage format -t -3zU... reads the id as an option and fails (1 start in 64)."""
    dashed = uuid.UUID(bytes=base64.urlsafe_b64decode("-3zUclu-Q_uJz0hXxLwecw=="))
    plain = uuid.UUID(int=42)
    draws = iter([dashed, dashed, plain])
    cluster_id = localservices.kafka_cluster_id(lambda: next(draws))
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).rstrip(b"=").decode()
    assert all(not localservices.kafka_cluster_id().startswith("-") for _ in range(2_000))
