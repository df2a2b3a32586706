"""One suite for both online stores: in memory, and Redis (real server, per-test key prefix)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from features.engine import EntityState
from features.redis_store import RedisStore, state_key, vector_key
from features.store import FeatureRow, MemoryStore, StateUpdate, Unreadable
from streaming import clients
from streaming.settings import Settings

pytestmark = pytest.mark.integration

Body = Callable[[Any, Callable[[float], None]], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
def with_store(request: pytest.FixtureRequest, settings: Settings) -> Callable[[Body], None]:
    """Run an async test body with a fresh store and a way to let time pass (for TTLs)."""

    def run(body: Body) -> None:
        async def go() -> None:
            if request.param == "memory":
                now = [1_000.0]
                store: Any = MemoryStore(clock=lambda: now[0])

                def advance(s: float) -> None:
                    now[0] += s
            else:
                request.getfixturevalue(
                    "redis_client"
                )  # live Redis, keys under the prefix removed afterwards
                store = clients.feature_store(settings)

                def advance(s: float) -> None:
                    raise NotImplementedError("TTL expiry on Redis is checked through TTL, not by waiting")

            try:
                await body(store, advance)
            finally:
                await store.close()

        asyncio.run(go())

    return run


def row(entity: str, ts: int, **values: Any) -> FeatureRow:
    return FeatureRow("v", entity, values, ts, ttl_s=60)


def test_batched_write_and_read_many(with_store: Callable[[Body], None]) -> None:
    async def body(store: Any, advance: Any) -> None:
        written = await store.write([row("a", 10, x=1.5, s="hi", n=None, b=True), row("b", 20, x=2)])
        assert written == 2
        got = await store.read("v", ["a", "missing", "b"])
        assert got[1] is None
        assert (got[0].values, got[0].ts) == ({"x": 1.5, "s": "hi", "n": None, "b": True}, 10)
        assert (got[2].entity, got[2].values, got[2].ts) == ("b", {"x": 2}, 20)
        assert await store.read("other-view", ["a"]) == [None]

    with_store(body)


def test_an_older_vector_never_overwrites_a_newer_one(with_store: Callable[[Body], None]) -> None:
    async def body(store: Any, advance: Any) -> None:
        assert await store.write([row("a", 100, x=1)]) == 1
        assert await store.write([row("a", 99, x=0), row("b", 5, y=1)]) == 1  # stale a refused, b written
        assert await store.write([row("a", 100, x=2)]) == 1  # same time: a rewrite, accepted
        (a,) = await store.read("v", ["a"])
        assert (a.values, a.ts) == ({"x": 2}, 100)
        assert await store.write([row("a", 101, z=3)]) == 1  # a newer vector replaces the whole vector
        (a,) = await store.read("v", ["a"])
        assert a.values == {"z": 3}

    with_store(body)


def test_state_commits_with_its_vector(with_store: Callable[[Body], None]) -> None:
    async def body(store: Any, advance: Any) -> None:
        state = EntityState(
            watermark=50,
            seq=2,
            tiles={"1m@1000": [[0, [2]]]},
            settled={"c": [1]},
            position={"t": "events", "p": 1, "o": 7},
        )
        await store.commit("v", [StateUpdate("a", state, row("a", 50, c=2))])
        loaded = await store.load("v", ["a", "b"])
        assert list(loaded) == ["a"] and loaded["a"] == state
        (a,) = await store.read("v", ["a"])
        assert a.values == {"c": 2} and a.ts == 50
        # a stale writer (an earlier offset on the same partition) cannot roll the entity back
        stale = EntityState(watermark=60, seq=1, position={"t": "events", "p": 1, "o": 6})
        await store.commit("v", [StateUpdate("a", stale, row("a", 60, c=9))])
        assert (await store.load("v", ["a"]))["a"] == state
        assert (await store.read("v", ["a"]))[0].values == {"c": 2}

    with_store(body)


def test_vectors_expire_after_the_ttl_memory() -> None:
    async def go() -> None:
        now = [0.0]
        store = MemoryStore(clock=lambda: now[0])
        await store.write([FeatureRow("v", "a", {"x": 1}, 1, ttl_s=30)])
        now[0] = 29.0
        assert (await store.read("v", ["a"]))[0] is not None
        now[0] = 30.0
        assert (await store.read("v", ["a"])) == [None]

    asyncio.run(go())


def test_redis_keys_carry_the_entity_hash_tag_and_the_ttl(
    settings: Settings, redis_client: redis.Redis
) -> None:
    async def go() -> None:
        store = clients.feature_store(settings)
        try:
            await store.commit(
                "v", [StateUpdate("u:1", EntityState(watermark=5), FeatureRow("v", "u:1", {"x": 1}, 5, 90))]
            )
        finally:
            await store.close()

    asyncio.run(go())
    vkey, skey = vector_key(settings.redis_prefix, "v", "u:1"), state_key(settings.redis_prefix, "v", "u:1")
    assert vkey.endswith(":fv:v:{dTox}") and skey.endswith(":fs:v:{dTox}")  # base64url of "u:1"
    assert key_slot(vkey.encode()) == key_slot(skey.encode())  # one entity: one Redis Cluster slot
    assert 0 < redis_client.ttl(vkey) <= 90 and 0 < redis_client.ttl(skey) <= 90
    assert redis_client.hget(vkey, "_ts") == b"5"


def test_bad_bytes_under_an_entitys_keys_never_fail_a_batch(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Whatever is stored under an entity's keys (a state that does not decode, a key of another type, a
    position or a time that is not a number), loading, reading and committing that entity work, and the other
    entities of the same round trip are unaffected."""
    p = settings.redis_prefix
    redis_client.hset(state_key(p, "v", "garbage"), mapping={"s": b"\x00not json", "o": "x"})
    redis_client.set(state_key(p, "v", "wrongtype"), b"a string, not a hash")
    redis_client.set(vector_key(p, "v", "wrongtype"), b"also a string")
    redis_client.hset(vector_key(p, "v", "badvector"), mapping={"_ts": "soon", "x": b"{nope"})
    redis_client.hset(state_key(p, "v", "badpos"), mapping={"s": b"{}", "t": "events", "p": "1", "o": "NaN?"})
    good = EntityState(watermark=5, position={"t": "events", "p": 1, "o": 3})

    async def go() -> None:
        store = clients.feature_store(settings)
        try:
            await store.commit("v", [StateUpdate("good", good, row("good", 5, x=1))])
            loaded = await store.load("v", ["garbage", "wrongtype", "good", "absent"])
            assert (
                isinstance(loaded["garbage"], Unreadable) and "does not decode" in loaded["garbage"].problem
            )
            assert (
                isinstance(loaded["wrongtype"], Unreadable) and "ResponseError" in loaded["wrongtype"].problem
            )
            assert loaded["good"] == good and "absent" not in loaded
            assert await store.read("v", ["badvector", "wrongtype", "good"]) == [
                None,
                None,
                FeatureRow("v", "good", {"x": 1}, 5),
            ]
            assert await store.read("v", ["wrongtype"]) == [None]
            # committing over each of them replaces what was there
            fresh = EntityState(watermark=9, position={"t": "events", "p": 1, "o": 8})
            updates = [
                StateUpdate(e, fresh, row(e, 9, x=2)) for e in ("garbage", "wrongtype", "badvector", "badpos")
            ]
            await store.commit("v", updates)
            entities = ["garbage", "wrongtype", "badvector", "badpos"]
            assert await store.load("v", entities) == dict.fromkeys(entities, fresh)
            assert [r.values if r else None for r in await store.read("v", entities)] == [{"x": 2}] * 4
        finally:
            await store.close()

    asyncio.run(go())


