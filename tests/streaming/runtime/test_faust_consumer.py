"""The eager first step of the feature worker's consumer (streaming.runtime.faust_consumer): a coroutine
that does not suspend runs with no task; one that suspends is driven on exactly as a task would, and a
cancellation reaches it where it waits."""

from __future__ import annotations

import asyncio

import pytest

from streaming.runtime.faust_consumer import App, Consumer, Transport, eager, resume

pytestmark = pytest.mark.unit


def test_a_coroutine_that_does_not_suspend_runs_without_a_task() -> None:
    tasks: list[int] = []

    async def put(q: asyncio.Queue[int]) -> str:
        tasks.append(len(asyncio.all_tasks()))
        q.put_nowait(1)
        return "done"

    async def main() -> tuple[str, int, int]:
        q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        before = len(asyncio.all_tasks())
        result = await eager(put(q))
        return result, before, tasks[0]

    result, before, during = asyncio.run(main())
    assert result == "done" and during == before  # ran on the caller's stack: no task was made


def test_a_suspended_coroutine_is_resumed_in_order_with_its_results_and_errors() -> None:
    async def steps(q: asyncio.Queue[int]) -> list[int]:
        got = [await q.get()]
        await asyncio.sleep(0)  # a bare yield
        got.append(await q.get())
        if got == [1, 2]:
            raise ValueError("after two")
        return got

    async def main() -> None:
        q: asyncio.Queue[int] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, q.put_nowait, 1)
        loop.call_later(0.02, q.put_nowait, 2)
        with pytest.raises(ValueError, match="after two"):
            await eager(steps(q))
        loop.call_later(0.01, q.put_nowait, 3)
        q.put_nowait(4)
        assert await eager(steps(q)) == [4, 3]

    asyncio.run(main())


def test_a_cancelled_resume_cancels_the_coroutine_where_it_waits() -> None:
    cleaned: list[str] = []

    async def blocked(q: asyncio.Queue[int]) -> None:
        try:
            await q.put(2)  # the queue is full: waits
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise

    async def main() -> asyncio.Queue[int]:
        q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        q.put_nowait(1)
        coro = blocked(q)
        waiting = coro.send(None)
        task = asyncio.ensure_future(resume(coro, waiting))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return q

    q = asyncio.run(main())
    assert cleaned == ["cancelled"]
    assert q.qsize() == 1 and not q._putters  # type: ignore[attr-defined]  # nothing left behind


def test_the_app_makes_the_eager_consumer() -> None:
    app = App("rivulet-test-eager", broker="kafka://127.0.0.1:9092")
    assert isinstance(app.transport, Transport) and Transport.Consumer is Consumer
