"""The feature worker's records, handed over in bulk by Kafka's consumer and read in batches that keep
filling while the previous batch is processed.

The consumer (:mod:`streaming.runtime.faust_bulk`) puts each fetch's records of a topic into that topic's
:class:`Inbox` in one call; the worker's agent reads them with :func:`batches`. The records that arrive
while a batch is published and committed wait in the inbox and join the next batch, which then fills while
records keep coming: until it is full, or none came for ``within``, or ``STRETCH`` times ``within``
passed. (Taken at once, without a wait, batches shrank to about 10 events: a small batch is committed
quickly, so little arrives meanwhile, and the per-batch costs dominated.) An inbox holding ``capacity``
records makes the consumer wait before it puts more (it stops fetching: Kafka keeps the rest).

Acknowledgements are the caller's (the feature worker's module docstring, point 5): a batch is acknowledged
once its Redis commit is done, never when its processing raised.

:func:`overlapped` runs the worker's two halves of a batch: computing it (CPU: the engine) and finishing it
(publishing, committing, acknowledging: mostly waiting on Kafka and Redis, which run on the machine's other
core) so that a batch is computed while the previous one finishes. Finishes run one at a time, in order,
and the first error of either half ends the run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

__all__ = ["STRETCH", "Inbox", "batches", "overlapped"]

T = TypeVar("T")
R = TypeVar("R")

# the longest a batch waits to fill, in ``within``s (the worker's RIVULET_FEATURES_BATCH_WAIT_MS, 2 ms: 8 ms)
STRETCH = 4


class Inbox:
    """Records put in bulk by the consumer, taken in batches by one reader."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.queue: deque[Any] = deque()
        self.arrived = asyncio.Event()  # the queue is not empty
        self.grown = asyncio.Event()  # records were put since the reader last looked
        self.room = asyncio.Event()  # the queue holds less than capacity
        self.room.set()

    async def put(self, records: Sequence[Any], abandon: Any) -> bool:
        """Add ``records`` once there is room; False (nothing added) when ``abandon`` (an event with
        ``is_set()`` and an awaitable ``wait()``: the consumer's suspended flow) is set, before or while it
        waits. Those records are a fetch of before a rebalance, which Faust reads again from the committed
        offsets; the rebalance's clear makes room, and records put then were processed before the records
        read again, of lower offsets: an entity further along skipped those as redelivered (lost)."""
        if not self.room.is_set() and not abandon.is_set():
            room = asyncio.ensure_future(self.room.wait())
            stop = asyncio.ensure_future(abandon.wait())
            try:
                await asyncio.wait([room, stop], return_when=asyncio.FIRST_COMPLETED)
            finally:
                room.cancel()
                stop.cancel()
        if abandon.is_set() or not self.room.is_set():
            return False
        self.queue.extend(records)
        if self.queue:
            self.arrived.set()
            self.grown.set()
        if len(self.queue) >= self.capacity:
            self.room.clear()
        return True

    def take(self, n: int) -> list[Any]:
        """Up to ``n`` records, oldest first."""
        q = self.queue
        out = [q.popleft() for _ in range(min(n, len(q)))]
        if not q:
            self.arrived.clear()
        if len(q) < self.capacity:
            self.room.set()
        return out

    def clear(self) -> None:
        """Drop what is waiting (a rebalance: the consumer reads it again from the committed offsets)."""
        self.queue.clear()
        self.arrived.clear()
        self.room.set()


async def batches(inbox: Inbox, max_events: int, within_s: float) -> AsyncIterator[list[Any]]:
    """Lists of at most ``max_events`` records of ``inbox``, forever."""
    while True:
        if not inbox.queue:
            await inbox.arrived.wait()
        await _fill(inbox, max_events, within_s)
        batch = inbox.take(max_events)
        if batch:
            yield batch


async def _fill(inbox: Inbox, max_events: int, within_s: float) -> None:
    """Wait until the batch is full, or no record came for ``within_s``, or ``STRETCH`` times ``within_s``
    passed: a busy stream makes large batches (what a batch costs besides its records, about 6 ms here, is
    paid less often), a quiet one is not kept waiting."""
    loop = asyncio.get_running_loop()
    until = loop.time() + STRETCH * within_s
    while len(inbox.queue) < max_events:
        inbox.grown.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inbox.grown.wait(), min(within_s, until - loop.time()))
        if not inbox.grown.is_set() or loop.time() >= until:
            return


async def overlapped(
    items: AsyncIterator[T],
    compute: Callable[[T], Awaitable[R]],
    finish: Callable[[T, R], Awaitable[None]],
) -> None:
    """For each item of ``items``: ``out = await compute(item)``, then ``finish(item, out)`` in the
    background while the next item is awaited and computed. One finish at a time, in the items' order (the
    next waits for the previous before it starts); an error of either ends the run at once, raised here
    (a finish's too, without waiting for another item), and what is still running is cancelled. Returns
    when ``items`` ends and the last finish is done."""
    pending: asyncio.Future[Any] | None = None
    upcoming: asyncio.Future[Any] | None = None
    try:
        while True:
            upcoming = asyncio.ensure_future(anext(items))
            if pending is not None:
                await asyncio.wait([upcoming, pending], return_when=asyncio.FIRST_COMPLETED)
                if pending.done():
                    pending.result()  # its error ends the run, now
                    pending = None
            try:
                item = await upcoming
            except StopAsyncIteration:
                break
            out = await compute(item)
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(finish(item, out))
        if pending is not None:
            await pending
    finally:
        for future in (upcoming, pending):
            if future is not None and not future.done():
                future.cancel()
                with contextlib.suppress(BaseException):
                    await future
