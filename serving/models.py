"""The models a serving replica scores with: loaded from the registry, verified, swapped in whole.

A new version is loaded when the registry announces it (Redis pub/sub) or, as a fallback, when a periodic
poll sees the current version move. Loading happens off the event loop; the swap is one dict assignment,
so a request in flight finishes on the version it started with and every response names its version.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import Gauge

from features.definitions import FeatureView
from features.engine import FeatureEngine
from streaming.learning.core import ModelState
from streaming.learning.registry import ModelRegistry, NoValidVersion, Registry
from streaming.learning.snapshot import SnapshotRejected
from streaming.logs import get_logger

__all__ = ["LoadedModel", "ModelCache"]

log = get_logger("rivulet.serving")
VERSION = Gauge("rivulet_serving_model_version", "Model version in use", ["model"])


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    state: ModelState
    header: dict[str, Any]
    engine: FeatureEngine | None


class ModelCache:
    def __init__(self, registry: Registry, views: dict[str, FeatureView]) -> None:
        self.registry = registry
        self.engines = {name: FeatureEngine(v) for name, v in views.items()}
        self.models: dict[str, LoadedModel] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def get(self, name: str) -> LoadedModel | None:
        return self.models.get(name)

    def _load(self, name: str) -> LoadedModel | None:
        """Load the current version (or the newest that verifies); None if there is none."""
        try:
            opened, rejected = self.registry.load_latest(name, current=True)
        except NoValidVersion as exc:
            log.error("no servable version", model=name, refused=exc.rejected)
            return None
        for reason in rejected:
            log.error("version refused", model=name, reason=reason)
        header = opened.header
        return LoadedModel(
            name, int(header["version"]), opened.state, header, self.engines.get(header.get("view", ""))
        )

    async def refresh(self, name: str) -> None:
        current = self.models.get(name)
        wanted = await asyncio.to_thread(self.registry.current_version, name)
        if current is not None and current.version == wanted:
            return
        loaded = await asyncio.to_thread(self._load, name)
        if loaded is not None:
            self.models[name] = loaded  # the swap: whole or not at all
            VERSION.labels(name).set(loaded.version)
            log.info("model loaded", model=name, version=loaded.version)

    async def refresh_all(self) -> None:
        for name in await asyncio.to_thread(self.registry.names):
            try:
                await self.refresh(name)
            except (SnapshotRejected, NoValidVersion, OSError) as exc:
                log.error("model refresh failed", model=name, error=str(exc))

    async def follow(self, client: aioredis.Redis, poll_s: float) -> None:
        """Reload on each registry notification; poll every ``poll_s`` in case a notification was missed."""
        assert isinstance(self.registry, ModelRegistry)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.registry.channel)
            loop = asyncio.get_running_loop()
            next_poll = loop.time() + poll_s
            task = asyncio.current_task()
            while not self._stopping:
                try:
                    msg = await pubsub.get_message(timeout=min(1.0, poll_s))
                except (OSError, aioredis.RedisError):
                    # a cancellation can surface as a TimeoutError (an OSError) from redis-py's timeout:
                    # it must still stop the loop
                    if self._stopping or (task is not None and task.cancelling()):
                        raise asyncio.CancelledError from None
                    await asyncio.sleep(1.0)  # Redis away: try again; the poll below catches up
                    with contextlib.suppress(Exception):
                        await pubsub.subscribe(self.registry.channel)
                    msg = None
                if msg is not None:
                    name = orjson.loads(msg["data"]).get("model")
                    if isinstance(name, str):
                        with contextlib.suppress(Exception):
                            await self.refresh(name)
                if loop.time() >= next_poll:
                    with contextlib.suppress(Exception):
                        await self.refresh_all()
                    next_poll = loop.time() + poll_s
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def poll(self, poll_s: float) -> None:
        """Without Redis (the embedded registry): refresh every ``poll_s``."""
        while True:
            await asyncio.sleep(poll_s)
            with contextlib.suppress(Exception):
                await self.refresh_all()

    def start(self, poll_s: float, client: aioredis.Redis | None = None) -> None:
        if client is not None and isinstance(self.registry, ModelRegistry):
            self._task = asyncio.create_task(self.follow(client, poll_s))
        else:
            self._task = asyncio.create_task(self.poll(poll_s))

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True  # seen by the loop even if a cancellation is swallowed on the way
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=5.0)
