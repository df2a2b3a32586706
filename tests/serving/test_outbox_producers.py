"""The API's outbox (serving.outbox) with producers that are not aiokafka's (the embedded log's kind, which
the outbox sends to record by record), hostile ones: every prediction ends published or counted unpublished,
once, and the outbox holds none afterwards."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serving.metrics import UNPUBLISHED
from serving.outbox import Outbox

pytestmark = pytest.mark.unit


class Log:
    """A producer that keeps what it is sent and gives a done future for each record."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.got.append(value)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(len(self.got))
        return future


class OneFuture(Log):
    """Gives one done future for every record it is sent (the protocol asks for a future that completes
    once the record is kept, not a new one each time)."""

    def __init__(self) -> None:
        super().__init__()
        self.future: asyncio.Future[int] | None = None

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.got.append(value)
        if self.future is None:
            self.future = asyncio.get_running_loop().create_future()
            self.future.set_result(0)
        return self.future


def unpublished(model: str) -> float:
    return float(UNPUBLISHED.labels(model)._value.get())


def _sent(producer: Log, model: str, n: int) -> tuple[int, float, int]:
    """``n`` predictions sent at once through a new outbox to ``producer``: (how many the outbox holds once
    they are all settled, how many were counted unpublished, how many the drain counted)."""
    before = unpublished(model)

    async def go() -> tuple[int, int]:
        outbox = Outbox(linger_s=0.001)
        for i in range(n):
            outbox.send(producer, "predictions", b"%d" % i, b"entity", model)
        for _ in range(100):
            await asyncio.sleep(0.01)
        return outbox.held, await outbox.drain(1)

    held, drained = asyncio.run(go())
    return held, unpublished(model) - before, drained


def test_a_producer_that_gives_one_future_for_many_records_releases_the_outbox() -> None:
    """Before: the outbox kept its records in flight by their delivery future, so a second record given the
    same future replaced the first's entry: 9 of 10 predictions, kept by the producer, stayed held for
    ever, neither published nor counted (held never returned to 0, and the limit came nearer)."""
    producer = OneFuture()
    assert _sent(producer, "one-future-model", 10) == (0, 0.0, 0)
    assert producer.got == [b"%d" % i for i in range(10)]


class RefusesThird(Log):
    """Refuses its third record (raises), keeps the others."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.calls += 1
        if self.calls == 3:
            raise ValueError("refused")
        return await super().send(topic, value, key)


def test_a_record_the_producer_refuses_is_counted_and_the_next_ones_are_sent() -> None:
    """Before: a send that raised ended its flush, and the records after it were counted unpublished
    without being sent (7 of 10 here), where each had had a send of its own before the outbox batched
    them. Now the refused record is counted, and the others are kept by the producer."""
    producer = RefusesThird()
    assert _sent(producer, "refused-model", 10) == (0, 1.0, 0)
    assert producer.got == [b"%d" % i for i in range(10) if i != 2]
