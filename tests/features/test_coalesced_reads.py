"""The Redis store's one-entity reads issued in one turn of the event loop go to Redis as one command
(features.coalesce, features/redis_store.py ``_READ_MANY``), on a real Redis of the test's own: the answers
are those of reading each key directly, whatever is stored under it; the commands are counted by Redis
(``INFO commandstats``); a Redis killed with a batch in flight fails every reader of it, and a reader
cancelled (its client gone) leaves the others their answers."""

from __future__ import annotations

import asyncio
import math
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import redis
import uvloop
from localservices import RedisNode

from features.redis_store import RedisStore, vector_key
from features.store import FeatureRow
from serving.services import STORE_ERRORS
from streaming import clients
from streaming.settings import Settings

pytestmark = pytest.mark.integration

HANG_S = 60.0  # a bound on a wait that must end (a wrong implementation hangs): not a speed assertion
VECTORS = 60  # entities with a vector, a third of them without a TTL
OTHER_TYPES = ["str", "list", "set", "zset", "stream"]
NOT_VECTORS = {"no-ts": {"n": "1"}, "bad-json": {"_ts": "5", "n": "{"}, "bad-ts": {"_ts": "x", "n": "1"}}
ABSENT = ["nobody", "}x{", ""]
SET_UP = ("info", "hello", "select")  # not the store's reads: INFO, a new connection's set-up


def vectors() -> list[FeatureRow]:
    return [
        FeatureRow("v", f"e{i}", {"n": i * 1.5, "s": f"x{i}", "k": i}, 1_700_000_000_000 + i, ttl_s)
        for i in range(VECTORS)
        for ttl_s in [None if i % 3 == 0 else 1_000 + 10 * i]
    ]


def entities() -> list[str]:
    return [r.entity for r in vectors()] + list(OTHER_TYPES) + list(NOT_VECTORS) + ABSENT


def store_data(s: Settings, direct: redis.Redis) -> None:
    """The vectors as the store writes them (a hash of JSON values and ``_ts``, with the view's TTL), and
    other things under vector keys; synchronous: it may run while the loop waits (a restart)."""
    key = lambda e: vector_key(s.redis_prefix, "v", e)  # noqa: E731
    for row in vectors():
        direct.hset(
            key(row.entity), mapping={"_ts": row.ts, **{k: orjson.dumps(v) for k, v in row.values.items()}}
        )
        if row.ttl_s:
            direct.expire(key(row.entity), row.ttl_s)
    direct.set(key("str"), "a")
    direct.rpush(key("list"), "a")
    direct.sadd(key("set"), "a")
    direct.zadd(key("zset"), {"a": 1.0})
    direct.xadd(key("stream"), {"a": "1"})
    for entity, fields in NOT_VECTORS.items():
        direct.hset(key(entity), mapping=fields)


def oracle(s: Settings, direct: redis.Redis, entity: str) -> tuple[FeatureRow | None, int]:
    """The entity's vector read directly (TYPE, HGETALL, decoded here), and its key's PTTL."""
    key = vector_key(s.redis_prefix, "v", entity)
    row = None
    if direct.type(key) == b"hash":
        raw = direct.hgetall(key)
        try:
            ts = int(raw.pop(b"_ts"))
            row = FeatureRow("v", entity, {k.decode(): orjson.loads(v) for k, v in raw.items()}, ts)
        except (KeyError, ValueError):
            row = None
    return row, direct.pttl(key)


def commands(direct: redis.Redis) -> Counter[str]:
    """Redis' count of each command it ran (a script's commands included), but INFO and a connection's
    set-up (a new connection of the store's pool: HELLO, CLIENT SETINFO)."""
    counts = {k.removeprefix("cmdstat_"): v["calls"] for k, v in direct.info("commandstats").items()}
    return Counter({k: n for k, n in counts.items() if k not in SET_UP and not k.startswith("client|")})


def on_node(node: RedisNode, settings: Settings, **update: Any) -> tuple[Settings, redis.Redis]:
    s = settings.model_copy(update={"redis_url": node.url, **update})
    return s, redis.Redis.from_url(node.url)


def run(
    s: Settings, body: Callable[[RedisStore], Awaitable[Any]], failover_s: float = 0.0, loop: str = "asyncio"
) -> Any:
    """``body(store)`` with the API's store (no failover riding unless ``failover_s``), closed after, on
    asyncio's loop or uvloop's (the API's)."""

    async def go() -> Any:
        store = RedisStore(clients.async_redis(s), s.redis_prefix, failover_s)
        try:
            return await asyncio.wait_for(body(store), HANG_S)
        finally:
            await store.close()

    return uvloop.run(go()) if loop == "uvloop" else asyncio.run(go())


