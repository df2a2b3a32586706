"""What the routes use, as a typed seam: the :class:`Services` protocol, which both the Redis-backed services
(:class:`serving.app.RedisServices`) and the embedded demo's (:class:`serving.embedded.EmbeddedServices`)
satisfy, and the FastAPI dependency alias :data:`ServicesDep` that hands it to a route.

The services are built in the app's lifespan and kept on ``app.state.services``; routes never build clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Request
from redis.exceptions import RedisClusterException, RedisError

from features.store import OnlineStore
from serving.errors import RegistryUnavailable
from serving.lag import LagWatcher
from serving.models import ModelCache
from streaming.learning.registry import Registry
from streaming.settings import Settings

__all__ = ["STORE_ERRORS", "Producer", "Services", "ServicesDep", "registry_call", "services_of"]

T = TypeVar("T")

# what a Redis (or Redis Cluster) client raises when the server is away or stalled: redis-py's cluster client
# raises RedisClusterException ("cannot be connected"), which is not a RedisError
STORE_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)


class Producer(Protocol):
    """What the API publishes with (aiokafka's producer, or the embedded log's): ``await send()`` queues a
    record and gives a future that completes when the log has it."""

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any: ...


class Services(Protocol):
    """The API's collaborators. ``registry`` is synchronous (redis-py or in-memory): call it through
    ``asyncio.to_thread`` only, never on the event loop."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> OnlineStore: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def models(self) -> ModelCache: ...

    @property
    def producer(self) -> Producer | None: ...

    @property
    def lag(self) -> LagWatcher | None:
        """Each stage's lag, measured in the background (None: not measured, as in the embedded demo)."""
        ...

    async def start(self) -> None: ...

    async def ping(self) -> bool:
        """Is the online store reachable (readiness)?"""
        ...

    async def stop(self) -> None: ...


def services_of(request: Request) -> Services:
    """The app's services (what :data:`ServicesDep` resolves to; the scoring routes call it inline)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(services_of)]


async def registry_call(fn: Callable[..., T], *args: object) -> T:
    """Call the synchronous registry (or anything that reads it) in a thread; Redis away is a 503."""
    try:
        return await asyncio.to_thread(fn, *args)
    except (RedisError, OSError) as exc:
        raise RegistryUnavailable(f"the model registry is unreachable ({type(exc).__name__})") from exc
