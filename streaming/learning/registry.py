"""The model registry in Redis: versions of each model, each a signed snapshot tied to Kafka offsets.

Keys (hash tag on the model name, so one model's keys share a Redis Cluster slot):

- ``<prefix>model:{<name>}:v:<version>``: the snapshot bytes of one version;
- ``<prefix>model:{<name>}:h:<version>``: its signed header alone (a few hundred bytes), so listings
  verify and show versions without reading snapshots;
- ``<prefix>model:{<name>}:versions``: a sorted set of versions (score = version);
- ``<prefix>model:{<name>}:current``: the version serving traffic (moved by promote and rollback);
- ``<prefix>models``: the set of model names;
- ``<prefix>model:{<name>}:history``: a capped stream of monitoring samples (one per checkpoint);
- ``<prefix>model:{<spec>}:champion``: the model serving a spec with a promotion policy (the spec's own
  name or one of its challengers ``<spec>~<ts>``), set by the learner's checkpoints; a hint only: serving
  follows it to a model whose signed header names the spec and the role ``champion``;
- ``<prefix>model:{<spec>}:decisions``: the spec's lifecycle decisions (challenger, promotion, rollback,
  retirement; :class:`~streaming.learning.evidence.Decision`), by id, the latest ``DECISIONS``;
- ``<prefix>model:{<name>}:fence``, and per spec ``lease``, ``epoch`` and ``members``: the learner's fencing
  (:mod:`streaming.learning.fencing`): once a learner holds a spec (:meth:`Registry.hold`), every write of
  its models is refused atomically (:class:`~streaming.learning.fencing.Fenced`) when a newer holder exists.

A new version is written in one MULTI/EXEC transaction (snapshot, header, version index, current pointer)
and older ones are trimmed (snapshot and header together) to the last ``keep``; the new version is then
announced on the channel ``<prefix>models:updates``. Only a registry given a signing key writes
(the learner's); readers hold a :class:`~streaming.learning.keys.Keyring` of public keys. Loading takes
the newest version that verifies; a corrupt, foreign or misplaced one is refused with a clear error and
the one before it is used.
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

from streaming.errors import MissingKey
from streaming.learning.errors import LearningError
from streaming.learning.fencing import Command, Fences, spec_of
from streaming.learning.keys import Keyring, SigningKey
from streaming.learning.snapshot import (
    LEGACY_MIGRATION,
    Opened,
    SnapshotRejected,
    header_part,
    is_legacy,
    open_header,
    open_legacy,
    open_snapshot,
    reseal,
    seal,
)

__all__ = ["MemoryRegistry", "NoValidVersion", "RedisRegistry", "Registry", "VersionInfo"]


class NoValidVersion(LearningError):
    def __init__(self, name: str, rejected: list[str]) -> None:
        self.name, self.rejected = name, rejected
        detail = f"; refused: {'; '.join(rejected)}" if rejected else ""
        super().__init__(f"model {name!r} has no valid version{detail}")


@dataclass(frozen=True)
class VersionInfo:
    """A retained version: its verified header (empty when refused, with ``refused`` saying why)."""

    version: int
    header: dict[str, Any]
    current: bool
    refused: str | None = None


class Registry(ABC):
    """Versions of each model: signed snapshots tied to offsets, a current pointer, announcements, and a
    short monitoring history per model (one sample per checkpoint: metrics, counts, freshness) for the
    dashboard. Two implementations share this logic: Redis (:class:`RedisRegistry`) and in-process
    (:class:`MemoryRegistry`, the embedded demo's)."""

    HISTORY = 2_000  # samples kept per model
    DECISIONS = 1_000  # lifecycle decisions kept per spec

    def __init__(self, *, signer: SigningKey | None = None, keyring: Keyring | None = None) -> None:
        ring = keyring if keyring is not None else Keyring()
        if signer is not None:
            ring = ring.with_key(signer.public)  # a signer always reads what it wrote
        if not len(ring):
            raise MissingKey("RIVULET_VERIFY_KEYS", "a registry needs at least one key to verify snapshots")
        self._signer = signer
        self.keyring = ring

    @property
    def signer_id(self) -> str | None:
        """The key id new versions are signed with (None: a reader, which cannot save)."""
        return self._signer.key_id if self._signer is not None else None

    # ------------------------------------------------------------------ storage primitives

    @abstractmethod
    def _store(self, name: str, blob_of: Callable[[int], bytes], keep: int) -> int:
        """Allocate the next version, store ``blob_of(version)`` and its :func:`header_part` together,
        make it current, trim snapshots and headers to ``keep``."""

    @abstractmethod
    def _blob(self, name: str, version: int) -> bytes | None: ...

    @abstractmethod
    def _headers(self, name: str, versions: list[int]) -> list[bytes | None]:
        """The stored signed headers of ``versions`` (None where absent), without reading snapshots."""

    @abstractmethod
    def _magic(self, name: str, version: int) -> bytes | None:
        """The first bytes of a version's snapshot (its format), without reading the rest."""

    @abstractmethod
    def _replace(self, name: str, version: int, blob: bytes) -> None:
        """Overwrite an existing version's snapshot and header (the format migration only)."""

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

    @abstractmethod
    def set_champion(self, spec: str, model: str) -> None:
        """Point the spec's champion at ``model`` and announce it."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Forget model ``name``: its versions, pointer and history (a retired challenger past retention;
        its spec's decisions stay)."""

    @abstractmethod
    def champion(self, spec: str) -> str | None: ...

    @abstractmethod
    def record_decision(self, spec: str, decision: dict[str, Any]) -> None:
        """Keep a lifecycle decision (JSON-able, with an ``id``: recording one again replaces it)."""

    @abstractmethod
    def decisions(self, spec: str) -> list[dict[str, Any]]:
        """The spec's kept decisions, oldest first (by event time, then id)."""

    # ------------------------------------------------------------------ shared logic

    def save(self, name: str, state: Any, header: dict[str, Any], *, keep: int = 10) -> int:
        """Store a new version (atomically), make it current, keep the last ``keep``; returns its number."""
        signer = self._signer
        if signer is None:
            raise MissingKey("RIVULET_SIGNING_KEY", "only the learner, which holds the signing key, saves")
        stamp = self._stamp(name)
        return self._store(
            name, lambda v: seal(state, {**header, **stamp, "model": name, "version": v}, signer), keep
        )

    @abstractmethod
    def hold(self, spec: str, epoch: int) -> None:
        """Write ``spec``'s models under lease ``epoch`` from now on, refused once a newer holder exists."""

    @abstractmethod
    def release(self, spec: str) -> None:
        """Write nothing more of ``spec``'s models (its lease is lost or given back)."""

    def _stamp(self, name: str) -> dict[str, Any]:
        """What a new version's header says of its writer (the Redis registry: its lease epoch)."""
        return {}

    def versions(self, name: str) -> list[VersionInfo]:
        """Retained versions, newest first, each with its verified header: reads headers, not snapshots."""
        current = self.current_version(name)
        numbers = list(reversed(self._numbers(name)))
        out = []
        for v, head in zip(numbers, self._headers(name, numbers), strict=True):
            header: dict[str, Any] = {}
            refused = None
            if head is None:
                magic = self._magic(name, v)
                refused = (
                    str(SnapshotRejected({"model": name, "version": v}, LEGACY_MIGRATION))
                    if magic is not None and is_legacy(magic)
                    else f"version {v} has no stored header"
                )
            else:
                try:
                    header = open_header(head, self.keyring, model=name, version=v)
                except SnapshotRejected as exc:
                    refused = str(exc)
            out.append(VersionInfo(v, header, v == current, refused))
        return out

    def load(self, name: str, version: int) -> Opened:
        blob = self._blob(name, version)
        if blob is None:
            raise NoValidVersion(name, [f"version {version} does not exist"])
        return open_snapshot(blob, self.keyring, model=name, version=version)

    def load_latest(
        self, name: str, *, current: bool = False, kind: type | None = None
    ) -> tuple[Opened, list[str]]:
        """The newest version that verifies (or the current one first, with ``current=True``) and, with
        ``kind``, whose state is one (a signed payload of another type is refused like a bad signature: the
        version before it loads); also the reasons any newer ones were refused."""
        candidates = list(reversed(self._numbers(name)))
        if current and (cur := self.current_version(name)) is not None and cur in candidates:
            candidates.remove(cur)
            candidates.insert(0, cur)
        rejected: list[str] = []
        for v in candidates:
            try:
                opened = self.load(name, v)
            except (SnapshotRejected, NoValidVersion) as exc:
                rejected.append(str(exc))
                continue
            if kind is None or isinstance(opened.state, kind):
                return opened, rejected
            got = type(opened.state).__name__
            rejected.append(f"{name} version {v}: its payload is a {got}, not a {kind.__name__}")
        raise NoValidVersion(name, rejected)

    def resign(self, name: str, legacy_secret: bytes) -> list[int]:
        """Migrate a model's format-1 (HMAC) versions: each is checked with the old secret (signature,
        payload hash, model and version), then the same payload bytes are signed with this registry's key,
        in place; nothing is unpickled. Returns the versions re-signed; raises :class:`SnapshotRejected`
        on the first that does not check (those before it are already migrated, the rest untouched)."""
        signer = self._signer
        if signer is None:
            raise MissingKey("RIVULET_SIGNING_KEY", "re-signing snapshots takes the learner's signing key")
        done = []
        for v in self._numbers(name):
            blob = self._blob(name, v)
            if blob is None or not is_legacy(blob):
                continue
            header, payload = open_legacy(blob, legacy_secret, model=name, version=v)
            self._replace(name, v, reseal(payload, header, signer))
            done.append(v)
        return done

    def set_current(self, name: str, version: int) -> None:
        """Promote or roll back: point ``current`` at an existing version that verifies."""
        self.load(name, version)  # refuses a version that does not verify
        self._point(name, version)


class RedisRegistry(Registry):
    """The registry in Redis (see the module docstring for its keys)."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        signer: SigningKey | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        super().__init__(signer=signer, keyring=keyring)
        self._r: Any = client  # redis-py's reply types are unions of everything; bytes here
        self._prefix = prefix
        self.fences = Fences(client, self._k)  # unfenced until a learner holds a spec

    def hold(self, spec: str, epoch: int) -> None:
        self.fences.hold(spec, epoch, self.names())

    def release(self, spec: str) -> None:
        self.fences.release(spec)

    def _stamp(self, name: str) -> dict[str, Any]:
        return self.fences.stamp(name)

    def _k(self, name: str, suffix: str) -> str:
        return f"{self._prefix}model:{{{name}}}:{suffix}"

    @property
    def channel(self) -> str:
        return f"{self._prefix}models:updates"

    def _store(self, name: str, blob_of: Callable[[int], bytes], keep: int) -> int:
        seq, versions_key = self._k(name, "seq"), self._k(name, "versions")
        fenced = self.fences.epochs is not None
        if fenced:  # the counter moves with the version, in the fenced write: a refused one leaves no gap
            self.fences.write(name, [])  # refused before signing, and before the name is listed
            prior = self._r.get(seq)
            version = int(prior or 0) + 1
        else:
            version = int(self._r.incr(seq))
        blob = blob_of(version)
        # the set of names is outside the model's hash slot: in the MULTI it made the transaction span
        # slots (CROSSSLOT on a Redis Cluster). Added first, on its own (idempotent): a listed name has a
        # version or is about to get one (a crash in between leaves a name with no version, which readers
        # already take as "not loaded yet"), never a version that no listing shows
        self._r.sadd(f"{self._prefix}models", name)
        writes = [
            Command("SET", [self._k(name, f"v:{version}")], blob),
            Command("SET", [self._k(name, f"h:{version}")], header_part(blob)),
            Command("ZADD", [versions_key], version, str(version)),
            Command("SET", [self._k(name, "current")], version),
        ]
        if fenced:
            writes.append(Command("SET", [seq], version))
            self.fences.write(name, writes, check=seq, expect=prior.decode() if prior else "")
        else:
            self.fences.write(name, writes)
        old = [int(v) for v in self._r.zrange(versions_key, 0, -(keep + 1))]
        if old:
            gone = [self._k(name, f"{kind}:{v}") for v in old for kind in ("v", "h")]
            self.fences.write(
                name, [Command("ZREM", [versions_key], *[str(v) for v in old]), Command("DEL", gone)]
            )
        self._r.publish(self.channel, orjson.dumps({"model": name, "version": version}))
        return version

    def _blob(self, name: str, version: int) -> bytes | None:
        blob: bytes | None = self._r.get(self._k(name, f"v:{version}"))
        return blob

    def _headers(self, name: str, versions: list[int]) -> list[bytes | None]:
        if not versions:
            return []
        return list(self._r.mget([self._k(name, f"h:{v}") for v in versions]))

    def _magic(self, name: str, version: int) -> bytes | None:
        head: bytes = self._r.getrange(self._k(name, f"v:{version}"), 0, 5)
        return head or None

    def _replace(self, name: str, version: int, blob: bytes) -> None:
        self.fences.write(
            name,
            [
                Command("SET", [self._k(name, f"v:{version}")], blob),
                Command("SET", [self._k(name, f"h:{version}")], header_part(blob)),
            ],
        )

    def _numbers(self, name: str) -> list[int]:
        return [int(x) for x in self._r.zrange(self._k(name, "versions"), 0, -1)]

    def names(self) -> list[str]:
        """The models' names; a member that is not UTF-8 (no Rivulet writes one: a hand edit) is left out,
        as no key of it can be named."""
        out = []
        for raw in self._r.smembers(f"{self._prefix}models"):
            try:
                out.append(raw.decode())
            except UnicodeDecodeError:
                continue
        return sorted(out)

    def current_version(self, name: str) -> int | None:
        raw = self._r.get(self._k(name, "current"))
        return int(raw) if raw is not None else None

    def _point(self, name: str, version: int) -> None:
        self.fences.write(name, [Command("SET", [self._k(name, "current")], version)])
        self._r.publish(self.channel, orjson.dumps({"model": name, "version": version}))

    def record(self, name: str, sample: dict[str, Any]) -> None:
        xadd = ["MAXLEN", "~", self.HISTORY, "*", "s", orjson.dumps(sample)]
        self.fences.write(name, [Command("XADD", [self._k(name, "history")], *xadd)])

    def history(self, name: str, limit: int = Registry.HISTORY) -> list[dict[str, Any]]:
        entries = self._r.xrevrange(self._k(name, "history"), count=limit)
        return [orjson.loads(fields[b"s"]) for _, fields in reversed(entries)]

    def delete(self, name: str) -> None:
        # the name leaves the listing first: a reader never lists a model whose keys are going (a fenced
        # writer checks its fence before: a zombie does not unlist a model)
        self.fences.write(name, [])
        self._r.srem(f"{self._prefix}models", name)
        numbers = self._numbers(name)
        kinds = ("versions", "seq", "current", "history", "fence")  # without a fence, no write is taken
        keys = [self._k(name, k) for k in kinds] + [self._k(name, f"{k}:{v}") for v in numbers for k in "vh"]
        self.fences.write(name, [Command("DEL", keys)])  # one hash slot ({name}): on a Redis Cluster too
        self.fences.forget(name)
        spec = spec_of(name)
        if spec != name and self.fences.epochs is not None:
            self.fences.write(spec, [Command("SREM", [self._k(spec, "members")], name)])

    def set_champion(self, spec: str, model: str) -> None:
        self.fences.write(spec, [Command("SET", [self._k(spec, "champion")], model)])
        self._r.publish(self.channel, orjson.dumps({"model": spec, "champion": model}))

    def champion(self, spec: str) -> str | None:
        raw = self._r.get(self._k(spec, "champion"))
        return raw.decode(errors="replace") if raw is not None else None

    def record_decision(self, spec: str, decision: dict[str, Any]) -> None:
        key = self._k(spec, "decisions")
        self.fences.write(spec, [Command("HSET", [key], str(decision["id"]), _dumps(decision))])
        if self._r.hlen(key) > self.DECISIONS:
            dropped = _beyond(self._r.hgetall(key), self.DECISIONS)
            if dropped:
                self.fences.write(spec, [Command("HDEL", [key], *dropped)])

    def decisions(self, spec: str) -> list[dict[str, Any]]:
        return _in_order(self._r.hgetall(self._k(spec, "decisions")).values())


class MemoryRegistry(Registry):
    """The registry in this process (the embedded demo): same snapshots, same signatures, no Redis.
    Thread-safe; ``listeners`` are called with (model, version) on every new current version.

    >>> from streaming.learning.keys import Keyring, generate
    >>> learner = generate()
    >>> reg = MemoryRegistry(signer=learner)
    >>> reg.save("m", {"w": 1}, {"n_learned": 5})
    1
    >>> info = reg.versions("m")[0]
    >>> info.header["n_learned"], info.header["key_id"] == learner.key_id, reg.load("m", 1).state
    (5, True, {'w': 1})
    >>> MemoryRegistry(keyring=Keyring.of(learner.public)).save("m", {}, {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streaming.errors.MissingKey: RIVULET_SIGNING_KEY is not set: only the learner, ...
    """

    def __init__(self, *, signer: SigningKey | None = None, keyring: Keyring | None = None) -> None:
        super().__init__(signer=signer, keyring=keyring)
        self._lock = threading.Lock()
        self._blobs: dict[str, dict[int, bytes]] = {}
        self._heads: dict[str, dict[int, bytes]] = {}
        self._seq: dict[str, int] = {}
        self._current: dict[str, int] = {}
        self._history: dict[str, deque[dict[str, Any]]] = {}
        self._champions: dict[str, str] = {}
        self._decisions: dict[str, dict[str, bytes]] = {}
        self.listeners: list[Callable[[str, int], None]] = []

    def hold(self, spec: str, epoch: int) -> None:
        pass  # one learner in this process: nothing to fence

    def release(self, spec: str) -> None:
        pass

    def _store(self, name: str, blob_of: Callable[[int], bytes], keep: int) -> int:
        with self._lock:
            version = self._seq[name] = self._seq.get(name, 0) + 1
            blobs = self._blobs.setdefault(name, {})
            heads = self._heads.setdefault(name, {})
            blobs[version] = blob_of(version)
            heads[version] = header_part(blobs[version])
            self._current[name] = version
            for old in sorted(blobs)[:-keep]:
                del blobs[old], heads[old]
        self._announce(name, version)
        return version

    def _announce(self, name: str, version: int) -> None:
        for listener in list(self.listeners):
            listener(name, version)

    def _blob(self, name: str, version: int) -> bytes | None:
        with self._lock:
            return self._blobs.get(name, {}).get(version)

    def _headers(self, name: str, versions: list[int]) -> list[bytes | None]:
        with self._lock:
            heads = self._heads.get(name, {})
            return [heads.get(v) for v in versions]

    def _magic(self, name: str, version: int) -> bytes | None:
        with self._lock:
            blob = self._blobs.get(name, {}).get(version)
        return blob[:6] if blob is not None else None

    def _replace(self, name: str, version: int, blob: bytes) -> None:
        with self._lock:
            self._blobs.setdefault(name, {})[version] = blob
            self._heads.setdefault(name, {})[version] = header_part(blob)

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

    def delete(self, name: str) -> None:
        with self._lock:
            for kept in (self._blobs, self._heads, self._seq, self._current, self._history):
                kept.pop(name, None)

    def set_champion(self, spec: str, model: str) -> None:
        with self._lock:
            self._champions[spec] = model
        self._announce(spec, self.current_version(spec) or 0)

    def champion(self, spec: str) -> str | None:
        with self._lock:
            return self._champions.get(spec)

    def record_decision(self, spec: str, decision: dict[str, Any]) -> None:
        raw = _dumps(decision)
        with self._lock:
            kept = self._decisions.setdefault(spec, {})
            kept[str(decision["id"])] = raw
            if len(kept) > self.DECISIONS:
                for field in _beyond(kept, self.DECISIONS):
                    kept.pop(field.decode() if isinstance(field, bytes) else field, None)

    def decisions(self, spec: str) -> list[dict[str, Any]]:
        with self._lock:
            return _in_order(self._decisions.get(spec, {}).values())


def _dumps(decision: dict[str, Any]) -> bytes:
    return orjson.dumps(decision, default=str, option=orjson.OPT_NON_STR_KEYS)


def _decoded(raw: Any) -> dict[str, Any] | None:
    """A stored decision, or None for a malformed one (Redis holds what anyone with access wrote)."""
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(d, dict) and type(d.get("ts")) is int:
        return d
    return None


def _in_order(raws: Any) -> list[dict[str, Any]]:
    """Stored decisions decoded (a malformed one skipped), oldest first."""
    out = [d for raw in raws if (d := _decoded(raw)) is not None]
    return sorted(out, key=lambda d: (d["ts"], str(d.get("id"))))


def _beyond(stored: dict[Any, Any], keep: int) -> list[Any]:
    """The fields to drop from ``stored`` (field -> raw decision) to keep the newest ``keep``: the malformed
    ones, then the oldest."""
    good = [(d["ts"], str(d.get("id")), field) for field, raw in stored.items() if (d := _decoded(raw))]
    bad = [field for field, raw in stored.items() if _decoded(raw) is None]
    good.sort()
    return bad + [field for _, _, field in good[: max(0, len(good) - keep)]]
