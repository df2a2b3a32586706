"""``/v1/models`` and ``/v1/dashboard`` list a model's versions from the same verified headers (one listing,
:class:`serving.headers.ListedVersion`), each under its own field names: ``n_learned`` and ``offsets`` on
``/v1/models``, ``learned`` on the dashboard. Embedded services: no Kafka, no Redis."""

from __future__ import annotations

import pytest

from streaming.settings import Settings
from tests.support.api_env import Embedded, keyed

pytestmark = pytest.mark.unit


def test_both_listings_show_each_versions_header(settings: Settings) -> None:
    emb = Embedded(keyed(settings))
    headers = [
        {
            "n_learned": 120,
            "saved_at": 1_700_000_000.5,
            "metrics": {"Accuracy": 0.75},
            "offsets": {"f": {"0": 9}},
        },
        {"n_learned": "many", "saved_at": 1_700_000_060.0, "metrics": {"Accuracy": "high"}},  # wrong types
    ]
    first, second = (emb.save(header=h) for h in headers)
    with emb.client("read") as client:
        info = client.get("/v1/models/zipm").json()
        board = client.get("/v1/dashboard").json()["models"]["zipm"]
    assert info["current_version"] == board["current_version"] == second
    assert info["versions"] == [
        {
            "version": second,
            "current": True,
            "n_learned": None,
            "offsets": {},
            "metrics": {"Accuracy": None},
            "saved_at": 1_700_000_060.0,
        },
        {
            "version": first,
            "current": False,
            "n_learned": 120,
            "offsets": {"f": {"0": 9}},
            "metrics": {"Accuracy": 0.75},
            "saved_at": 1_700_000_000.5,
        },
    ]
    assert board["versions"] == [
        {
            "version": second,
            "current": True,
            "saved_at": 1_700_000_060.0,
            "learned": None,
            "metrics": {"Accuracy": None},
        },
        {
            "version": first,
            "current": False,
            "saved_at": 1_700_000_000.5,
            "learned": 120,
            "metrics": {"Accuracy": 0.75},
        },
    ]
