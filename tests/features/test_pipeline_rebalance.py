"""States kept from before a rebalance (attack-13b's flaky count): a worker's pipeline must not apply the
records it reads after a rebalance to a state it cached or pinned before it.

Between two rebalances another worker may own an entity's partition and move the entity on in the store.
Two workers here share one store: ``a`` loses the entity's partition (``invalidate()``), ``b`` applies
records 2..5 and commits them, ``a`` gets the partition back (``invalidate()`` again) and reads on from
the committed offset, 6. Before the fix, ``a`` still held a state of the entity at offset 2 (put in its
cache by a batch that began before the first rebalance and ended after the second, or pinned by a batch
whose commit was still under way) and counted event 6 on it: 3 events before it instead of 6, and its
commit, further along than ``b``'s, stored that state (the re-keyed view's count 29 events short in one
run of tests/streaming/runtime/test_feature_worker_attack13b.py, whose worker's Redis commits and loads can
take seconds under load). Both tests fail on the code before the fix (checked)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from features.aggregations import Count
from features.definitions import FeatureView
from features.events import Event
from features.pipeline import FeaturePipeline, RawRecord
from features.store import Loaded, MemoryStore, StateUpdate

pytestmark = pytest.mark.unit

VIEW = FeatureView(name="rb", aggregations=[Count()])


class GatedStore(MemoryStore):
    """A memory store whose loads of ``gated`` entities wait for ``gate`` (a Redis load that takes long)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()  # a gated load is waiting
        self.gated: set[str] = set()

    async def load(self, view: str, entities: Sequence[str]) -> dict[str, Loaded]:
        if self.gated & set(entities):
            self.waiting.set()
            await self.gate.wait()
        return await super().load(view, entities)

    async def commit(self, view: str, updates: Sequence[StateUpdate]) -> int:
        return await super().commit(view, updates)


def raw(offset: int, entity: str = "u") -> RawRecord:
    event = Event(event_id=f"e{offset}", entity=entity, ts=1_000 * (offset + 1), fields={})
    return RawRecord(event.to_json(), "events", 0, offset, entity.encode())


def counted(result: Any, entity: str = "u") -> int:
    """The lifetime count in ``entity``'s last record of the batch: the events applied before its event."""
    return int([r.features for r in result.records if r.entity == entity][-1]["count_lifetime"])


async def stored_count(store: MemoryStore, entity: str = "u") -> int:
    state = orjson.loads((await store.load(VIEW.name, [entity]))[entity].to_json())
    return int(state["q"])


def test_a_batch_that_began_before_two_rebalances_leaves_no_state_in_the_cache() -> None:
    async def body() -> None:
        store = GatedStore()
        a = FeaturePipeline([VIEW], store, cache_entities=1000)
        b = FeaturePipeline([VIEW], store, cache_entities=1000)
        await (await a.process([raw(0), raw(1)])).commit(store)
        # a's next batch: u from its cache, v's load slow
        store.gated = {"v"}
        late = asyncio.ensure_future(a.process([raw(2), raw(3, "v")]))
        await store.waiting.wait()
        a.invalidate()  # the partition goes to b
        store.gated = set()
        moved = await b.process([raw(2), raw(3, "v"), raw(4), raw(5)])
        assert counted(moved) == 4  # b: 0, 1 (stored), then 2, 4 before 5
        await moved.commit(store)
        a.invalidate()  # and back to a, which reads on from the committed offset, 6
        store.gate.set()
        old = await late
        assert counted(old) == 2  # the batch ends as it began, on the state it read before
        assert await old.commit(store) == 1  # u: b's stored position is further along (v: the same)
        after = await a.process([raw(6)])
        assert counted(after) == 5  # 0, 1, 2, 4, 5; before the fix: 3 (u at 2, cached by the late batch)
        await after.commit(store)
        assert await stored_count(store) == 6  # before the fix: 4 (b's events 4 and 5 overwritten)

    asyncio.run(body())


def test_a_state_pinned_by_a_commit_under_way_across_two_rebalances_is_not_applied_to_later_records() -> None:
    async def body() -> None:
        store = MemoryStore()
        a = FeaturePipeline([VIEW], store)  # no cache: only the pin keeps a's state
        b = FeaturePipeline([VIEW], store)
        await (await a.process([raw(0), raw(1)])).commit(store)
        slow = await a.process([raw(2)])  # its commit takes long
        a.invalidate()
        moved = await b.process([raw(2), raw(3), raw(4), raw(5)])
        await moved.commit(store)
        a.invalidate()
        after = await a.process([raw(6)])
        assert counted(after) == 6  # before the fix: 3 (u at offset 2, pinned by the slow commit)
        assert await slow.commit(store) == 1  # refused: b's position is further along
        await after.commit(store)
        assert await stored_count(store) == 7  # before the fix: 4 (b's events 3, 4, 5 overwritten)
        assert a._pins == {} and slow._pinned == []

    asyncio.run(body())


def test_a_batch_that_began_before_a_rebalance_still_counts_on_the_pins_of_its_own_epoch() -> None:
    """The batch before it is not committed yet: it reads that batch's pinned state, not the store's (the
    store does not have that batch yet), and pins nothing for the batches of the new epoch."""

    async def body() -> None:
        store = GatedStore()
        a = FeaturePipeline([VIEW], store, cache_entities=1000)
        first = await a.process([raw(0), raw(1)])  # not committed yet
        store.gated = {"v"}
        second = asyncio.ensure_future(a.process([raw(2), raw(3, "v")]))
        await store.waiting.wait()
        a.invalidate()
        store.gate.set()
        result = await second
        assert counted(result) == 2  # events 0 and 1, from the first batch's pin
        assert a._pins == {} and a._cache == {}  # nothing of the old epoch in the new one
        await first.commit(store)
        await result.commit(store)
        assert await stored_count(store) == 3
        fresh = await a.process([raw(4)])
        assert counted(fresh) == 3  # read from the store

    asyncio.run(body())
