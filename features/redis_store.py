"""Redis implementation of the online store and the state store.

Keys carry a hash tag on the entity, so all keys of one entity live in one slot of a Redis Cluster:

- ``<prefix>fv:<view>:{<entity>}``: a hash, one field per feature (its value JSON-encoded) plus ``_ts``,
  the event time the vector reflects; expires after the view's TTL;
- ``<prefix>fs:<view>:{<entity>}``: a hash with the engine's state of the entity (``s``, JSON) and the
  source position of the last event applied (``t``, ``p``, ``o``).

Every write is a Lua script per entity, so it is atomic for that entity and idempotent by event time: a
vector older than the stored ``_ts`` is not written. A batch is one pipeline: one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from features.engine import EntityState
from features.store import FeatureRow, OnlineStore, StateStore, StateUpdate

__all__ = ["RedisStore", "state_key", "vector_key"]

# KEYS[1] vector key, KEYS[2] state key (optional: a hash with the state and its source position)
# ARGV[1] ts, ARGV[2] ttl seconds (0: none), ARGV[3] state JSON, ARGV[4] topic, ARGV[5] partition,
# ARGV[6] offset, ARGV[7..] field, value, ...
# A state whose stored position is ahead on the same topic-partition is not overwritten (-1): a zombie
# writer that lost its partition in a rebalance cannot roll an entity back.
_WRITE = """
if KEYS[2] then
  local pos = redis.call('HMGET', KEYS[2], 't', 'p', 'o')
  if pos[3] and pos[1] == ARGV[4] and pos[2] == ARGV[5] and tonumber(pos[3]) > tonumber(ARGV[6]) then
    return -1
  end
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 's', ARGV[3], 't', ARGV[4], 'p', ARGV[5], 'o', ARGV[6])
  if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
end
local current = redis.call('HGET', KEYS[1], '_ts')
if current and tonumber(current) > tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_ts', ARGV[1], unpack(ARGV, 7))
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def vector_key(prefix: str, view: str, entity: str) -> str:
    return f"{prefix}fv:{view}:{{{entity}}}"


def state_key(prefix: str, view: str, entity: str) -> str:
    return f"{prefix}fs:{view}:{{{entity}}}"


def _args(row: FeatureRow, state: EntityState | None) -> list[Any]:
    pos = (state.position if state is not None else None) or {}
    args: list[Any] = [
        row.ts,
        row.ttl_s or 0,
        state.to_json() if state is not None else b"",
        pos.get("t", ""),
        pos.get("p", -1),
        pos.get("o", -1),
    ]
    dumps = orjson.dumps
    for name, value in row.values.items():
        args.append(name)
        args.append(dumps(value))
    return args


class RedisStore(OnlineStore, StateStore):
    """Online vectors and engine state in Redis (``redis.asyncio``; hiredis parses replies when installed)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_WRITE)

    @classmethod
    def from_url(
        cls, url: str, prefix: str, *, socket_timeout: float = 2.0, connect_timeout: float = 2.0
    ) -> RedisStore:
        client = aioredis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout
        )
        return cls(client, prefix)

    async def write(self, rows: Sequence[FeatureRow]) -> int:
        if not rows:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for row in rows:
            await self._script(
                keys=[vector_key(self._prefix, row.view, row.entity)], args=_args(row, None), client=pipe
            )
        return sum(int(r) for r in await pipe.execute())

    async def read(self, view: str, entities: Sequence[str]) -> list[FeatureRow | None]:
        if not entities:
            return []
        if len(entities) == 1:  # one command needs no pipeline (cheaper on the scoring hot path)
            replies: list[Any] = [await self._client.hgetall(vector_key(self._prefix, view, entities[0]))]
        else:
            pipe = self._client.pipeline(transaction=False)
            for e in entities:
                pipe.hgetall(vector_key(self._prefix, view, e))
            replies = await pipe.execute()
        out: list[FeatureRow | None] = []
        loads = orjson.loads
        for entity, raw in zip(entities, replies, strict=True):
            if not raw:
                out.append(None)
                continue
            ts = int(raw.pop(b"_ts"))
            values = {k.decode(): loads(v) for k, v in raw.items()}
            out.append(FeatureRow(view, entity, values, ts))
        return out

    async def load(self, view: str, entities: Sequence[str]) -> dict[str, EntityState]:
        if not entities:
            return {}
        pipe = self._client.pipeline(transaction=False)  # not MGET: on a cluster the keys span slots
        for e in entities:
            pipe.hget(state_key(self._prefix, view, e), "s")
        raws = await pipe.execute()
        return {e: EntityState.from_json(raw) for e, raw in zip(entities, raws, strict=True) if raw}

    async def commit(self, view: str, updates: Sequence[StateUpdate]) -> None:
        if not updates:
            return
        pipe = self._client.pipeline(transaction=False)
        for u in updates:
            keys = [vector_key(self._prefix, view, u.entity), state_key(self._prefix, view, u.entity)]
            await self._script(keys=keys, args=_args(u.row, u.state), client=pipe)
        await pipe.execute()

    async def add_counts(self, key: str, counts: dict[str, int]) -> None:
        """Add to counters in a hash (operational statistics, not exactly-once)."""
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
