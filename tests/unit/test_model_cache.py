"""The API's model follower stops when asked, even when a cancellation is swallowed on the way.

redis-py's ``get_message(timeout=...)`` runs under a timeout context, and a cancellation that meets the
timeout can come out as a ``TimeoutError`` (an ``OSError``), which the follower treats as "Redis away, try
again". This is the loop's own logic, tested with a pub/sub stand-in that does exactly that; the follower
against real Redis is covered by the serving integration tests."""

from __future__ import annotations

import asyncio
from typing import Any

import redis

from serving.models import ModelCache
from streaming.learning.keys import Keyring, generate
from streaming.learning.registry import ModelRegistry


class SwallowingPubSub:
    """Turns every cancellation into a TimeoutError, as a timeout context racing it can."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    async def subscribe(self, *_: Any) -> None:
        return None

    async def get_message(self, timeout: float) -> None:
        self.calls += 1
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            raise TimeoutError from None
        return None

    async def aclose(self) -> None:
        self.closed = True


class Client:
    def __init__(self) -> None:
        self.ps = SwallowingPubSub()

    def pubsub(self, **_: Any) -> SwallowingPubSub:
        return self.ps


def test_stop_ends_the_follower_although_the_cancellation_is_swallowed() -> None:
    # never contacted: no refresh is due
    registry = ModelRegistry(redis.Redis(), "test:", keyring=Keyring.of(generate().public))
    cache = ModelCache(registry, {})
    client = Client()

    async def main() -> None:
        cache.start(poll_s=3600.0, client=client)  # type: ignore[arg-type]
        while client.ps.calls == 0:
            await asyncio.sleep(0)
        await asyncio.wait_for(cache.stop(), timeout=60)  # a regression fails here instead of hanging
        assert cache._task is not None and cache._task.done()

    asyncio.run(main())
    assert client.ps.closed
