"""The models a serving replica scores with: loaded from the registry, verified, swapped in whole.

A new version is loaded when the registry announces it (Redis pub/sub) or, as a fallback, when a periodic
poll sees the current version move. Loading happens off the event loop; the swap is one dict assignment,
so a request in flight finishes on the version it started with and every response names its version.

A spec with a promotion policy is served by its champion (issue 14): the registry's champion pointer names
the model (the spec's own, or a challenger ``<spec>~<ts>`` it promoted), and a request for the spec is
scored by that model once its loaded version's signed header names the spec and the role ``champion``;
until then, or for a pointer that does not check out, by the spec's own model. Responses name the model
that scored.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from features.definitions import FeatureView
from features.engine import FeatureEngine
from serving.errors import ModelNotFound, NoModelLoaded, RegistryUnavailable
from serving.metrics import CHAMPION, DECISIONS, REJECTED, SAVED, VERSION
from streaming.learning.core import ModelState
from streaming.learning.header import CheckpointHeader
from streaming.learning.registry import NoValidVersion, RedisRegistry, Registry
from streaming.learning.snapshot import SnapshotRejected
from streaming.logs import get_logger

__all__ = ["LoadedModel", "ModelCache"]

log = get_logger("rivulet.serving")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    state: ModelState
    header: CheckpointHeader  # the verified header, typed
    engine: FeatureEngine | None

    @property
    def task(self) -> str:
        return self.state.task

    @property
    def classes(self) -> tuple[Any, ...] | None:
        """The classes the model's spec declares (None: any label its task takes), from the verified header's
        ``classes`` (a list of scalars), or the model state's own."""
        classes: Any = self.header.classes
        if classes is None:
            classes = getattr(self.state, "classes", None)
        if not isinstance(classes, list | tuple) or not classes:
            return None
        return tuple(c for c in classes if isinstance(c, str | int | float | bool)) or None

    def rejected(self) -> dict[str, int]:
        """The learner's rejections per reason, from the verified header (``rejected``); {} without it."""
        return {reason: count for reason, count in self.header.rejected.items() if count >= 0}


