"""Attack on this round's Redis commit (issue 13, round b): many entities per script call, each entity's
meta one JSON argument decoded by Redis's cjson. Hostile entity keys and values come back exactly, on one
Redis (250 entities: two script calls, a stale entity among them) and on Redis Cluster (one per call):
NUL and control characters, unicode beyond the BMP and the line separators, JSON-looking strings, the ends
of int64 and ints beyond 2**53 (cjson reads numbers as doubles: the meta carries them as strings), a
float's last bits, subnormals, and a 1 MB value."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from features.engine import EntityState
from features.store import FeatureRow, StateUpdate
from streaming import clients
from streaming.settings import Settings
from tests.features.test_redis_cluster import cluster, on_cluster  # noqa: F401 (cluster: a fixture)

pytestmark = pytest.mark.integration

VALUES: dict[str, Any] = {
    "nul": "a\x00b",
    "ctl": "\x01\x1f\x7f",
    "uni": "é😀\u2028\u2029",
    "jsonish": '["x", 1e999, {"a": null}]',
    "num_str": "1e999",
    "big": 2**63 - 1,
    "small": -(2**63),
    "b53": 2**53 + 1,
    "sub": 5e-324,
    "max": 1.7976931348623157e308,
    "exact": 0.1 + 0.2,
    "t": True,
    "none": None,
    "esc": '\\u0000\\"',
}
ENTITIES = ["é😀", "}x{", "a\x00b", "x" * 1000, "1", '["json"]'] + [f"e{i}" for i in range(244)]
POSITION = {"t": 'tp\x00"é', "p": 3, "o": 2**52}


def _exact(values: dict[str, Any]) -> dict[str, str]:
    """Each value's repr: its type too (1 is not 1.0, True is not 1); a hash's fields come in any order."""
    return {k: repr(v) for k, v in values.items()}


def _commit_and_read_back(settings: Settings) -> None:
    async def go() -> None:
        store = clients.feature_store(settings)
        try:
            stale = EntityState(watermark=1, position={**POSITION, "o": 2**52 + 1})
            assert await store.commit("v", [StateUpdate("e7", stale, FeatureRow("v", "e7", {}, 1, 60))]) == 0
            ups = [
                StateUpdate(e, EntityState(watermark=5, position=POSITION), FeatureRow("v", e, VALUES, 5, 60))
                for e in ENTITIES
            ]
            ups[3] = StateUpdate(
                ENTITIES[3],
                EntityState(watermark=5, position=POSITION),
                FeatureRow("v", ENTITIES[3], {**VALUES, "huge": '\x00"' * 500_000}, 5, 60),
            )
            assert await store.commit("v", ups) == 1  # e7: its stored position is ahead
            rows = await store.read("v", ENTITIES)
            loaded = await store.load("v", ENTITIES)
            for e, row in zip(ENTITIES, rows, strict=True):
                state = loaded[e]
                assert row is not None and isinstance(state, EntityState) and state.position, e
                if e == "e7":
                    assert row.values == {} and state.position["o"] == 2**52 + 1
                    continue
                want = {**VALUES, "huge": '\x00"' * 500_000} if e == ENTITIES[3] else VALUES
                assert _exact(row.values) == _exact(want), e
                assert state.position == POSITION
        finally:
            await store.close()

    asyncio.run(go())


def test_hostile_keys_and_values_come_back_exactly_from_one_redis(
    settings: Settings, redis_client: Any
) -> None:
    _commit_and_read_back(settings)


def test_hostile_keys_and_values_come_back_exactly_from_a_cluster(
    settings: Settings,
    cluster: redis.Redis,  # noqa: F811
) -> None:
    _commit_and_read_back(on_cluster(settings))
