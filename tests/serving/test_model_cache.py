"""The API's model follower stops when asked, even when a cancellation is swallowed on the way.

redis-py's ``get_message(timeout=...)`` runs under a timeout context, and a cancellation that meets the
timeout can come out as a ``TimeoutError`` (an ``OSError``), which the follower treats as "Redis away, try
again". This is the loop's own logic, tested with a pub/sub stand-in that does exactly that; the follower
against real Redis is covered by the serving integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from serving.models import ModelCache
from streaming.learning.keys import Keyring, generate
from streaming.learning.registry import RedisRegistry

pytestmark = pytest.mark.unit


async def until(done: Callable[[], bool], what: str, within_s: float = 30.0) -> None:
    """Let the event loop run until ``done()``; past the deadline, fail saying ``what``."""
    deadline = time.monotonic() + within_s
    while not done():
        assert time.monotonic() < deadline, f"{what} within {within_s:g} s"
        await asyncio.sleep(0.01)


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
    registry = RedisRegistry(redis.Redis(), "test:", keyring=Keyring.of(generate().public))
    cache = ModelCache(registry, {})
    client = Client()

    async def main() -> None:
        cache.start(poll_s=3600.0, client=client)  # type: ignore[arg-type]
        await until(lambda: client.ps.calls > 0, "the follower did not listen")
        await asyncio.wait_for(cache.stop(), timeout=60)  # a regression fails here instead of hanging
        assert cache._task is not None and cache._task.done()

    asyncio.run(main())
    assert client.ps.closed


class FlakyPubSub:
    """Redis stalled at start: ``subscribe`` times out ``failures`` times; then one bad message, one
    announcement that is not a JSON object, and one good announcement."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.subscribes = 0
        self.messages: list[dict[str, Any]] = [
            {"data": b"{not json"},
            {"data": b"[1, 2]"},
            {"data": b'{"model": 3}'},
            {"data": b'{"model": "m", "version": 2}'},
        ]

    async def subscribe(self, *_: Any) -> None:
        self.subscribes += 1
        if self.subscribes <= self.failures:
            raise redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6379")

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        if self.messages:
            return self.messages.pop(0)
        await asyncio.sleep(timeout)
        return None

    async def aclose(self) -> None:
        return None


class Recording(ModelCache):
    def __init__(self, registry: Any) -> None:
        super().__init__(registry, {})
        self.refreshed: list[str] = []

    async def refresh(self, name: str) -> None:
        self.refreshed.append(name)


def test_the_follower_survives_a_redis_stalled_at_start_and_bad_announcements() -> None:
    """Before: a subscribe that timed out at start (Redis stalled when the API started) ended the follower
    for good, and an announcement that was not a JSON object ended it too: no model was ever reloaded."""
    registry = RedisRegistry(redis.Redis(), "test:", keyring=Keyring.of(generate().public))
    cache = Recording(registry)
    pubsub = FlakyPubSub(failures=2)

    class C:
        def pubsub(self, **_: Any) -> FlakyPubSub:
            return pubsub

    async def main() -> None:
        cache.start(poll_s=3600.0, client=C())  # type: ignore[arg-type]

        def refreshed() -> bool:
            assert cache._task is not None and not cache._task.done(), cache._task.exception()
            return bool(cache.refreshed)

        await until(refreshed, "the announced model was not refreshed")
        await asyncio.wait_for(cache.stop(), timeout=60)

    asyncio.run(main())
    assert pubsub.subscribes == 3 and cache.refreshed == ["m"]
