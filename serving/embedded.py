"""The API's services on the embedded stack (``rivulet demo``): the in-memory online store and registry, and
an in-process log in place of Kafka. They satisfy :class:`serving.services.Services` like the Redis-backed
ones, so the demo serves the same app; ``streaming`` builds the stack and never imports this package's
internals (the demo hands its stack to :class:`EmbeddedServices`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from features.definitions import FeatureView
from features.store import OnlineStore
from serving.lag import LagWatcher
from serving.models import ModelCache
from streaming.learning.registry import Registry
from streaming.settings import Settings

__all__ = ["AppendLog", "EmbeddedParts", "EmbeddedServices", "LogProducer"]


class AppendLog(Protocol):
    """An append-only log per topic (the embedded stack's ``MemoryLog``)."""

    def append(self, topic: str, value: bytes, key: bytes | None = None) -> int: ...


class EmbeddedParts(Protocol):
    """What the API needs of the embedded stack."""

    @property
    def store(self) -> OnlineStore: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def views(self) -> Sequence[FeatureView]: ...

    @property
    def log(self) -> AppendLog: ...


class LogProducer:
    """What the API publishes with instead of aiokafka's producer: ``await send()`` gives a done future."""

    def __init__(self, log: AppendLog) -> None:
        self.log = log

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(self.log.append(topic, value, key))
        return future


class EmbeddedServices:
    """The scoring API's services on the embedded stores (a :class:`serving.services.Services`)."""

    def __init__(self, settings: Settings, stack: EmbeddedParts) -> None:
        self.settings = settings
        self.store = stack.store
        self.registry = stack.registry
        self.models = ModelCache(stack.registry, {v.name: v for v in stack.views})
        self.producer = LogProducer(stack.log)
        self.lag: LagWatcher | None = None  # no Kafka: no stage lag measured (a test may set one)

    async def start(self) -> None:
        await self.models.refresh_all()
        self.models.start(0.5)

    async def ping(self) -> bool:
        return True

    async def stop(self) -> None:
        await self.models.stop()
