"""Attack on the inbox (streaming.runtime.feature_batches, attack 15): a fetch waiting for room when a
rebalance begins.

Faust stops the flow (the consumer's ``suspend_flow`` is set) and then, without giving the loop a turn,
sends the revocation to the worker, which clears the inbox: the waiting ``put`` saw room when it resumed
and put the old fetch in the cleared inbox. Seen in workers going through rebalances with small batches:
4,648 such records put after the clear, a batch of them processed before the records read again from the
committed offsets, of lower offsets, and those skipped as redelivered by the entities already past them:
events with no feature record and missing from Redis
(tests/streaming/runtime/test_feature_worker_attack15.py). The fetch waiting for room when the inbox is
cleared is the ``cleared`` case of test_feature_batches.py's suspended-flow test.
"""

from __future__ import annotations

import asyncio

import pytest

from streaming.runtime.feature_batches import Inbox

pytestmark = pytest.mark.unit


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
