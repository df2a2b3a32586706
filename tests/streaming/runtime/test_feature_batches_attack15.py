"""Attack on the inbox (streaming.runtime.feature_batches, attack 15): a fetch waiting for room when a
rebalance begins.

Faust stops the flow (the consumer's ``suspend_flow`` is set) and then, without giving the loop a turn,
sends the revocation to the worker, which clears the inbox: the waiting ``put`` saw room when it resumed
and put the old fetch in the cleared inbox. Seen in workers going through rebalances with small batches:
4,648 such records put after the clear, a batch of them processed before the records read again from the
committed offsets, of lower offsets, and those skipped as redelivered by the entities already past them:
events with no feature record and missing from Redis
(tests/streaming/runtime/test_feature_worker_attack15.py).
"""

from __future__ import annotations

import asyncio

import pytest

from streaming.runtime.feature_batches import Inbox

pytestmark = pytest.mark.unit


def test_a_fetch_waiting_for_room_is_dropped_when_the_flow_stops_and_the_inbox_is_cleared_at_once() -> None:
    async def go() -> None:
        inbox, suspended = Inbox(2), asyncio.Event()
        await inbox.put([0, 1], suspended)
        blocked = asyncio.ensure_future(inbox.put([2, 3], suspended))
        await asyncio.sleep(0)
        suspended.set()  # a rebalance: partitions revoked, the flow stopped ...
        inbox.clear()  # ... and the worker told, in the same turn of the loop
        assert await blocked is False
        assert list(inbox.queue) == [] and not inbox.arrived.is_set()

    asyncio.run(go())


def test_a_fetch_put_while_the_flow_is_stopped_is_dropped_even_with_room() -> None:
    async def go() -> None:
        inbox, suspended = Inbox(10), asyncio.Event()
        suspended.set()
        assert await inbox.put([0, 1], suspended) is False
        assert list(inbox.queue) == []
        suspended.clear()  # the flow resumed (after Faust's seek back to the committed offsets)
        assert await inbox.put([0, 1], suspended) is True
        assert list(inbox.queue) == [0, 1]

    asyncio.run(go())
