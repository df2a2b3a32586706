"""The feature worker's inbox and batches (streaming.runtime.feature_batches): records put in bulk while a
batch is processed join the next batch, a batch holds at most ``max_events``, the consumer waits while the
inbox is full and gives up when the flow is suspended, and a rebalance's clear drops what waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from streaming.runtime.feature_batches import STRETCH, Inbox, batches, overlapped

pytestmark = pytest.mark.unit


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def test_records_put_while_a_batch_is_processed_join_the_next_batch() -> None:
    async def go() -> None:
        inbox, never = Inbox(100), asyncio.Event()
        assert await inbox.put([0, 1, 2], never)
        it = batches(inbox, 100, 0.01)
        assert await it.__anext__() == [0, 1, 2]
        assert await inbox.put([3, 4], never) and await inbox.put([5], never)  # while "processing"
        assert await it.__anext__() == [3, 4, 5]

    asyncio.run(go())


def test_a_batch_holds_at_most_max_events_in_order() -> None:
    async def go() -> None:
        inbox = Inbox(1000)
        await inbox.put(list(range(35)), asyncio.Event())
        it = batches(inbox, 10, 0.01)
        got = [await it.__anext__() for _ in range(4)]
        assert got == [list(range(10)), list(range(10, 20)), list(range(20, 30)), list(range(30, 35))]
        assert not inbox.queue and not inbox.arrived.is_set()

    asyncio.run(go())


def test_a_full_inbox_makes_the_consumer_wait_until_a_batch_is_taken() -> None:
    async def go() -> None:
        inbox, never = Inbox(4), asyncio.Event()
        assert await inbox.put(list(range(5)), never)  # a fetch may take it past its capacity once
        blocked = asyncio.ensure_future(inbox.put([5, 6], never))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not blocked.done() and list(inbox.queue) == list(range(5))
        assert inbox.take(3) == [0, 1, 2]  # room again: the waiting fetch goes in, after what was there
        assert await blocked is True
        assert list(inbox.queue) == [3, 4, 5, 6]

    asyncio.run(go())


@pytest.mark.parametrize("cleared", [False, True])
def test_a_fetch_waiting_for_room_is_dropped_when_the_flow_is_suspended(cleared: bool) -> None:
    """A rebalance: Faust seeks back to the committed offsets. ``cleared``: the worker is told in the same
    turn of the loop and clears its inbox at once (attack 15: the blocked fetch must not land in it then)."""

    async def go() -> None:
        inbox, suspended = Inbox(2), asyncio.Event()
        await inbox.put([0, 1], suspended)
        blocked = asyncio.ensure_future(inbox.put([2, 3], suspended))
        await asyncio.sleep(0)
        suspended.set()  # partitions revoked, the flow stopped
        if cleared:
            inbox.clear()
        assert await blocked is False
        assert list(inbox.queue) == ([] if cleared else [0, 1])
        assert inbox.arrived.is_set() is not cleared

    asyncio.run(go())


def test_clear_drops_what_waits_and_frees_the_consumer() -> None:
    async def go() -> None:
        inbox, never = Inbox(2), asyncio.Event()
        await inbox.put([0, 1, 2], never)
        blocked = asyncio.ensure_future(inbox.put([3], never))
        await asyncio.sleep(0)
        inbox.clear()
        assert await blocked is True and list(inbox.queue) == [3]
        assert await batches(inbox, 10, 0.001).__anext__() == [3]

    asyncio.run(go())


def test_a_batch_keeps_filling_while_records_keep_coming_up_to_the_stretch() -> None:
    async def go() -> None:
        inbox, never, within = Inbox(10_000), asyncio.Event(), 0.2
        await inbox.put([0], never)
        it = batches(inbox, 1000, within)
        first = asyncio.ensure_future(it.__anext__())

        async def trickle() -> None:  # a record every within/10, for ten times the stretch
            for i in range(1, 10 * STRETCH * 10):
                await asyncio.sleep(within / 10)
                await inbox.put([i], never)

        feeder = asyncio.ensure_future(trickle())
        batch = await first
        feeder.cancel()
        # more than one wait's worth joined (it kept filling), and it ended at the stretch, not the feed's end
        assert len(batch) > 5 and batch == list(range(len(batch))) and len(batch) < 10 * STRETCH * 10 - 1

    asyncio.run(go())


def test_a_batch_of_a_quiet_stream_is_not_kept_waiting_for_more() -> None:
    async def go() -> None:
        inbox = Inbox(100)
        await inbox.put([7, 8], asyncio.Event())
        assert await asyncio.wait_for(batches(inbox, 100, 0.01).__anext__(), 5) == [7, 8]

    asyncio.run(go())


async def _items(values: list[Any], gate: asyncio.Event | None = None) -> AsyncIterator[Any]:
    for v in values:
        yield v
    if gate is not None:
        await gate.wait()  # a stream with no further record for now


def test_a_batch_is_computed_while_the_previous_one_finishes_and_finishes_run_in_order() -> None:
    log: list[str] = []

    async def go() -> None:
        finishing = {i: asyncio.Event() for i in range(3)}

        async def compute(i: int) -> int:
            log.append(f"compute {i}")
            if i > 0:  # the previous finish has started and waits on Kafka/Redis: computing overlaps it
                assert log[-2] == f"finish {i - 1} begins"
                finishing[i - 1].set()
            return i * 10

        async def finish(i: int, out: int) -> None:
            log.append(f"finish {i} begins")
            await asyncio.sleep(0)
            if i < 2:
                await finishing[i].wait()
            log.append(f"finish {i} ends {out}")

        await overlapped(_items([0, 1, 2]), compute, finish)

    asyncio.run(go())
    assert log == [
        "compute 0",
        "finish 0 begins",
        "compute 1",
        "finish 0 ends 0",
        "finish 1 begins",
        "compute 2",
        "finish 1 ends 10",
        "finish 2 begins",
        "finish 2 ends 20",
    ]


def test_a_failed_finish_ends_the_run_at_once_even_when_no_further_batch_comes() -> None:
    async def go() -> list[int]:
        finished: list[int] = []

        async def compute(i: int) -> int:
            return i

        async def finish(i: int, out: int) -> None:
            if i == 1:
                raise ConnectionError("redis down")
            finished.append(i)

        with pytest.raises(ConnectionError, match="redis down"):  # the stream then stays silent forever
            await asyncio.wait_for(overlapped(_items([0, 1], asyncio.Event()), compute, finish), 10)
        return finished

    assert asyncio.run(go()) == [0]


def test_a_failed_compute_ends_the_run_and_nothing_after_it_is_finished() -> None:
    async def go() -> list[int]:
        finished: list[int] = []

        async def compute(i: int) -> int:
            if i == 1:
                raise ValueError("bug")
            return i

        async def finish(i: int, out: int) -> None:
            finished.append(i)

        with pytest.raises(ValueError, match="bug"):
            await overlapped(_items([0, 1, 2]), compute, finish)
        return finished

    assert asyncio.run(go()) in (
        [],
        [0],
    )  # the batch before may have finished (or been cancelled): never 1, 2