async def together(read: Callable[[str], Awaitable[Any]], names: list[str]) -> list[Any]:
    """Each entity read by a caller of its own, all of them in the same turn of the loop."""
    return await asyncio.gather(*(read(e) for e in names), return_exceptions=True)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_readers_in_one_turn_get_what_reading_each_key_directly_gets_in_one_command(
    node: RedisNode, settings: Settings, loop: str
) -> None:
    s, direct = on_node(node, settings)
    store_data(s, direct)
    names = entities()
    before = {e: oracle(s, direct, e) for e in names}

    async def body(store: RedisStore) -> dict[str, Any]:
        out: dict[str, Any] = {}
        await together(lambda e: store.read("v", [e]), ["e1", "e2"])  # the script loaded (NOSCRIPT, LOAD)
        counted = commands(direct)
        out["plain"] = await together(lambda e: store.read("v", [e]), names)
        out["plain commands"] = commands(direct) - counted
        counted = commands(direct)
        out["expiring"] = await together(lambda e: store.read_expiring("v", [e]), names)
        out["expiring commands"] = commands(direct) - counted
        counted = commands(direct)
        out["alone"] = [await store.read("v", [e]) for e in names]  # one after the other: no batch
        out["alone commands"] = commands(direct) - counted
        return out

    out = run(s, body, loop=loop)
    after = {e: oracle(s, direct, e) for e in names}
    n = len(names)
    assert out["plain"] == out["alone"] == [[before[e][0]] for e in names]
    for entity, [(row, left)] in zip(names, out["expiring"], strict=True):
        assert row == before[entity][0]
        (_, ms_before), (_, ms_after) = before[entity], after[entity]
        if ms_before < 0:  # -1: no TTL, -2: no key
            assert left is None and ms_after == ms_before
        else:
            assert ms_after / 1000 <= left <= ms_before / 1000
    # what the store made of it: every vector found, everything else none
    found = {e for e, [r] in zip(names, out["plain"], strict=True) if r is not None}
    no_ttl = sum(left is None for [(_, left)] in out["expiring"])
    assert found == {r.entity for r in vectors()} and no_ttl == n - (VECTORS - math.ceil(VECTORS / 3))
    # one command a turn, whatever is stored under the keys; alone, one HGETALL a read
    assert out["plain commands"] == Counter({"evalsha": 1, "hgetall": n})
    assert out["expiring commands"] == Counter({"evalsha": 1, "hgetall": n, "pttl": n})
    assert out["alone commands"] == Counter({"hgetall": n})


def test_readers_beyond_a_batchs_size_and_across_turns_make_one_command_each(
    node: RedisNode, settings: Settings
) -> None:
    s, direct = on_node(node, settings)
    store_data(s, direct)
    names = (entities() * 5)[:300]  # 128 a batch at most: 3 commands
    waves_at = (0, 7, 14)  # three turns of 7 readers each

    async def body(store: RedisStore) -> tuple[list[Any], Counter[str], list[Any], Counter[str]]:
        await together(lambda e: store.read_expiring("v", [e]), ["e1", "e2"])
        counted = commands(direct)
        many = await together(lambda e: store.read("v", [e]), names)
        many_commands = commands(direct) - counted
        counted = commands(direct)
        waves = [await together(lambda e: store.read_expiring("v", [e]), names[i : i + 7]) for i in waves_at]
        return many, many_commands, waves, commands(direct) - counted

    many, many_commands, waves, waves_commands = run(s, body)
    assert many == [[oracle(s, direct, e)[0]] for e in names]
    assert many_commands == Counter({"evalsha": 3, "hgetall": 300})
    assert [[row for [(row, _)] in wave] for wave in waves] == [
        [oracle(s, direct, e)[0] for e in names[i : i + 7]] for i in waves_at
    ]
    assert waves_commands == Counter({"evalsha": 3, "hgetall": 21, "pttl": 21})


