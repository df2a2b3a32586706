"""A batch applied while the previous one is still being committed (the feature worker computes batch N+1
while batch N is published and committed: streaming.runtime.feature_batches.overlapped). Both stores: the
states and positions committed for N are N's, whatever N+1 did to the same state objects since, and N+1
never reads an entity's state back from the store while N's commit is outstanding."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from features.aggregations import Count, Sum
from features.definitions import FeatureView
from features.events import Event
from features.pipeline import FeaturePipeline, RawRecord
from features.redis_store import state_key
from features.store import MemoryStore
from streaming import clients
from streaming.settings import Settings

pytestmark = pytest.mark.integration

VIEW = FeatureView(name="ov", aggregations=[Count(), Sum("x")])
Body = Callable[[Any], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
def with_store(request: pytest.FixtureRequest, settings: Settings) -> Callable[[Body], None]:
    def run(body: Body) -> None:
        async def go() -> None:
            if request.param == "memory":
                store: Any = MemoryStore()
            else:
                request.getfixturevalue("redis_client")  # live Redis, the prefix's keys removed afterwards
                store = clients.feature_store(settings)
            try:
                await body(store)
            finally:
                await store.close()

        asyncio.run(go())

    return run


def raw(offset: int, entity: str = "u", x: float = 1.0) -> RawRecord:
    event = Event(event_id=f"e{offset}", entity=entity, ts=1_000 * (offset + 1), fields={"x": x})
    return RawRecord(event.to_json(), "events", 0, offset, entity.encode())


async def stored(store: Any, entity: str = "u") -> dict[str, Any]:
    loaded = await store.load(VIEW.name, [entity])
    return orjson.loads(loaded[entity].to_json())


@pytest.mark.parametrize("cache_entities", [0, 1000])
def test_a_commit_made_after_the_next_batch_was_applied_stores_its_own_state_and_position(
    with_store: Callable[[Body], None], cache_entities: int
) -> None:
    async def body(store: Any) -> None:
        pipeline = FeaturePipeline([VIEW], store, cache_entities=cache_entities)
        first = await pipeline.process([raw(0), raw(1)])
        second = await pipeline.process([raw(2, x=5.0)])  # before the first is committed
        (vector,) = [r.features for r in second.records]
        # the second batch counted on the first's state, though it was not in the store (nor, with no
        # cache, anywhere but the pin of the uncommitted batch)
        assert vector["count_lifetime"] == 2 and vector["x_sum_lifetime"] == 2.0
        await first.commit(store)
        state = await stored(store)
        assert state["p"] == {"t": "events", "p": 0, "o": 1}  # the first batch's position, not the second's
        assert state["q"] == 2
        await second.commit(store)
        state = await stored(store)
        assert state["p"] == {"t": "events", "p": 0, "o": 2} and state["q"] == 3

    with_store(body)


def test_an_entity_is_read_back_from_the_store_once_its_batches_are_committed(
    with_store: Callable[[Body], None],
) -> None:
    """The pins go with the commits: with no cache, a later batch reads the committed state (a state
    edited in the store meanwhile shows: nothing stale is kept in memory)."""

    async def body(store: Any) -> None:
        pipeline = FeaturePipeline([VIEW], store, cache_entities=0)
        first = await pipeline.process([raw(0)])
        second = await pipeline.process([raw(1)])
        await first.commit(store)
        await second.commit(store)
        assert pipeline._pins == {}
        third = await pipeline.process([raw(2)])
        assert [r.features["count_lifetime"] for r in third.records] == [2]

    with_store(body)


def test_the_redis_commit_writes_the_position_of_the_batch_it_commits(
    settings: Settings, redis_client: Any
) -> None:
    """The Lua script's position arguments: the stored position must move with the stored state, or a
    redelivered record of the second batch would be skipped against the first batch's state."""

    async def go() -> None:
        store = clients.feature_store(settings)
        try:
            pipeline = FeaturePipeline([VIEW], store, cache_entities=1000)
            first = await pipeline.process([raw(0), raw(1)])
            await pipeline.process([raw(2)])
            await first.commit(store)
        finally:
            await store.close()

    asyncio.run(go())
    key = state_key(settings.redis_prefix, VIEW.name, "u")
    state = orjson.loads(redis_client.hget(key, "s"))
    assert state["p"]["o"] == 1 and state["q"] == 2
    assert int(redis_client.hget(key, "o")) == 1  # the position the script checks the next commit against
