"""The model registry in Redis: versions of each model, each a signed snapshot tied to Kafka offsets.

Keys (hash tag on the model name, so one model's keys share a Redis Cluster slot):

- ``<prefix>model:{<name>}:v:<version>``: the snapshot bytes of one version;
- ``<prefix>model:{<name>}:versions``: a sorted set of versions (score = version);
- ``<prefix>model:{<name>}:current``: the version serving traffic (moved by promote and rollback);
- ``<prefix>models``: the set of model names;
- ``<prefix>model:{<name>}:history``: a capped stream of monitoring samples (one per checkpoint).

A new version is written in one MULTI/EXEC transaction (snapshot, version index, current pointer, trimming
to the last ``keep`` versions) and then announced on the channel ``<prefix>models:updates``. Loading takes
the newest version that verifies; a corrupt or badly signed one is refused with a clear error and the one
before it is used.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from streaming.learning.snapshot import Opened, SnapshotRejected, open_snapshot, read_header, seal

__all__ = ["MemoryRegistry", "ModelRegistry", "NoValidVersion", "Registry", "VersionInfo"]


class NoValidVersion(Exception):
    def __init__(self, name: str, rejected: list[str]) -> None:
        self.name, self.rejected = name, rejected
        detail = f"; refused: {'; '.join(rejected)}" if rejected else ""
        super().__init__(f"model {name!r} has no valid version{detail}")


@dataclass(frozen=True)
class VersionInfo:
    version: int
    header: dict[str, Any]
    current: bool


class Registry(ABC):
    """Versions of each model: signed snapshots tied to offsets, a current pointer, announcements, and a
    short monitoring history per model (one sample per checkpoint: metrics, counts, freshness) for the
    dashboard. Two implementations share this logic: Redis (:class:`ModelRegistry`) and in-process
    (:class:`MemoryRegistry`, the embedded demo's)."""

    HISTORY = 2_000  # samples kept per model

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    # ------------------------------------------------------------------ storage primitives

    @abstractmethod
    def _store(self, name: str, blob_of: Callable[[int], bytes], keep: int) -> int:
        """Allocate the next version, store ``blob_of(version)``, make it current, trim to ``keep``."""

    @abstractmethod
    def _blob(self, name: str, version: int) -> bytes | None: ...

    @abstractmethod
    def _numbers(self, name: str) -> list[int]:
        """Retained version numbers, oldest first."""

    @abstractmethod
    def names(self) -> list[str]: ...

    @abstractmethod
    def current_version(self, name: str) -> int | None: ...

    @abstractmethod
    def _point(self, name: str, version: int) -> None:
        """Move the current pointer and announce it."""

    @abstractmethod
    def record(self, name: str, sample: dict[str, Any]) -> None:
        """Append a monitoring sample (JSON-able) to the model's history."""

    @abstractmethod
    def history(self, name: str, limit: int = HISTORY) -> list[dict[str, Any]]:
        """The newest ``limit`` samples, oldest first."""

    # ------------------------------------------------------------------ shared logic

    def save(self, name: str, state: Any, header: dict[str, Any], *, keep: int = 10) -> int:
        """Store a new version (atomically), make it current, keep the last ``keep``; returns its number."""
        return self._store(
            name, lambda v: seal(state, {**header, "model": name, "version": v}, self._secret), keep
        )

    def versions(self, name: str) -> list[VersionInfo]:
        current = self.current_version(name)
        out = []
        for v in reversed(self._numbers(name)):
            blob = self._blob(name, v)
            try:
                header = read_header(blob) if blob else {}
            except SnapshotRejected:
                header = {}
            out.append(VersionInfo(v, header, v == current))
        return out

    def load(self, name: str, version: int) -> Opened:
        blob = self._blob(name, version)
        if blob is None:
            raise NoValidVersion(name, [f"version {version} does not exist"])
        return open_snapshot(blob, self._secret)

    def load_latest(self, name: str, *, current: bool = False) -> tuple[Opened, list[str]]:
        """The newest version that verifies (or the current one first, with ``current=True``); also the
        reasons any newer ones were refused."""
        candidates = list(reversed(self._numbers(name)))
        if current and (cur := self.current_version(name)) is not None and cur in candidates:
            candidates.remove(cur)
            candidates.insert(0, cur)
        rejected: list[str] = []
        for v in candidates:
            try:
                return self.load(name, v), rejected
            except (SnapshotRejected, NoValidVersion) as exc:
                rejected.append(str(exc))
        raise NoValidVersion(name, rejected)

    def set_current(self, name: str, version: int) -> None:
        """Promote or roll back: point ``current`` at an existing version that verifies."""
        self.load(name, version)  # refuses a version that does not verify
        self._point(name, version)


class ModelRegistry(Registry):
    """The registry in Redis (see the module docstring for its keys)."""

    def __init__(self, client: redis.Redis, prefix: str, secret: bytes) -> None:
        super().__init__(secret)
        self._r: Any = client  # redis-py's reply types are unions of everything; bytes here
        self._prefix = prefix

    def _k(self, name: str, suffix: str) -> str:
        return f"{self._prefix}model:{{{name}}}:{suffix}"

    @property
    def channel(self) -> str:
        return f"{self._prefix}models:updates"

    def _store(self, name: str, blob_of: Callable[[int], bytes], keep: int) -> int:
        version = int(self._r.incr(self._k(name, "seq")))
        versions_key = self._k(name, "versions")
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._k(name, f"v:{version}"), blob_of(version))
        pipe.zadd(versions_key, {str(version): version})
        pipe.set(self._k(name, "current"), version)
        pipe.sadd(f"{self._prefix}models", name)
        pipe.execute()
        old = [int(v) for v in self._r.zrange(versions_key, 0, -(keep + 1))]
        if old:
            pipe = self._r.pipeline(transaction=True)
            pipe.zrem(versions_key, *[str(v) for v in old])
            pipe.delete(*[self._k(name, f"v:{v}") for v in old])
            pipe.execute()
        self._r.publish(self.channel, orjson.dumps({"model": name, "version": version}))
        return version

    def _blob(self, name: str, version: int) -> bytes | None:
        blob: bytes | None = self._r.get(self._k(name, f"v:{version}"))
        return blob

    def _numbers(self, name: str) -> list[int]:
        return [int(x) for x in self._r.zrange(self._k(name, "versions"), 0, -1)]

    def names(self) -> list[str]:
        return sorted(n.decode() for n in self._r.smembers(f"{self._prefix}models"))

    def current_version(self, name: str) -> int | None:
        raw = self._r.get(self._k(name, "current"))
        return int(raw) if raw is not None else None

    def _point(self, name: str, version: int) -> None:
        self._r.set(self._k(name, "current"), version)
        self._r.publish(self.channel, orjson.dumps({"model": name, "version": version}))

    def record(self, name: str, sample: dict[str, Any]) -> None:
        self._r.xadd(
            self._k(name, "history"), {"s": orjson.dumps(sample)}, maxlen=self.HISTORY, approximate=True
        )

    def history(self, name: str, limit: int = Registry.HISTORY) -> list[dict[str, Any]]:
        entries = self._r.xrevrange(self._k(name, "history"), count=limit)
        return [orjson.loads(fields[b"s"]) for _, fields in reversed(entries)]