def test_a_redis_killed_with_a_batch_in_flight_fails_each_reader_and_the_next_reads_recover(
    node: RedisNode, settings: Settings
) -> None:
    """Redis stopped, a batch of each kind sent to it, then killed: every reader gets a store error (the
    API's 503), none an answer of "no vector", none waits forever; restarted, the same reads are right."""
    s, direct = on_node(node, settings)
    store_data(s, direct)
    names = entities()
    assert node.pid is not None

    async def body(store: RedisStore) -> tuple[list[Any], list[Any]]:
        await together(lambda e: store.read("v", [e]), ["e1", "e2"])
        await together(lambda e: store.read_expiring("v", [e]), ["e1", "e2"])
        sent = store._reads.calls, store._expiring_reads.calls
        os.kill(node.pid, signal.SIGSTOP)
        try:
            readers = [asyncio.create_task(store.read("v", [e])) for e in names]
            readers += [asyncio.create_task(store.read_expiring("v", [e])) for e in names]
            while (store._reads.calls, store._expiring_reads.calls) == sent:
                await asyncio.sleep(0)
            await asyncio.sleep(0.05)  # (sent or not yet: either way the connection is about to die)
        finally:
            node.kill()  # SIGKILL, the process reaped
        failed = await asyncio.gather(*readers, return_exceptions=True)
        node.start()
        store_data(s, direct)  # blocks the loop: nothing else runs meanwhile
        plain = await together(lambda e: store.read("v", [e]), names)
        expiring = await together(lambda e: store.read_expiring("v", [e]), names)
        return failed, [*plain, *[[row for row, _ in r] for r in expiring]]

    failed, recovered = run(s, body)
    assert [e for e in failed if not isinstance(e, STORE_ERRORS)] == []
    assert recovered == [[oracle(s, direct, e)[0]] for e in names] * 2


def test_a_reader_cancelled_before_or_during_its_batch_leaves_the_others_their_answers(
    node: RedisNode, settings: Settings
) -> None:
    s, direct = on_node(node, settings)
    store_data(s, direct)
    names = [f"e{i}" for i in range(10)]
    assert node.pid is not None

    async def body(store: RedisStore) -> tuple[list[Any], Counter[str], list[Any]]:
        await together(lambda e: store.read_expiring("v", [e]), ["e1", "e2"])
        # cancelled before the batch is sent: its key is not sent
        counted = commands(direct)
        readers = [asyncio.create_task(store.read_expiring("v", [e])) for e in names]
        await asyncio.sleep(0)
        for reader in readers[:3]:
            reader.cancel()
        before = await asyncio.gather(*readers, return_exceptions=True)
        sent = commands(direct) - counted
        # cancelled while Redis holds the batch (stopped): the others' answers arrive once it resumes
        calls = store._expiring_reads.calls
        os.kill(node.pid, signal.SIGSTOP)
        try:
            readers = [asyncio.create_task(store.read_expiring("v", [e])) for e in names]
            while store._expiring_reads.calls == calls:
                await asyncio.sleep(0)
            for reader in readers[::2]:
                reader.cancel()
            await asyncio.sleep(0)
        finally:
            os.kill(node.pid, signal.SIGCONT)
        during = await asyncio.gather(*readers, return_exceptions=True)
        return before, sent, during

    before, sent, during = run(s, body)
    rows = [oracle(s, direct, e)[0] for e in names]
    assert all(isinstance(r, asyncio.CancelledError) for r in before[:3])
    assert [[row for row, _ in r] for r in before[3:]] == [[row] for row in rows[3:]]
    assert sent == Counter({"evalsha": 1, "hgetall": 7, "pttl": 7})
    assert all(isinstance(r, asyncio.CancelledError) for r in during[::2])
    assert [[row for row, _ in r] for r in during[1::2]] == [[row] for row in rows[1::2]]


def test_a_store_given_failover_time_rides_through_a_redis_restart_with_a_batch_failing(
    node: RedisNode, settings: Settings
) -> None:
    """The feature worker's store (``failover_s``): each reader of a batch that fails is tried again, and
    they are answered once Redis is back."""
    s, direct = on_node(node, settings)
    names = [f"e{i}" for i in range(12)]

    async def body(store: RedisStore) -> tuple[list[Any], int]:
        await together(lambda e: store.read("v", [e]), ["e1", "e2"])
        node.stop()
        readers = [asyncio.create_task(store.read("v", [e])) for e in names]
        calls = store._reads.calls
        while store._reads.calls < calls + 2:  # sent, failed, and sent again after the pause
            await asyncio.sleep(0.01)
        node.start()
        store_data(s, direct)  # blocks the loop: the readers' next try finds the data
        return await asyncio.gather(*readers), store.failovers

    out, failovers = run(s, body, failover_s=HANG_S)
    assert out == [[oracle(s, direct, e)[0]] for e in names] and None not in [row for [row] in out]
    assert failovers == len(names)  # each reader tried again