class ModelCache:
    def __init__(self, registry: Registry, views: dict[str, FeatureView]) -> None:
        self.registry = registry
        self.engines = {name: FeatureEngine(v) for name, v in views.items()}
        self.models: dict[str, LoadedModel] = {}
        self.known: set[str] = set()  # names the registry listed or announced (loaded or not)
        self.champions: dict[str, str] = {}  # spec -> the model its champion pointer names
        self._names_lookup: asyncio.Future[list[str]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def get(self, name: str) -> LoadedModel | None:
        return self.models.get(name)

    def serving(self, name: str) -> LoadedModel | None:
        """The model that scores requests for ``name``: its champion (module docstring), else its own."""
        target = self.champions.get(name)
        if target is not None and target != name:
            champion = self.models.get(target)
            if champion is not None and champion.header.spec == name and champion.header.role == "champion":
                return champion
        return self.models.get(name)

    async def require(self, name: str) -> LoadedModel:
        """The model scoring ``name`` (:meth:`serving`), or :class:`ModelNotFound` / :class:`NoModelLoaded`. A
        name this replica has not seen is looked up in the registry off the event loop (it may be new since
        the last poll)."""
        loaded = self.serving(name)
        if loaded is not None:
            return loaded
        if name not in self.known:
            try:
                names = await self._registry_names()
            except (RedisError, OSError) as exc:
                raise RegistryUnavailable(
                    f"the model registry is unreachable ({type(exc).__name__})"
                ) from exc
            if name not in names:
                raise ModelNotFound(f"no model named {name!r}")
            self.known.add(name)
        raise NoModelLoaded(f"model {name!r} has no version that verifies yet")

    async def _registry_names(self) -> list[str]:
        """The registry's model names, in a thread; concurrent callers share one lookup (a flood of unknown
        names while Redis is stalled holds one thread, not one per request)."""
        if self._names_lookup is None or self._names_lookup.done():
            self._names_lookup = asyncio.ensure_future(asyncio.to_thread(self.registry.names))
        return await asyncio.shield(self._names_lookup)

    def _load(self, name: str) -> LoadedModel | None:
        """Load the current version (or the newest that verifies); None if there is none."""
        try:
            opened, rejected = self.registry.load_latest(name, current=True, kind=ModelState)
        except NoValidVersion as exc:
            log.error("no servable version", model=name, refused=exc.rejected)
            return None
        for reason in rejected:
            log.error("version refused", model=name, reason=reason)
        header = CheckpointHeader.of(opened.header)  # verified: it names this model and version
        return LoadedModel(name, header.version, opened.state, header, self.engines.get(header.view or ""))

    async def refresh(self, name: str) -> None:
        self.known.add(name)
        current = self.models.get(name)
        wanted = await asyncio.to_thread(self.registry.current_version, name)
        if current is not None and current.version == wanted:
            return
        loaded = await asyncio.to_thread(self._load, name)
        if loaded is not None:
            self.models[name] = loaded  # the swap: whole or not at all
            VERSION.labels(name).set(loaded.version)
            if loaded.header.saved_at is not None:
                SAVED.labels(name).set(loaded.header.saved_at)
            for reason, count in loaded.rejected().items():
                REJECTED.labels(name, reason).set(count)
            log.info("model loaded", model=name, version=loaded.version)

    async def refresh_all(self) -> None:
        names = await asyncio.to_thread(self.registry.names)
        self.known = set(names) | set(self.models)
        for name in names:
            try:
                if "~" not in name:
                    await self.follow_champion(name)
                await self.refresh(name)
            except (SnapshotRejected, NoValidVersion, OSError, RedisError) as exc:
                log.error("model refresh failed", model=name, error=str(exc))

    async def follow_champion(self, spec: str, announced: str | None = None) -> None:
        """Read (or take the ``announced``) champion pointer of ``spec`` and load the model it names."""
        target = announced if announced is not None else await asyncio.to_thread(self.registry.champion, spec)
        before = self.champions.get(spec)
        if target is None or not _champion_name(spec, target):
            self.champions.pop(spec, None)
            if before is not None:
                CHAMPION.remove(spec, before)
            return
        if before != target:
            log.info("champion", spec=spec, model=target)
            if before is not None:
                CHAMPION.remove(spec, before)
            CHAMPION.labels(spec, target).set(1)
        self.champions[spec] = target
        kinds = [d.get("kind") for d in await asyncio.to_thread(self.registry.decisions, spec)]
        for kind in ("challenger", "promotion", "rollback", "retirement"):
            DECISIONS.labels(spec, kind).set(kinds.count(kind))
        if target != spec:
            await self.refresh(target)

    async def follow(self, client: aioredis.Redis, poll_s: float) -> None:
        """Reload on each registry notification; poll every ``poll_s`` in case a notification was missed.
        Redis away or stalled (at start or later) is retried, never the end of the loop."""
        assert isinstance(self.registry, RedisRegistry)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        subscribed = False
        try:
            loop = asyncio.get_running_loop()
            next_poll = loop.time() + poll_s
            task = asyncio.current_task()
            while not self._stopping:
                try:
                    if not subscribed:
                        await pubsub.subscribe(self.registry.channel)
                        subscribed = True
                    msg = await pubsub.get_message(timeout=min(1.0, poll_s))
                except (OSError, RedisError):
                    # a cancellation can surface as a TimeoutError (an OSError) from redis-py's timeout:
                    # it must still stop the loop
                    if self._stopping or (task is not None and task.cancelling()):
                        raise asyncio.CancelledError from None
                    subscribed = False
                    await asyncio.sleep(1.0)  # Redis away: try again; the poll below catches up
                    msg = None
                if msg is not None:
                    name, champion = _announced(msg.get("data"))
                    if name is not None:
                        with contextlib.suppress(Exception):
                            if champion is not None:
                                # only for a spec this replica serves (anyone who can PUBLISH on the
                                # channel could name others without end); the poll reads the registry's own
                                if name in self.models and "~" not in name:
                                    await self.follow_champion(name, champion)
                            else:
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
        if client is not None and isinstance(self.registry, RedisRegistry):
            self._task = asyncio.create_task(self.follow(client, poll_s))
        else:
            self._task = asyncio.create_task(self.poll(poll_s))

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True  # seen by the loop even if a cancellation is swallowed on the way
            self._task.cancel()
            try:
                await asyncio.wait_for(self._task, timeout=5.0)
            except (asyncio.CancelledError, TimeoutError):
                pass
            except Exception as exc:  # the follower's own failure must not fail the shutdown
                log.error("model follower failed", error=repr(exc))


def _announced(data: object) -> tuple[str | None, str | None]:
    """The model named by a registry announcement (``{"model": name, ...}``) and the champion it names
    (``{"model": spec, "champion": model}``); None for anything else."""
    try:
        message = orjson.loads(data) if isinstance(data, bytes | str) else None
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(message, dict):
        return None, None
    name, champion = message.get("model"), message.get("champion")
    if not isinstance(name, str):
        return None, None
    return name, champion if isinstance(champion, str) else None


def _champion_name(spec: str, model: str) -> bool:
    """A pointer the spec's champion can take: the spec itself, or one of its challengers (``<spec>~...``)."""
    return model == spec or (model.startswith(f"{spec}~") and len(model) <= len(spec) + 64)
