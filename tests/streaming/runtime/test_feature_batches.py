"""The feature worker's batches (streaming.runtime.feature_batches) over a stand-in for a Faust stream:
reading goes on while a batch is processed, a batch is acknowledged only when the next is asked for,
never after a failure, and the stream's end or error reaches the caller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from streaming.runtime.feature_batches import batches

pytestmark = pytest.mark.unit


class Stream:
    """What ``batches`` uses of a Faust stream: ``events()``, ``ack()`` and ``enable_acks``. Events are
    put in by the test; ``None`` ends the stream, an exception is raised by it."""

    def __init__(self) -> None:
        self.enable_acks = True
        self.incoming: asyncio.Queue[Any] = asyncio.Queue()
        self.read: list[Any] = []
        self.acked: list[Any] = []

    async def events(self) -> AsyncIterator[Any]:
        while True:
            item = await self.incoming.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            self.read.append(item)
            yield item

    async def ack(self, event: Any) -> bool:
        self.acked.append(event)
        return True

    def put(self, *items: Any) -> None:
        for item in items:
            self.incoming.put_nowait(item)


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def test_events_are_read_while_a_batch_is_processed_and_acked_only_when_the_next_is_asked_for() -> None:
    async def go() -> None:
        stream = Stream()
        stream.put(*range(3))
        it = batches(stream, 100, 0.01)
        first = await it.__anext__()
        assert first == [0, 1, 2] and stream.enable_acks is False
        stream.put(*range(3, 8))  # arrive while the caller "processes" the first batch
        await until(lambda: len(stream.read) == 8)  # read meanwhile, not when the caller asks again
        assert stream.acked == []  # the first batch is not committed yet
        second = await it.__anext__()
        assert stream.acked == [0, 1, 2] and second == [3, 4, 5, 6, 7]
        stream.put(None)
        assert [b async for b in it] == []  # the end of the stream ends the batches...
        assert stream.acked == list(range(8))  # ...and the last batch was acked when more was asked for

    asyncio.run(go())


def test_a_batch_holds_at_most_max_events_and_the_reader_stays_at_most_max_ahead() -> None:
    async def go() -> None:
        stream = Stream()
        stream.put(*range(35))
        it = batches(stream, 10, 0.01)
        first = await it.__anext__()
        await until(lambda: len(stream.read) >= 20)
        for _ in range(20):  # the reader, given every chance, reads one batch ahead and then waits
            await asyncio.sleep(0)
        assert first == list(range(10)) and len(stream.read) == 20
        stream.put(None)
        rest = [b async for b in it]
        assert rest == [list(range(10, 20)), list(range(20, 30)), list(range(30, 35))]
        assert stream.acked == list(range(35))

    asyncio.run(go())


def test_a_batch_whose_processing_failed_is_not_acknowledged() -> None:
    async def go() -> None:
        stream = Stream()
        stream.put(*range(4))
        seen = []

        async def process() -> None:
            async for batch in batches(stream, 100, 0.01):
                seen.append(batch)
                raise RuntimeError("redis down")

        with pytest.raises(RuntimeError, match="redis down"):
            await process()
        assert seen == [[0, 1, 2, 3]]
        assert stream.acked == []  # Faust's take_events acked them on the way out

    asyncio.run(go())


def test_an_error_reading_the_stream_reaches_the_caller_after_what_was_read() -> None:
    async def go() -> None:
        stream = Stream()
        stream.put(1, 2, OSError("broker gone"))
        got = []

        async def process() -> None:
            async for batch in batches(stream, 100, 0.01):
                got.append(batch)

        with pytest.raises(OSError, match="broker gone"):
            await process()
        assert got == [[1, 2]] and stream.acked == [1, 2]

    asyncio.run(go())
