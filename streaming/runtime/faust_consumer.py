"""Faust's Kafka consumer without its per-message tasks: the feature worker's hot path at 10,000 events/s.

For every message it reads, Faust's consumer hands the message to the app's callback through
``Service.wait_first(callback(message), suspend_flow.wait())``: four tasks (the callback, the flow's,
``stopped``'s, ``crashed``'s) and an ``asyncio.wait`` per message, so that a callback blocked on a full
stream buffer is abandoned when a rebalance suspends the flow. Almost every callback does not block (it
puts the message into a stream's queue with room in it), and profiles of the worker showed those tasks
as a tenth of its time.

:class:`Consumer` runs the first coroutine given to ``wait_first`` eagerly, as Python 3.12's eager tasks
do: up to its first suspension, on the caller's stack. One that finishes there is done, with no task (the
others given with it are closed unawaited: ``wait_first`` would have cancelled them). One that suspends
is driven on from where it stopped by :func:`resume` under Faust's own ``wait_first``, so a callback that
blocks behaves exactly as before: a suspended flow, a stop or a crash abandons it (it is cancelled where
it waits). Nothing else of Faust changes; :class:`App` is a ``faust.App`` whose transport makes this
consumer.

>>> import asyncio
>>> async def quick() -> int:
...     return 7
>>> async def slow(q: asyncio.Queue[int]) -> int:
...     return await q.get()
>>> async def demo() -> tuple[int, int]:
...     q: asyncio.Queue[int] = asyncio.Queue()
...     loop = asyncio.get_running_loop()
...     loop.call_later(0.01, q.put_nowait, 8)
...     coro = slow(q)
...     first = coro.send(None)  # suspends: the queue is empty
...     return await eager(quick()), await resume(coro, first)
>>> asyncio.run(demo())
(7, 8)
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

__all__ = ["App", "Consumer", "eager", "resume"]

_PENDING = object()


def _first_step(coro: Coroutine[Any, Any, Any]) -> tuple[Any, Any]:
    """``(value, _PENDING)`` when the coroutine finished in its first step, else ``(None, what it waits
    on)``; an exception it raises propagates."""
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        return stop.value, _PENDING
    return None, waiting


async def resume(coro: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    """Drive ``coro``, suspended on ``waiting`` (what its last step yielded: a future, or None for a bare
    yield), to its end as an asyncio task would; cancelled, it cancels what it waits on and throws
    ``CancelledError`` into the coroutine, as ``Task.cancel`` does."""
    while True:
        error: BaseException | None = None
        if waiting is not None:
            waiting._asyncio_future_blocking = False
            try:
                await asyncio.wait([waiting])
            except asyncio.CancelledError as exc:
                waiting.cancel()
                error = exc
        else:
            await asyncio.sleep(0)
        try:
            waiting = coro.throw(error) if error is not None else coro.send(None)
        except StopIteration as stop:
            return stop.value
        if error is not None:  # it caught the cancellation and waits again: end it here
            coro.close()
            raise error


async def eager(coro: Coroutine[Any, Any, Any]) -> Any:
    """Await ``coro``, running its first step at once (the same as ``await coro``; the doctest's helper)."""
    value, waiting = _first_step(coro)
    return value if waiting is _PENDING else await resume(coro, waiting)


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose ``wait_first`` runs its first coroutine eagerly (module docstring)."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        first = coros[0] if coros else None
        if not inspect.iscoroutine(first) or self._stopped.is_set() or self._crashed.is_set():
            return await super().wait_first(*coros, timeout=timeout)
        value, waiting = _first_step(first)
        if waiting is _PENDING:
            for other in coros[1:]:
                if inspect.iscoroutine(other):
                    other.close()  # never started: wait_first would have cancelled it
            return WaitResults([first], [value], False)
        return await super().wait_first(resume(first, waiting), *coros[1:], timeout=timeout)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class App(faust.App):
    """A ``faust.App`` whose consumer is :class:`Consumer` (brokers ``kafka://`` only)."""

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)