class MemoryRegistry(Registry):
    """The registry in this process (the embedded demo): same snapshots, same signatures, no Redis.
    Thread-safe; ``listeners`` are called with (model, version) on every new current version."""

    def __init__(self, secret: bytes) -> None:
        super().__init__(secret)
        self._lock = threading.Lock()
        self._blobs: dict[str, dict[int, bytes]] = {}
        self._seq: dict[str, int] = {}
        self._current: dict[str, int] = {}
        self._history: dict[str, deque[dict[str, Any]]] = {}
        self.listeners: list[Callable[[str, int], None]] = []

    def _store(self, name: str, blob_of: Callable[[int], bytes], keep: int) -> int:
        with self._lock:
            version = self._seq[name] = self._seq.get(name, 0) + 1
            blobs = self._blobs.setdefault(name, {})
            blobs[version] = blob_of(version)
            self._current[name] = version
            for old in sorted(blobs)[:-keep]:
                del blobs[old]
        self._announce(name, version)
        return version

    def _announce(self, name: str, version: int) -> None:
        for listener in list(self.listeners):
            listener(name, version)

    def _blob(self, name: str, version: int) -> bytes | None:
        with self._lock:
            return self._blobs.get(name, {}).get(version)

    def _numbers(self, name: str) -> list[int]:
        with self._lock:
            return sorted(self._blobs.get(name, {}))

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._blobs)

    def current_version(self, name: str) -> int | None:
        with self._lock:
            return self._current.get(name)

    def _point(self, name: str, version: int) -> None:
        with self._lock:
            self._current[name] = version
        self._announce(name, version)

    def record(self, name: str, sample: dict[str, Any]) -> None:
        with self._lock:
            self._history.setdefault(name, deque(maxlen=self.HISTORY)).append(sample)

    def history(self, name: str, limit: int = Registry.HISTORY) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._history.get(name, ()))[-limit:]
