"""The Redis store on a real (one-node) Redis Cluster, started by ``scripts/services up`` on port 7001.

Any entity the API accepts must work: its vector and state keys share one slot, so the commit's Lua script
(two keys) runs. Under the old scheme (the raw entity as the hash tag) an entity holding braces put the two
keys in different slots and the commit failed with CROSSSLOT on every retry.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from features.engine import EntityState
from features.redis_store import _WRITE, state_key, vector_key
from features.store import FeatureRow, StateUpdate
from streaming import clients
from streaming.ingest.producer import Producer
from streaming.settings import Settings
from tests.support.feature_defs import ALL
from tests.support.oracle import Oracle, diff, stream
from tests.support.workers import Worker, wait_caught_up

pytestmark = pytest.mark.integration

CLUSTER_URL = os.environ.get("RIVULET_REDIS_CLUSTER_URL", "redis://127.0.0.1:7001")

ENTITIES = [
    "}x{",
    "{",
    "}",
    "{}",
    "}{",
    "a{b}c",
    " ",  # empty-looking: a space, a zero-width space, a no-break space
    "\u200b",
    "\u00a0",
    "é}{ü",
    "用户:{42}",
    "😀",
    "x" * 1000,
    "{" * 500 + "}" * 500,
]


def on_cluster(settings: Settings) -> Settings:
    """``settings`` on the one-node Redis Cluster, in cluster mode (``RIVULET_REDIS_CLUSTER=true``)."""
    return settings.model_copy(update={"redis_url": CLUSTER_URL, "redis_cluster": True})


@pytest.fixture
def cluster(settings: Settings, redis_cluster_up: str) -> Iterator[redis.Redis]:
    """A plain client on the cluster's only node (it owns every slot); the test's keys removed after."""
    client = clients.redis_client(on_cluster(settings))  # redis_client: a plain client, whatever the mode
    assert client.cluster("INFO")["cluster_state"] == "ok"
    yield client
    for key in list(client.scan_iter(match=f"{settings.redis_prefix}*", count=1000)):
        client.delete(key)  # one by one: keys of different slots cannot share a DEL
    client.close()


def _update(entity: str, ts: int, offset: int) -> StateUpdate:
    state = EntityState(
        watermark=ts,
        seq=1,
        tiles={"lifetime@1000": [[ts // 1000, [1]]]},
        settled={"n": [0]},
        position={"t": "events", "p": 0, "o": offset},
        bounds={"x": [1.5, 2.25]},
    )
    return StateUpdate(entity, state, FeatureRow("v", entity, {"n": 1, "who": entity}, ts, 600))


def test_any_entity_commits_and_reads_back_through_redis_cluster(
    settings: Settings, cluster: redis.Redis
) -> None:
    prefix = settings.redis_prefix

    async def go() -> tuple[dict[str, Any], list[FeatureRow | None], list[FeatureRow | None]]:
        store = clients.feature_store(on_cluster(settings))
        try:
            await store.commit("v", [_update(e, 1_000 + i, i) for i, e in enumerate(ENTITIES)])
            loaded = await store.load("v", [*ENTITIES, "absent"])
            many = await store.read("v", ENTITIES)
            one = await store.read("v", ["}x{"])
            return loaded, many, one
        finally:
            await store.close()

    loaded, many, one = asyncio.run(go())

    assert list(loaded) == ENTITIES  # "absent" has no state
    for i, entity in enumerate(ENTITIES):
        assert loaded[entity] == _update(entity, 1_000 + i, i).state
        row = many[i]
        assert row is not None and (row.entity, row.ts) == (entity, 1_000 + i)
        assert row.values == {"n": 1, "who": entity}
        vkey, skey = vector_key(prefix, "v", entity), state_key(prefix, "v", entity)
        # the server agrees: both keys in one slot
        assert cluster.cluster("KEYSLOT", vkey) == cluster.cluster("KEYSLOT", skey)
        # and what is stored is what was committed, read without the store
        assert orjson.loads(cluster.hget(vkey, "who")) == entity
        assert cluster.hget(skey, "o") == str(i).encode()
    assert one[0] is not None and one[0].values["who"] == "}x{"


def test_the_old_key_scheme_fails_with_crossslot_on_the_cluster(
    settings: Settings, cluster: redis.Redis
) -> None:
    """What the store did before: ``{<entity>}`` as the hash tag. The commit's two keys land in different
    slots for '}x{', and the node refuses the script: the poison batch this fixes."""
    prefix = settings.redis_prefix
    old_v, old_s = f"{prefix}fv:v:{{}}x{{}}", f"{prefix}fs:v:{{}}x{{}}"  # the old keys of entity "}x{"
    assert old_v.endswith(":fv:v:{}x{}")
    assert cluster.cluster("KEYSLOT", old_v) != cluster.cluster("KEYSLOT", old_s)
    args = [5, 600, b"{}", "events", 0, 1, "0", "n", b"1"]
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):  # the CROSSSLOT error
        cluster.eval(_WRITE, 2, old_v, old_s, *args)
    # the same script on the new keys of the same entity runs
    new_v, new_s = vector_key(prefix, "v", "}x{"), state_key(prefix, "v", "}x{")
    assert new_v.endswith(":fv:v:{fXh7}")  # base64url of "}x{"
    assert cluster.eval(_WRITE, 2, new_v, new_s, *args) == 1
    assert cluster.hget(new_v, "_ts") == b"5"


def test_the_feature_worker_runs_on_redis_cluster_with_any_entity(
    rivulet_topics: Settings, cluster: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real worker (RIVULET_REDIS_CLUSTER=true) commits every entity, braces and all, on the cluster: with
    the old keys the first batch holding '}x{' failed with CROSSSLOT and was retried forever."""
    settings = rivulet_topics
    entities = ["}x{", "{", "}", "é}{ü", "x" * 1000, "plain"]
    base = stream(120, entities=1, seed=31, step_ms=1_000)
    events = [e.model_copy(update={"entity": entities[i % len(entities)]}) for i, e in enumerate(base)]
    with Producer(settings) as producer:
        producer.send_many(events)
    monkeypatch.setenv("RIVULET_REDIS_URL", CLUSTER_URL)
    monkeypatch.setenv("RIVULET_REDIS_CLUSTER", "true")
    worker = Worker(settings, "tests.support.feature_defs:DIRECT", tmp_path / "worker.log")
    try:
        wait_caught_up(settings, [worker])
    finally:
        worker.stop()

    async def read() -> list[FeatureRow | None]:
        store = clients.feature_store(on_cluster(settings))
        try:
            return await store.read("all", entities)
        finally:
            await store.close()

    online = Oracle(ALL).feed(events).online()
    for entity, row in zip(entities, asyncio.run(read()), strict=True):
        assert row is not None, entity
        wm, aggs = online[entity]
        assert row.ts == wm and not diff(row.values, aggs), (entity, diff(row.values, aggs))
    stats = cluster.hgetall(f"{settings.redis_prefix}stats:features")
    assert int(stats[b"records:all"]) == len(events) and not any(k.startswith(b"dead_letters") for k in stats)
