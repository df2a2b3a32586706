"""features.coalesce.Coalescer without Redis: which keys go in which call, and what each caller gets when a
call fails, a caller is cancelled, or the call itself is cancelled (the same on real Redis:
tests/features/test_coalesced_reads.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from features.coalesce import Coalescer

pytestmark = pytest.mark.unit

HANG_S = 30.0  # a bound on a wait that must end (a wrong implementation hangs): not a speed assertion


class Recorded:
    """``one`` and ``many`` that answer each key upper-cased and record their calls; ``gate``, when set,
    holds every call until it is set (a call in flight), ``error`` is raised instead of answering."""

    def __init__(self, error: Exception | None = None, short: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.error = error
        self.short = short  # many() answers one key too few
        self.gate: asyncio.Event | None = None
        self.entered = 0

    async def _answer(self, keys: list[str]) -> list[str]:
        self.calls.append(keys)
        self.entered += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return [k.upper() for k in keys][: len(keys) - 1 if self.short else None]

    async def one(self, key: str) -> str:
        return (await self._answer([key]))[0]

    async def many(self, keys: list[str]) -> list[str]:
        return await self._answer(keys)


def quiet_loop_run(main: Any) -> Any:
    """``asyncio.run(main)``, failing if the loop reported an unhandled error (a task's exception never
    retrieved, a future's)."""
    reported: list[dict[str, Any]] = []

    async def go() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
        return await asyncio.wait_for(main(), HANG_S)

    out = asyncio.run(go())
    assert reported == []
    return out


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_keys_asked_in_one_turn_go_in_one_call_in_their_order_and_a_lone_key_alone() -> None:
    rec = Recorded()
    reads = Coalescer(rec.one, rec.many)

    async def main() -> tuple[list[str], list[str], str]:
        first = await asyncio.gather(*(reads(k) for k in "abcde"))
        second = await asyncio.gather(reads("x"), reads("a"), reads("x"))  # a key twice: answered twice
        return first, second, await reads("z")

    assert quiet_loop_run(main) == (list("ABCDE"), ["X", "A", "X"], "Z")
    assert rec.calls == [list("abcde"), ["x", "a", "x"], ["z"]]
    assert (reads.calls, reads.keys) == (3, 9)


def test_a_batch_holds_at_most_max_keys() -> None:
    rec = Recorded()
    reads = Coalescer(rec.one, rec.many, max_keys=4)
    keys = [f"k{i}" for i in range(10)]
    assert quiet_loop_run(lambda: asyncio.gather(*map(reads, keys))) == [k.upper() for k in keys]
    assert rec.calls == [keys[:4], keys[4:8], keys[8:]]


@pytest.mark.parametrize("short", [False, True], ids=["raised", "answers-missing"])
def test_a_failed_call_raises_to_every_caller_of_its_batch_and_the_next_batch_is_sent(short: bool) -> None:
    error = ConnectionError("Connection closed by server.")
    rec = Recorded(error=None if short else error, short=short)
    reads = Coalescer(rec.one, rec.many)

    async def main() -> tuple[list[Any], list[str]]:
        failed = await asyncio.gather(*(reads(k) for k in "abc"), return_exceptions=True)
        rec.error, rec.short = None, False
        return failed, await asyncio.gather(reads("d"), reads("e"))

    failed, after = quiet_loop_run(main)
    if short:
        assert all(isinstance(e, ValueError) and "2 answers to 3 keys" in str(e) for e in failed)
    else:
        assert failed == [error] * 3 and all(e is error for e in failed)
    assert after == ["D", "E"]


def test_a_caller_cancelled_before_the_send_is_left_out_and_the_others_answered() -> None:
    rec = Recorded()
    reads = Coalescer(rec.one, rec.many)

    async def main() -> list[Any]:
        tasks = [asyncio.create_task(reads(k)) for k in "abcd"]
        await asyncio.sleep(0)  # each has asked its key; the batch is not sent yet
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    out = quiet_loop_run(main)
    assert out[0] == "A" and isinstance(out[1], asyncio.CancelledError) and out[2:] == ["C", "D"]
    assert rec.calls == [["a", "c", "d"]]


def test_the_first_caller_cancelled_in_its_turn_leaves_the_others_their_batch() -> None:
    rec = Recorded()
    reads = Coalescer(rec.one, rec.many)

    async def main() -> list[Any]:
        tasks = [asyncio.create_task(reads(k)) for k in "abc"]
        await asyncio.sleep(0)  # "a" waits for the others to join; "b" and "c" have
        tasks[0].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    out = quiet_loop_run(main)
    assert isinstance(out[0], asyncio.CancelledError) and out[1:] == ["B", "C"]
    assert rec.calls == [["b", "c"]]


def test_callers_all_cancelled_before_the_send_send_nothing() -> None:
    rec = Recorded()
    reads = Coalescer(rec.one, rec.many)

    async def main() -> str:
        tasks = [asyncio.create_task(reads(k)) for k in "ab"]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return await reads("c")

    assert quiet_loop_run(main) == "C"
    assert rec.calls == [["c"]] and reads.calls == 1


@pytest.mark.parametrize("error", [None, ConnectionError("reset")], ids=["answered", "failed"])
def test_a_caller_cancelled_while_the_call_is_in_flight_leaves_the_others_their_answers(
    error: Exception | None,
) -> None:
    rec = Recorded(error=error)
    reads = Coalescer(rec.one, rec.many)

    async def main() -> list[Any]:
        rec.gate = asyncio.Event()
        tasks = [asyncio.create_task(reads(k)) for k in "abc"]
        while rec.entered == 0:
            await asyncio.sleep(0)
        tasks[0].cancel()
        await turns()
        rec.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    out = quiet_loop_run(main)
    assert isinstance(out[0], asyncio.CancelledError)
    assert out[1:] == (["B", "C"] if error is None else [error, error])
    assert rec.calls == [["a", "b", "c"]]


def test_a_cancelled_send_cancels_every_caller_still_waiting() -> None:
    """The loop closing (asyncio.run's end cancels every task) or anyone cancelling the send: no caller is
    left waiting on a future nobody will set."""
    rec = Recorded()
    reads = Coalescer(rec.one, rec.many)

    async def main() -> list[Any]:
        rec.gate = asyncio.Event()  # never set: the call hangs
        callers = [asyncio.create_task(reads(k)) for k in "ab"]
        while rec.entered == 0:
            await asyncio.sleep(0)
        (send,) = (t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "Coalescer._send")
        send.cancel()
        return await asyncio.gather(*callers, return_exceptions=True)

    out = quiet_loop_run(main)
    assert [type(e) for e in out] == [asyncio.CancelledError] * 2


def test_a_batch_left_by_a_loop_that_stopped_does_not_hold_the_next_loops_keys() -> None:
    rec = Recorded()
    reads = Coalescer(rec.one, rec.many)
    loop = asyncio.new_event_loop()
    try:
        caller = loop.create_task(reads("a"))
        loop.call_soon(loop.stop)
        loop.run_forever()  # one turn: the caller opened a batch; the loop stopped before sending it
        pending = asyncio.all_tasks(loop)
        assert caller in pending
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    finally:
        loop.close()
    assert rec.calls == []
    assert quiet_loop_run(lambda: asyncio.gather(reads("b"), reads("c"))) == ["B", "C"]
    assert rec.calls == [["b", "c"]]
