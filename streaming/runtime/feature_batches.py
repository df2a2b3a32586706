"""Batches of a Faust stream's events that keep filling while the previous batch is processed.

Faust's ``Stream.take_events(max, within)`` stops reading while its caller processes a batch (its buffer
is closed until the caller asks for the next one) and then waits ``within`` for the next batch to fill.
The feature worker spends most of a batch's time waiting for Kafka's acknowledgements and Redis's reply:
with ``take_events`` nothing was read meanwhile, every batch took ``within`` (5 ms) to gather about 70
events, and the fixed cost of publishing and committing (about 12 ms a batch) was paid every 70 events.

:func:`batches` reads the stream in a task of its own into a queue of at most ``max_events`` events, so
the records that arrive while a batch is published and committed are read meanwhile (Faust's per-message
work overlaps the round trips) and join the next batch, which then fills while events keep coming: until
it is full, or no event came for ``within``, or ``STRETCH`` times ``within`` passed. (Taken at once,
without a wait, batches shrank to about 10 events: a small batch is committed quickly, so little arrives
meanwhile, and the per-batch costs dominated.)

Acknowledgements are the caller's contract (the feature worker's module docstring, point 5): a batch's
events are acknowledged when the caller asks for the next batch, that is after the batch's Redis commit,
and never when the caller's processing raised (Faust's ``take_events`` acknowledged them on the way out
of a failed batch, and its consumer could commit them as the process stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["STRETCH", "batches"]

# the longest a batch waits to fill, in ``within``s (the worker's RIVULET_FEATURES_BATCH_WAIT_MS, 2 ms: 8 ms)
STRETCH = 4


async def batches(stream: Any, max_events: int, within_s: float) -> AsyncIterator[list[Any]]:
    """Lists of at most ``max_events`` events of ``stream`` (a Faust stream: ``events()``, ``ack()``,
    ``enable_acks``); each list is acknowledged when the next one is asked for. Ends when the stream
    ends; an error reading the stream is raised here."""
    queue: deque[Any] = deque()
    arrived, full, room = asyncio.Event(), asyncio.Event(), asyncio.Event()
    room.set()
    stream.enable_acks = False  # acknowledged below, once the caller is done with the batch

    async def pump() -> None:
        async for event in stream.events():
            queue.append(event)
            arrived.set()
            if len(queue) >= max_events:
                full.set()
                room.clear()
                await room.wait()

    reader = asyncio.ensure_future(pump())
    try:
        while True:
            if not queue and not await _until(arrived, reader):
                return
            await _fill(queue, full, max_events, within_s)
            batch = [queue.popleft() for _ in range(min(len(queue), max_events))]
            if not queue:
                arrived.clear()
            full.clear()
            room.set()
            yield batch
            for event in batch:  # the caller asked for more: this batch is committed
                await stream.ack(event)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _fill(queue: deque[Any], full: asyncio.Event, max_events: int, within_s: float) -> None:
    """Wait until the batch is full, or no event came for ``within_s``, or ``STRETCH`` times ``within_s``
    passed: a busy stream makes large batches (what a batch costs besides its events, about 6 ms here, is
    paid less often), a quiet one is not kept waiting."""
    loop = asyncio.get_running_loop()
    until = loop.time() + STRETCH * within_s
    while len(queue) < max_events:
        before = len(queue)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(full.wait(), min(within_s, until - loop.time()))
        if len(queue) == before or loop.time() >= until:
            return


async def _until(arrived: asyncio.Event, reader: asyncio.Future[Any]) -> bool:
    """Wait for an event to arrive; False when the stream ended first (its error raised)."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(arrived.wait())
    try:
        await asyncio.wait([waiter, reader], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if arrived.is_set():
        return True
    reader.result()  # raises the reader's error, if any
    return False