def test_read_expiring_gives_each_vector_and_its_ttl_one_entity_as_many(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """The near cache's read: one entity (one script call, issue 16) answers as a batch does (a pipeline of
    HGETALL and PTTL): the vector, the seconds its key has left (None: no expiry, or no key), and anything
    that is not a vector (a key of another type, bad bytes, an empty key) as none."""
    p = settings.redis_prefix
    redis_client.set(vector_key(p, "v", "wrongtype"), b"a string, not a hash")
    redis_client.expire(vector_key(p, "v", "wrongtype"), 50)
    redis_client.hset(vector_key(p, "v", "badvector"), mapping={"_ts": "soon", "x": b"{nope"})
    redis_client.hset(vector_key(p, "v", "forever"), mapping={"_ts": "4", "x": b"2.5", "s": b'"t"'})
    entities = ["good", "wrongtype", "badvector", "forever", "absent"]

    async def go() -> list[Any]:
        store = clients.feature_store(settings)
        try:
            await store.write([row("good", 5, x=1)])
            one = [(await store.read_expiring("v", [e]))[0] for e in entities]
            many = await store.read_expiring("v", entities)
            assert [r for r, _ in one] == [r for r, _ in many] == await store.read("v", entities)
            return [(r, None if left is None else 0 < left <= 60) for r, left in one] + [
                (r, None if left is None else 0 < left <= 60) for r, left in many
            ]
        finally:
            await store.close()

    expected = [
        (FeatureRow("v", "good", {"x": 1}, 5), True),
        (None, True),
        (None, None),
        (FeatureRow("v", "forever", {"x": 2.5, "s": "t"}, 4), None),
        (None, None),
    ]
    assert asyncio.run(go()) == expected * 2


def test_a_reset_replaces_a_newer_vector(with_store: Callable[[Body], None]) -> None:
    """After a corrupt state is reset, the entity's vector is the empty state's, whatever time it had."""

    async def body(store: Any, advance: Any) -> None:
        await store.commit("v", [StateUpdate("a", EntityState(watermark=100), row("a", 100, c=7))])
        await store.commit("v", [StateUpdate("a", EntityState(), row("a", 0, c=0))])  # older: refused
        assert (await store.read("v", ["a"]))[0].values == {"c": 7}
        await store.commit("v", [StateUpdate("a", EntityState(), row("a", 0, c=0), reset=True)])
        (a,) = await store.read("v", ["a"])
        assert (a.values, a.ts) == ({"c": 0}, 0)

    with_store(body)


def test_keys_of_the_old_scheme_are_migrated(settings: Settings, redis_client: redis.Redis) -> None:
    p = settings.redis_prefix
    state = EntityState(watermark=5, seq=1, position={"t": "events", "p": 0, "o": 4})
    for entity in ("u1", "}x{", "é"):
        redis_client.hset(f"{p}fv:v:{{{entity}}}", mapping={"_ts": 5, "x": b"1"})
        redis_client.expire(f"{p}fv:v:{{{entity}}}", 300)
        redis_client.hset(
            f"{p}fs:v:{{{entity}}}", mapping={"s": state.to_json(), "t": "events", "p": 0, "o": 4}
        )

    async def go() -> None:
        store = clients.feature_store(settings)
        try:
            assert await store.read("v", ["u1"]) == [None]  # the new scheme does not see old keys
            assert await store.migrate_keys() == 6
            assert await store.migrate_keys() == 0  # idempotent
            assert await store.load("v", ["u1", "}x{", "é"]) == {"u1": state, "}x{": state, "é": state}
            rows = await store.read("v", ["u1", "}x{", "é"])
            assert [(r.values, r.ts) for r in rows if r] == [({"x": 1}, 5)] * 3
        finally:
            await store.close()

    asyncio.run(go())
    keys = sorted(k.decode() for k in redis_client.scan_iter(match=f"{p}*"))
    assert keys == sorted(
        [
            *(vector_key(p, "v", e) for e in ("u1", "}x{", "é")),
            *(state_key(p, "v", e) for e in ("u1", "}x{", "é")),
        ]
    )
    assert 0 < redis_client.ttl(vector_key(p, "v", "u1")) <= 300


def test_a_key_prefix_with_braces_is_refused() -> None:
    """A brace in the prefix would become the hash tag: an entity's keys would no longer share a slot."""
    import redis.asyncio as aioredis

    from features.errors import StoreError

    client = aioredis.Redis()  # never connected
    for prefix in ("rivulet{", "a}b:"):
        with pytest.raises(StoreError, match="braces"):
            RedisStore(client, prefix)
    assert RedisStore(client, "rivulet:")._prefix == "rivulet:"


def test_a_commit_of_many_entities_refuses_only_the_stale_one_and_keeps_every_value_exact(
    with_store: Callable[[Body], None],
) -> None:
    """The worker's commit sends many entities per script call (their meta as one JSON argument each, more
    than one call's worth here): one entity whose stored position is ahead is refused and counted, the
    others in the same call and the next are written, and what is stored reads back exactly (a 15-digit
    time, a 63-bit offset and integer, a float's last bits, quotes, unicode and a line separator)."""
    n = 450  # more than RedisStore's COMMIT_CHUNK entities: three script calls
    odd = 'q"u\\o\u2028té'
    values = {"big": 2**62 + 1, "f": 0.1 + 0.2, odd: odd, "none": None}
    ts = 253_402_300_799_999

    def update(i: int, offset: int) -> StateUpdate:
        state = EntityState(watermark=ts, position={"t": "events", "p": 2, "o": offset})
        return StateUpdate(f"e{i}", state, FeatureRow("v", f"e{i}", {**values, "i": i}, ts, ttl_s=60))

    async def body(store: Any, advance: Any) -> None:
        ahead = update(321, 2**62)
        assert await store.commit("v", [ahead]) == 0
        assert await store.commit("v", [update(i, 1_000 + i) for i in range(n)]) == 1
        loaded = await store.load("v", [f"e{i}" for i in range(n)])
        assert loaded["e321"] == ahead.state
        assert all(loaded[f"e{i}"].position["o"] == 1_000 + i for i in range(n) if i != 321)
        rows = await store.read("v", [f"e{i}" for i in range(n)])
        for i, r in enumerate(rows):
            assert r is not None and (r.ts, r.values) == (ts, {**values, "i": i})

    with_store(body)
