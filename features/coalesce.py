"""Single-key reads issued in one turn of the event loop, sent as one call.

Under concurrent requests (an API with several connections), each request reads one entity's vector, and
several requests reach that read in the same iteration of the event loop. :class:`Coalescer` gathers the
keys asked in one iteration and sends them after it as one call of ``many(keys)`` (one Redis command
instead of one per request: the client's work per command, packing, the connection pool, parsing the
reply, is paid once); a key asked alone is sent with ``one(key)``, as without it.

Each caller waits on a future of its own, so:

- an exception raised by the call is raised to every caller of the batch;
- a caller cancelled while it waits (its client gone) cancels its own future only: the others get their
  answers, and a key whose callers are all gone before the call is sent is not sent;
- nothing waits forever: if the call itself is cancelled (the loop closing), every caller still waiting is
  cancelled too.

The first caller of a batch yields once (``asyncio.sleep(0)``): the coroutines already scheduled in this
iteration run before it resumes (they are ahead of it in the loop's queue), so each of them can add its
key. Alone then, it reads its key itself, as without coalescing (no task, no future: a lone request pays
one turn of the loop, nothing more); else the batch is sent by a task of its own. A batch holds at most
``max_keys`` keys; the next key starts another one.

>>> import asyncio
>>> calls = []
>>> async def one(key):
...     calls.append([key])
...     return key.upper()
>>> async def many(keys):
...     calls.append(keys)
...     return [k.upper() for k in keys]
>>> async def demo():
...     reads = Coalescer(one, many)
...     together = await asyncio.gather(reads("a"), reads("b"), reads("c"))
...     return together, await reads("d")
>>> asyncio.run(demo()), calls
((['A', 'B', 'C'], 'D'), [['a', 'b', 'c'], ['d']])
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["MAX_KEYS", "Coalescer"]

K = TypeVar("K")
R = TypeVar("R")
MAX_KEYS = 128  # keys in one call at most (a Redis script runs alone: not too many at once)


class _Batch(Generic[K, R]):
    """The keys that joined a first caller's key in its turn, and the futures their callers wait on."""

    __slots__ = ("futures", "keys", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.keys: list[K] = []
        self.futures: list[asyncio.Future[R]] = []


class Coalescer(Generic[K, R]):
    """``await coalescer(key)``: ``one(key)``'s answer, read with the other keys asked in the same turn of
    the event loop by one ``many(keys)`` call (which answers each key in order)."""

    def __init__(
        self,
        one: Callable[[K], Awaitable[R]],
        many: Callable[[list[K]], Awaitable[list[R]]],
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._one = one
        self._many = many
        self._max = max_keys
        self._open: _Batch[K, R] | None = None
        self._sending: set[asyncio.Task[None]] = set()  # the sends in flight (a task must be referenced)
        self.calls = 0  # calls sent (one or many), and the keys they carried: for tests and measurements
        self.keys = 0

    async def __call__(self, key: K) -> R:
        loop = asyncio.get_running_loop()
        batch = self._open
        # (a batch of another loop: that loop stopped before sending it)
        if batch is not None and batch.loop is loop and len(batch.keys) < self._max - 1:
            future: asyncio.Future[R] = loop.create_future()
            batch.keys.append(key)
            batch.futures.append(future)
            return await future
        # the first key: its caller lets the callers already scheduled in this turn join, then sends
        batch = self._open = _Batch(loop)
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._close(batch)
            self._spawn(loop, batch.keys, batch.futures)  # the others are still answered
            raise
        self._close(batch)
        if not batch.keys:  # alone: read in this caller's own task, with no future nor task to make
            self.calls += 1
            self.keys += 1
            return await self._one(key)
        future = loop.create_future()
        self._spawn(loop, [key, *batch.keys], [future, *batch.futures])
        return await future

    def _close(self, batch: _Batch[K, R]) -> None:
        if self._open is batch:
            self._open = None  # a key asked from here on starts the next batch

    def _spawn(
        self, loop: asyncio.AbstractEventLoop, keys: list[K], futures: list[asyncio.Future[R]]
    ) -> None:
        """Send ``keys`` in a task of its own: a caller cancelled (its client gone) must not cancel the call
        the others wait on (redis-py drops a connection whose command is cancelled mid-reply)."""
        if all(future.done() for future in futures):
            return
        task = loop.create_task(self._send(keys, futures))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, keys: list[K], futures: list[asyncio.Future[R]]) -> None:
        live = [i for i, future in enumerate(futures) if not future.done()]  # not cancelled
        if not live:
            return
        keys = [keys[i] for i in live]
        futures = [futures[i] for i in live]
        self.calls += 1
        self.keys += len(keys)
        try:
            replies = [await self._one(keys[0])] if len(keys) == 1 else await self._many(keys)
            if len(replies) != len(keys):
                raise ValueError(f"{len(replies)} answers to {len(keys)} keys")
            for future, reply in zip(futures, replies, strict=True):
                if not future.done():
                    future.set_result(reply)
        except Exception as exc:  # the caller's to handle, each of them: this task ends quietly
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        finally:
            for future in futures:  # the send cancelled (or a BaseException): no caller waits forever
                if not future.done():
                    future.cancel()
