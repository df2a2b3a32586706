"""Redis implementation of the online store and the state store (one Redis, or a Redis Cluster).

Keys carry a hash tag made from an *encoding* of the entity, so all keys of one entity live in one slot of
a Redis Cluster whatever the entity is (``}x{``, ``{``, unicode, a thousand characters):

- ``<prefix>fv:<view>:{<tag>}``: a hash, one field per feature (its value JSON-encoded) plus ``_ts``,
  the event time the vector reflects; expires after the view's TTL;
- ``<prefix>fs:<view>:{<tag>}``: a hash with the engine's state of the entity (``s``, JSON) and the
  source position of the last event applied (``t``, ``p``, ``o``);

where ``<tag>`` is the entity's UTF-8 bytes in unpadded URL-safe base64 (:func:`entity_tag`): its alphabet
has no braces, so Redis hashes exactly the tag. (Before, the tag was the raw entity: an entity holding
``}`` or ``{`` put its two keys in different slots, and the commit failed with ``CROSSSLOT`` forever.
:meth:`RedisStore.migrate_keys` moves keys of that scheme to this one.) The key prefix and view names may
not hold braces.

Every write is a Lua script, atomic for each entity and idempotent by event time: a vector older than the
stored ``_ts`` is not written. A batch is one pipeline: one round trip. One entity's reads (the API's
requests, each reading its entity) issued in the same turn of the event loop are sent as one script call
(:mod:`features.coalesce`, ``_READ_MANY``), except on a cluster. The feature worker's commit sends
many entities per script call, each entity's meta as one JSON argument (``_COMMIT``); on a cluster, one
entity per call. The script
and the reads tolerate anything stored under the keys (a wrong type, a non-numeric position): one entity's
bad data never fails a batch. An error that is the store's and not one entity's (a connection lost, a Redis
Cluster failing over: ``CLUSTERDOWN``, ``MOVED``, ``TRYAGAIN``) fails the whole read: a batched read never
returns such an entity as absent (:func:`_entity_problem`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    MovedError,
    RedisClusterException,
    TimeoutError,
    TryAgainError,
)

from features.coalesce import Coalescer
from features.errors import StoreError
from features.events import MAX_TS_MS, MIN_TS_MS
from features.store import FeatureRow, Loaded, OnlineStore, StateStore, StateUpdate, Unreadable, decode_state
from features.summaries import scalar

__all__ = ["FAILOVER_ERRORS", "RedisStore", "entity_tag", "legacy_entity", "state_key", "vector_key"]

T = TypeVar("T")

# what a client sees while a Redis Cluster fails over (a primary gone, its replica not yet promoted or not
# yet known to the client) or a node restarts: retried by a store given ``failover_s``
FAILOVER_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    ClusterDownError,
    TryAgainError,
    MovedError,
    RedisClusterException,
)
FAILOVER_PAUSE_S = 0.25  # between two tries (the cluster client re-reads the slots' owners meanwhile)

# One entity's write: vector key, state key (nil: none), its meta as strings (ts, ttl seconds (0: none),
# topic, partition, offset, "1" to replace the vector whatever its time (a reset), then field, value, ...)
# and its state JSON. A state whose stored position is ahead on the same topic-partition is not overwritten
# (-1): a zombie writer that lost its partition in a rebalance cannot roll an entity back (an offset beyond
# int64 is not a position: ignored). A key of another type than a hash, or a position that is not a number,
# is replaced rather than failing the script. Returns 1 (written), 0 (the vector was older) or -1.
_ONE = """
local function as_hash(key)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'hash' and t ~= 'none' then redis.call('DEL', key) end
end
local function write_one(vkey, skey, m, state)
  local ttl = tonumber(m[2])
  if skey then
    as_hash(skey)
    local pos = redis.call('HMGET', skey, 't', 'p', 'o')
    local o = tonumber(pos[3])
    -- an offset no Kafka partition can have (beyond int64: tampering) protects nothing
    if o and o <= 9223372036854775807 and pos[1] == m[3] and pos[2] == m[4] and o > tonumber(m[5]) then
      return -1
    end
    redis.call('DEL', skey)
    redis.call('HSET', skey, 's', state, 't', m[3], 'p', m[4], 'o', m[5])
    if ttl > 0 then redis.call('EXPIRE', skey, ttl) end
  end
  as_hash(vkey)
  local current = tonumber(redis.call('HGET', vkey, '_ts'))
  -- a time beyond any event time (9999-12-31) is not one: it would keep the vector from changing, forever
  if m[6] ~= '1' and current and current <= 253402300799999 and current > tonumber(m[1]) then
    return 0
  end
  redis.call('DEL', vkey)
  redis.call('HSET', vkey, '_ts', m[1], unpack(m, 7))
  if ttl > 0 then redis.call('EXPIRE', vkey, ttl) end
  return 1
