"""The model registry in Redis: versions of each model, each a signed snapshot tied to Kafka offsets.

Keys (hash tag on the model name, so one model's keys share a Redis Cluster slot):

- ``<prefix>model:{<name>}:v:<version>``: the snapshot bytes of one version;
- ``<prefix>model:{<name>}:versions``: a sorted set of versions (score = version);
- ``<prefix>model:{<name>}:current``: the version serving traffic (moved by promote and rollback);
- ``<prefix>models``: the set of model names.

A new version is written in one MULTI/EXEC transaction (snapshot, version index, current pointer, trimming
to the last ``keep`` versions) and then announced on the channel ``<prefix>models:updates``. Loading takes
the newest version that verifies; a corrupt or badly signed one is refused with a clear error and the one
before it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import redis

from streaming.learning.snapshot import Opened, SnapshotRejected, open_snapshot, read_header, seal

__all__ = ["ModelRegistry", "NoValidVersion", "VersionInfo"]


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


class ModelRegistry:
    def __init__(self, client: redis.Redis, prefix: str, secret: bytes) -> None:
        self._r: Any = client  # redis-py's reply types are unions of everything; bytes here
        self._prefix = prefix
        self._secret = secret

    def _k(self, name: str, suffix: str) -> str:
        return f"{self._prefix}model:{{{name}}}:{suffix}"

    @property
    def channel(self) -> str:
        return f"{self._prefix}models:updates"

    def save(self, name: str, state: Any, header: dict[str, Any], *, keep: int = 10) -> int:
        """Store a new version (atomically), make it current, keep the last ``keep``; returns its number."""
        version = int(self._r.incr(self._k(name, "seq")))
        blob = seal(state, {**header, "model": name, "version": version}, self._secret)
        versions_key = self._k(name, "versions")
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._k(name, f"v:{version}"), blob)
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

    def names(self) -> list[str]:
        return sorted(n.decode() for n in self._r.smembers(f"{self._prefix}models"))

    def versions(self, name: str) -> list[VersionInfo]:
        current = self.current_version(name)
        out = []
        for v in reversed([int(x) for x in self._r.zrange(self._k(name, "versions"), 0, -1)]):
            blob = self._r.get(self._k(name, f"v:{v}"))
            try:
                header = read_header(blob) if blob else {}
            except SnapshotRejected:
                header = {}
            out.append(VersionInfo(v, header, v == current))
        return out

    def current_version(self, name: str) -> int | None:
        raw = self._r.get(self._k(name, "current"))
        return int(raw) if raw is not None else None

    def load(self, name: str, version: int) -> Opened:
        blob = self._r.get(self._k(name, f"v:{version}"))
        if blob is None:
            raise NoValidVersion(name, [f"version {version} does not exist"])
        return open_snapshot(blob, self._secret)

    def load_latest(self, name: str, *, current: bool = False) -> tuple[Opened, list[str]]:
        """The newest version that verifies (or the current one first, with ``current=True``); also the
        reasons any newer ones were refused."""
        candidates = [int(x) for x in reversed(self._r.zrange(self._k(name, "versions"), 0, -1))]
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
        self._r.set(self._k(name, "current"), version)
        self._r.publish(self.channel, orjson.dumps({"model": name, "version": version}))