end
"""
# One entity, its arguments flat: KEYS[1] vector key, KEYS[2] state key (optional); ARGV[1] ts, ARGV[2] ttl,
# ARGV[3] state JSON, ARGV[4] topic, ARGV[5] partition, ARGV[6] offset, ARGV[7] reset, ARGV[8..] field,
# value, ... Returns write_one's answer.
_WRITE = (
    _ONE
    + """
local m = {ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7], unpack(ARGV, 8)}
return write_one(KEYS[1], KEYS[2], m, ARGV[3])
"""
)
# Many entities in one call (the feature worker's commit: ~35 arguments an entity cost redis-py more to pack
# than the engine took to compute them): KEYS vector key, state key of each entity; ARGV per entity its meta
# as one JSON array of strings (decoded by cjson: strings come back exact), then its state JSON. Every
# entity's write is atomic (the whole call is). Returns how many were refused (-1).
_COMMIT = (
    _ONE
    + """
local refused = 0
for i = 1, #KEYS / 2 do
  if write_one(KEYS[2 * i - 1], KEYS[2 * i], cjson.decode(ARGV[2 * i - 1]), ARGV[2 * i]) == -1 then
    refused = refused + 1
  end
end
return refused
"""
)
# entities per _COMMIT call (one Redis, not a cluster): Redis runs a script alone, so not too many at once
COMMIT_CHUNK = 200


def entity_tag(entity: str) -> str:
    """The hash tag of an entity's keys: ``{`` + its UTF-8 in unpadded URL-safe base64 + ``}``.

    >>> entity_tag("u1"), entity_tag("}x{"), entity_tag("")
    ('{dTE}', '{fXh7}', '{=}')
    """
    encoded = base64.urlsafe_b64encode(entity.encode("utf-8", "surrogatepass")).rstrip(b"=").decode()
    return "{" + (encoded or "=") + "}"  # "=" is never produced unpadded: the empty entity's own tag


def vector_key(prefix: str, view: str, entity: str) -> str:
    return f"{prefix}fv:{view}:{entity_tag(entity)}"


def state_key(prefix: str, view: str, entity: str) -> str:
    return f"{prefix}fs:{view}:{entity_tag(entity)}"


def legacy_entity(prefix: str, key: str) -> tuple[str, str, str] | None:
    """``(kind, view, entity)`` of a key in the scheme before :func:`entity_tag` (``fv:<view>:{<entity>}``),
    None for a key of the current scheme or another key.

    >>> legacy_entity("p:", "p:fv:v:{}x{}"), legacy_entity("p:", vector_key("p:", "v", "}x{"))
    (('fv', 'v', '}x{'), None)
    """
    if not key.startswith(prefix):
        return None
    kind, sep, rest = key[len(prefix) :].partition(":")
    view, sep2, tagged = rest.partition(":")
    if (
        kind not in ("fv", "fs")
        or not (sep and sep2)
        or not (tagged.startswith("{") and tagged.endswith("}"))
    ):
        return None
    inner = tagged[1:-1]
    if _is_tag(inner):
        return None
    return kind, view, inner


def _is_tag(inner: str) -> bool:
    if inner == "=":
        return True
    try:
        decoded = base64.urlsafe_b64decode(inner + "=" * (-len(inner) % 4)).decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        return False
    return entity_tag(decoded) == "{" + inner + "}"


def _args(row: FeatureRow, state: Any, reset: bool = False, payload: bytes | None = None) -> list[Any]:
    pos = (state.position if state is not None else None) or {}
    if payload is None and state is not None:
        payload = state.to_json()
    args: list[Any] = [
        row.ts,
        row.ttl_s or 0,
        payload if payload is not None else b"",
        pos.get("t", ""),
        pos.get("p", -1),
        pos.get("o", -1),
        "1" if reset else "0",
    ]
    dumps = orjson.dumps
    for name, value in row.values.items():
        args.append(name)
        args.append(dumps(value))
    return args


def _meta(u: StateUpdate) -> bytes:
    """An entity's arguments to ``_COMMIT`` but its state: one JSON array of strings, the same strings
    ``_args`` gives redis-py to send (an int as its decimal digits, a value as its JSON).

    >>> from features.engine import EntityState
    >>> state = EntityState(position={"t": "ev", "p": 0, "o": 7})
    >>> orjson.loads(_meta(StateUpdate("e", state, FeatureRow("v", "e", {"n": 1.5, "w": "x"}, 5, 60))))
    ['5', '60', 'ev', '0', '7', '0', 'n', '1.5', 'w', '"x"']
    """
    pos = u.at or {}
    row, dumps = u.row, orjson.dumps
    meta = [str(row.ts), str(row.ttl_s or 0), str(pos.get("t", "")), str(pos.get("p", -1))]
    meta += [str(pos.get("o", -1)), "1" if u.reset else "0"]
    for name, value in row.values.items():
        meta.append(name)
        meta.append(dumps(value).decode())
    return dumps(meta)


def _entity_problem(reply: Any) -> Any:
    """A reply of a batched read, raised if it is an error about the store rather than one entity's data.

    Only ``WRONGTYPE`` (something else stored under the entity's key) is the entity's own problem, and is
    returned for the caller to treat as no vector (or an unreadable state). Any other error reply (a
    connection lost, ``CLUSTERDOWN`` or ``MOVED`` while a Redis Cluster fails over, a timeout) says
    nothing about the entity: read as a missing row, it made the API serve a vector with the entity's
    features missing during a failover (200 instead of 503), and made the feature worker reset a state
    it could not read (``corrupt_state``), losing the entity's history.

    >>> from redis.exceptions import ClusterDownError, ResponseError
    >>> _entity_problem({b"_ts": b"5"}), type(_entity_problem(ResponseError("WRONGTYPE Operation"))).__name__
    ({b'_ts': b'5'}, 'ResponseError')
    >>> _entity_problem(ClusterDownError("The cluster is down"))
    Traceback (most recent call last):
    redis.exceptions.ClusterDownError: The cluster is down
    """
    if not isinstance(reply, BaseException):
        return reply
    if type(reply) is aioredis.ResponseError and str(reply).startswith("WRONGTYPE"):
        return reply
    raise reply


# One vector and its key's PTTL in one command (the near cache's miss: a redis-py pipeline of HGETALL and
# PTTL cost the API ~25 us of CPU more than one command). A key that is not a hash reads as no vector
# (false), as HGETALL's WRONGTYPE does in a pipeline.
_EXPIRING = """
local h = redis.pcall('HGETALL', KEYS[1])
if h['err'] then h = false end
return {h, redis.call('PTTL', KEYS[1])}
"""
# Many vectors in one command (single-entity reads coalesced: features.coalesce), each key's HGETALL as a
# flat array (false: not a hash, as above), followed by its PTTL when ARGV[1] is "1".
_READ_MANY = """
local out, n, ttl = {}, 0, ARGV[1] == '1'
for i = 1, #KEYS do
  local h = redis.pcall('HGETALL', KEYS[i])
  if h['err'] then h = false end
  n = n + 1
  out[n] = h
  if ttl then
    n = n + 1
    out[n] = redis.call('PTTL', KEYS[i])
  end
end
return out
"""


def _hash(flat: list[bytes] | None) -> dict[bytes, bytes] | None:
    """A hash read by a script (a flat array of field, value, ...; None: not a hash)."""
    return dict(zip(flat[::2], flat[1::2], strict=True)) if flat else None


def _left(ttl_ms: Any) -> float | None:
    """The seconds a key has left from its ``PTTL`` (-1: no expiry, -2: gone: None)."""
    return ttl_ms / 1000 if isinstance(ttl_ms, int) and ttl_ms >= 0 else None


def _row(view: str, entity: str, raw: Any) -> FeatureRow | None:
    """A stored vector, or None if absent or not one: a wrong type, bytes that do not decode, a value that
    is not a scalar in the numeric domain (JSON of another shape, an integer beyond int64), a time that is
    not an event time. What the store wrote always is one; anything else is not served."""
    if not raw or not isinstance(raw, dict):
        return None
    try:
        ts = int(raw.pop(b"_ts"))
        values = {k.decode(): orjson.loads(v) for k, v in raw.items()}
    except (KeyError, ValueError, TypeError, UnicodeDecodeError):
        return None
    if not MIN_TS_MS <= ts <= MAX_TS_MS or not all(map(scalar, values.values())):
        return None
    return FeatureRow(view, entity, values, ts)


class RedisStore(OnlineStore, StateStore):
    """Online vectors and engine state in Redis (``redis.asyncio``; hiredis parses replies when installed).

    ``client`` is a ``redis.asyncio.Redis`` or a ``redis.asyncio.cluster.RedisCluster``. ``failover_s``:
    how long an operation that fails with one of :data:`FAILOVER_ERRORS` is tried again (every
    ``FAILOVER_PAUSE_S``) before the error is raised: the feature worker's store rides through a Redis
    Cluster failover (a few seconds: the cluster's node timeout, then an election) instead of failing its
    batch and exiting. Every operation may run twice: the writes are idempotent (the same state at the same
    position is written again). 0 (the API's store): no retry, the caller answers at once (503)."""

    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str, failover_s: float = 0.0) -> None:
        if "{" in prefix or "}" in prefix:
            raise StoreError(f"key prefix {prefix!r}: braces would make Redis Cluster hash the wrong part")
        self._client = client
        self._failover_s = failover_s
        self.failovers = 0  # operations that succeeded after a retry (a count for tests and logs)
        self._prefix = prefix
        self._cluster = isinstance(client, RedisCluster)
        self._script = client.register_script(_WRITE)
        self._commit_script = client.register_script(_COMMIT)
        self._expiring_script = client.register_script(_EXPIRING)
        self._read_many_script = client.register_script(_READ_MANY)
        # one entity's reads (the API's requests) issued in one turn of the event loop go to Redis as one
        # command (features.coalesce); not on a cluster, where their keys span slots
        self._reads: Coalescer[str, Any] = Coalescer(self._hgetall, self._hgetall_many)
        self._expiring_reads: Coalescer[str, tuple[Any, Any]] = Coalescer(
            self._expiring_one, self._expiring_many
        )

    async def _riding(self, op: Callable[[], Awaitable[T]]) -> T:
        """``op()``, tried again on :data:`FAILOVER_ERRORS` until ``failover_s`` have passed."""
        deadline = time.monotonic() + self._failover_s
        retried = False
        while True:
            try:
                result = await op()
            except FAILOVER_ERRORS:
                if time.monotonic() >= deadline:
                    raise
                retried = True
                await asyncio.sleep(FAILOVER_PAUSE_S)
                continue
            self.failovers += retried
            return result

    def _pipeline(self) -> Any:
        return self._client.pipeline() if self._cluster else self._client.pipeline(transaction=False)

    async def _write(self, pipe: Any, keys: list[str], args: list[Any]) -> None:
        if self._cluster:  # EVAL: a cluster pipeline does not load scripts on the nodes it reaches
            pipe.eval(_WRITE, len(keys), *keys, *args)
        else:
            await self._script(keys=keys, args=args, client=pipe)

    async def write(self, rows: Sequence[FeatureRow]) -> int:
        return await self._riding(lambda: self._write_rows(rows))

    async def _write_rows(self, rows: Sequence[FeatureRow]) -> int:
        if not rows:
            return 0
        pipe = self._pipeline()
        for row in rows:
            await self._write(pipe, [vector_key(self._prefix, row.view, row.entity)], _args(row, None))
        return sum(int(r) for r in await pipe.execute())

    async def read(self, view: str, entities: Sequence[str]) -> list[FeatureRow | None]:
        return await self._riding(lambda: self._read(view, entities))

    async def _read(self, view: str, entities: Sequence[str]) -> list[FeatureRow | None]:
        if not entities:
            return []
        if len(entities) == 1:  # one command needs no pipeline (cheaper on the scoring hot path)
            key = vector_key(self._prefix, view, entities[0])
            replies: list[Any] = [await (self._hgetall(key) if self._cluster else self._reads(key))]
        else:
            pipe = self._pipeline()
            for e in entities:
                pipe.hgetall(vector_key(self._prefix, view, e))
            replies = [_entity_problem(r) for r in await pipe.execute(raise_on_error=False)]
        return [_row(view, entity, raw) for entity, raw in zip(entities, replies, strict=True)]

    async def read_expiring(
        self, view: str, entities: Sequence[str]
    ) -> list[tuple[FeatureRow | None, float | None]]:
        return await self._riding(lambda: self._read_expiring(view, entities))

    async def _read_expiring(
        self, view: str, entities: Sequence[str]
    ) -> list[tuple[FeatureRow | None, float | None]]:
        """Each vector and its key's TTL (``PTTL`` in the same pipeline): Redis reports an expired key only
        when it deletes it, which its sampling sweep may do long after the TTL, so a cache cannot wait for
        that report."""
        if not entities:
            return []
        if len(entities) == 1 and not self._cluster:  # one command, no pipeline: the scoring path's miss
            raw, ttl = await self._expiring_reads(vector_key(self._prefix, view, entities[0]))
            return [(_row(view, entities[0], raw), _left(ttl))]
        pipe = self._pipeline()
        for e in entities:
            key = vector_key(self._prefix, view, e)
            pipe.hgetall(key)
            pipe.pttl(key)
        replies = [_entity_problem(r) for r in await pipe.execute(raise_on_error=False)]
        out: list[tuple[FeatureRow | None, float | None]] = []
        for i, entity in enumerate(entities):
            out.append((_row(view, entity, replies[2 * i]), _left(replies[2 * i + 1])))
        return out

    # -- one entity's reads, alone or coalesced (an error is the store's, not the entity's: a key of another
    # type reads as no vector, as WRONGTYPE does in a pipeline) -----------------------------------------

    async def _hgetall(self, key: str) -> Any:
        try:
            return await self._client.hgetall(key)
        except aioredis.ResponseError as exc:
            return _entity_problem(exc)  # not a hash: no vector; CLUSTERDOWN and the like raise

    async def _hgetall_many(self, keys: list[str]) -> list[Any]:
        return [_hash(flat) for flat in await self._read_many_script(keys=keys, args=["0"])]

    async def _expiring_one(self, key: str) -> tuple[Any, Any]:
        flat, ttl = await self._expiring_script(keys=[key])
        return _hash(flat), ttl

    async def _expiring_many(self, keys: list[str]) -> list[tuple[Any, Any]]:
        out = await self._read_many_script(keys=keys, args=["1"])
        return [(_hash(out[i]), out[i + 1]) for i in range(0, len(out), 2)]

    async def load(self, view: str, entities: Sequence[str]) -> dict[str, Loaded]:
        return await self._riding(lambda: self._load(view, entities))

    async def _load(self, view: str, entities: Sequence[str]) -> dict[str, Loaded]:
        if not entities:
            return {}
        pipe = self._pipeline()  # not MGET: on a cluster the keys span slots
        for e in entities:
            pipe.hget(state_key(self._prefix, view, e), "s")
        raws = [_entity_problem(r) for r in await pipe.execute(raise_on_error=False)]
        out: dict[str, Loaded] = {}
        for e, raw in zip(entities, raws, strict=True):
            if isinstance(raw, Exception):  # WRONGTYPE: something else is stored under the key
                out[e] = Unreadable(f"cannot be read: {type(raw).__name__}")
            elif raw:
                out[e] = decode_state(raw)
        return out

    async def commit(self, view: str, updates: Sequence[StateUpdate]) -> int:
        return await self._riding(lambda: self._commit(view, updates))

    async def _commit(self, view: str, updates: Sequence[StateUpdate]) -> int:
        if not updates:
            return 0
        pipe = self._pipeline()
        # one entity a call on a cluster (its two keys share a slot; the batch's do not), else many
        chunk = 1 if self._cluster else COMMIT_CHUNK
        for i in range(0, len(updates), chunk):
            keys: list[str] = []
            args: list[bytes] = []
            for u in updates[i : i + chunk]:
                keys += (vector_key(self._prefix, view, u.entity), state_key(self._prefix, view, u.entity))
                args += (_meta(u), u.state_json())
            if self._cluster:  # EVAL: a cluster pipeline does not load scripts on the nodes it reaches
                pipe.eval(_COMMIT, len(keys), *keys, *args)
            else:
                await self._commit_script(keys=keys, args=args, client=pipe)
        return sum(int(r) for r in await pipe.execute())  # refused: the stored position was ahead

    async def migrate_keys(self, batch: int = 500) -> int:
        """Move every vector and state key of the scheme before :func:`entity_tag` (``{<entity>}``) to the
        current one; a key that already exists in the current scheme is kept and the old one dropped.
        Returns how many keys were moved. Run it once, with the feature workers stopped, after upgrading
        (``python -c`` with the store, see the README). On a cluster it scans every primary."""
        moved = 0
        for pattern in (f"{self._prefix}fv:*", f"{self._prefix}fs:*"):
            async for raw_key in self._client.scan_iter(match=pattern, count=batch):
                key = raw_key.decode("utf-8", "surrogatepass") if isinstance(raw_key, bytes) else raw_key
                found = legacy_entity(self._prefix, key)
                if found is None:
                    continue
                kind, view, entity = found
                new = (vector_key if kind == "fv" else state_key)(self._prefix, view, entity)
                dump, ttl = await self._client.dump(raw_key), await self._client.pttl(raw_key)
                if dump is not None and not await self._client.exists(new):
                    await self._client.restore(new, max(ttl, 0), dump)
                    moved += 1
                await self._client.delete(raw_key)
        return moved

    async def add_counts(self, key: str, counts: dict[str, int]) -> None:
        """Add to counters in a hash (operational statistics, not exactly-once: a retry may add twice)."""
        await self._riding(lambda: self._add_counts(key, counts))

    async def _add_counts(self, key: str, counts: dict[str, int]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for name, n in counts.items():
            pipe.hincrby(key, name, n)
        await pipe.execute()

    async def counts(self, key: str) -> dict[str, int]:
        raw = await self._client.hgetall(key)
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    async def ping(self) -> bool:
        return bool(await self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()
