"""The API's near cache on real Redis (serving/near_cache.py, serving/tracking.py): served from memory,
invalidated by Redis as vectors are written, never back in event time with a writer and readers in
parallel, emptied when its tracking connection is killed or Redis restarts, and the read/invalidate race."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import uvloop
from localservices import RedisNode
from prometheus_client import REGISTRY

from features.redis_store import RedisStore, vector_key
from features.store import FeatureRow, OnlineStore
from serving.metrics import watch_near_cache
from serving.near_cache import NearCache, near_cached
from serving.services import STORE_ERRORS
from serving.tracking import NAME
from streaming import clients
from streaming.settings import Settings
from tests.support.api_env import free_port

pytestmark = pytest.mark.integration

T = TypeVar("T")
# How long after Redis acknowledged a write the cache may still serve the value before it: the
# invalidation's delivery. A correctness bound, generous for a loaded 2-core machine (measured on loopback:
# well under a millisecond; the README gives the figure), not a speed assertion.
STALENESS_BOUND_S = 1.0
ESTABLISHED_S = 10.0  # how long tracking may take to come on (a first connection, a reconnection)


def row(entity: str, ts: int, n: float = 0.0) -> FeatureRow:
    return FeatureRow("v", entity, {"n": n, "ts_copy": ts}, ts)


def cached(settings: Settings, **update: Any) -> NearCache:
    """A near cache on ``settings``; it keeps a vector on its first miss unless ``near_cache_doorkeeper``."""
    s = settings.model_copy(update={"near_cache": True, "near_cache_doorkeeper": False, **update})
    cache = near_cached(s, RedisStore(clients.async_redis(s), s.redis_prefix))
    assert isinstance(cache, NearCache)
    return cache


async def until(check: Callable[[], bool], within_s: float, what: str) -> float:
    """Wait until ``check()``; how long it took. Fails after ``within_s``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within_s, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.001)
    return time.monotonic() - start


async def on(cache: NearCache) -> None:
    await cache.start()
    await until(lambda: cache.serving, ESTABLISHED_S, "tracking on")


def run(
    settings: Settings,
    body: Callable[[NearCache, RedisStore], Awaitable[T]],
    loop: str = "asyncio",
    **update: Any,
) -> T:
    """``body(cache, writer)`` on a fresh loop (``loop``: asyncio's, or uvloop's as the API runs on): a
    started cache and a store that writes as the feature worker's does, both closed after."""

    async def go() -> T:
        cache, writer = cached(settings, **update), clients.feature_store(settings)
        try:
            await on(cache)
            return await body(cache, writer)
        finally:
            await cache.close()
            await writer.close()

    if loop == "uvloop":
        return uvloop.run(go())
    return asyncio.run(go())


def tracking_ids(client: redis.Redis) -> list[str]:
    return [c["id"] for c in client.client_list() if c.get("name") == NAME]


@pytest.fixture
def node_client(node: RedisNode) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(node.url)
    yield client
    client.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_vector_is_served_from_memory_until_redis_reports_its_write(
    settings: Settings, redis_client: redis.Redis, loop: str
) -> None:
    async def body(cache: NearCache, writer: RedisStore) -> tuple[float, Any]:
        await writer.write([row("a", 1_000)])
        first = await cache.read("v", ["a", "nobody"])
        again = await cache.read("v", ["a", "nobody"])
        assert [r and r.ts for r in first] == [1_000, None] and again == first
        assert (cache.stats.hits, cache.stats.misses) == (2, 2)
        await writer.write([row("a", 2_000)])  # acknowledged: from here the old value is stale
        acked = time.monotonic()
        while (await cache.read("v", ["a"]))[0].ts != 2_000:  # type: ignore[union-attr]
            assert time.monotonic() - acked < STALENESS_BOUND_S, "the invalidation did not arrive"
        delivery = time.monotonic() - acked
        assert cache.stats.invalidations >= 1
        # an absent vector is cached and its creation reported like any write
        await writer.write([row("nobody", 5)])
        await until(lambda: cache.stats.invalidations >= 2, STALENESS_BOUND_S, "creation reported")
        now = await cache.read("v", ["nobody", "a"])
        return delivery, [r and r.ts for r in now]

    delivery, now = run(settings, body, loop)
    assert now == [5, 2_000]
    print(f"invalidation delivered {delivery * 1e3:.3f} ms after the write's ack")


@pytest.mark.parametrize("doorkeeper", [False, True])
def test_a_served_vector_never_goes_back_in_event_time_with_a_writer_and_readers_in_parallel(
    settings: Settings, redis_client: redis.Redis, doorkeeper: bool
) -> None:
    entities = [f"e{i}" for i in range(8)]
    writes = 400

    def writer_thread(done: threading.Event, last: dict[str, int]) -> None:
        async def go() -> None:
            store = clients.feature_store(settings)
            try:
                for t in range(1, writes + 1):  # as the feature worker: batches, older rows mixed in
                    batch = [row(e, t * 10) for e in entities[t % 3 :: 2]] + [row(entities[0], t * 10 - 15)]
                    await store.write(batch)
                    for r in batch:
                        last[r.entity] = max(last.get(r.entity, 0), r.ts)
            finally:
                await store.close()
                done.set()

        asyncio.run(go())

    async def body(cache: NearCache, writer: RedisStore) -> tuple[list[int], dict[str, int]]:
        await writer.write([row(e, 1) for e in entities])
        done, last = threading.Event(), {e: 1 for e in entities}
        thread = threading.Thread(target=writer_thread, args=(done, last))
        backwards: list[str] = []
        served = [0] * 4

        async def reader(k: int) -> None:
            seen: dict[str, int] = {}
            while not done.is_set():
                pick = entities[k::2] if k % 2 else [entities[(served[k] + k) % len(entities)]]
                for r in await cache.read("v", pick):
                    assert r is not None and r.values["ts_copy"] == r.ts  # one whole vector, not a mix
                    if r.ts < seen.get(r.entity, 0):
                        backwards.append(f"reader {k}: {r.entity} {seen[r.entity]} then {r.ts}")
                    seen[r.entity] = r.ts
                    served[k] += 1
                await asyncio.sleep(0)

        thread.start()
        await asyncio.gather(*(reader(k) for k in range(4)))
        thread.join()
        assert not backwards, backwards[:5]
        # once the writer is done, every entity is served at its last write (within the bound)
        start = time.monotonic()
        while [r and r.ts for r in await cache.read("v", entities)] != [last[e] for e in entities]:
            assert time.monotonic() - start < STALENESS_BOUND_S, "the last writes were not reported"
        return served, last

    served, last = run(settings, body, near_cache_doorkeeper=doorkeeper)
    assert all(n > 0 for n in served) and set(last.values()) != {1}


@pytest.mark.parametrize("doorkeeper", [False, True])
def test_the_race_a_read_in_flight_when_its_key_is_written_leaves_the_old_value_uncached(
    settings: Settings, redis_client: redis.Redis, doorkeeper: bool
) -> None:
    """The read is answered by Redis (the old value), then held; the key is written and its invalidation
    arrives; then the read's answer comes back. It is served to its own caller, never cached."""

    class Held(OnlineStore):
        """The real store, whose answers are held until ``release`` is set (a slow network, made exact)."""

        def __init__(self, inner: RedisStore) -> None:
            self.inner, self.answered, self.release = inner, asyncio.Event(), asyncio.Event()

        async def write(self, rows: Sequence[FeatureRow]) -> int:
            return await self.inner.write(rows)

        async def read(self, view: str, entities: Sequence[str]) -> list[FeatureRow | None]:
            rows = await self.inner.read(view, entities)
            self.answered.set()
            await self.release.wait()
            return rows

        async def close(self) -> None:
            await self.inner.close()

    async def go() -> tuple[int | None, int | None, int]:
        s = settings.model_copy(update={"near_cache": True, "near_cache_doorkeeper": doorkeeper})
        held = Held(RedisStore(clients.async_redis(s), s.redis_prefix))
        plain = near_cached(s, held)
        assert isinstance(plain, NearCache)
        writer = clients.feature_store(s)
        try:
            await on(plain)
            await writer.write([row("r", 100)])
            if doorkeeper:  # a first miss is not kept: the read in flight is the second
                held.release.set()
                assert (await plain.read("v", ["r"]))[0] is not None and len(plain) == 0
                held.release.clear()
                held.answered.clear()
            in_flight = asyncio.create_task(plain.read("v", ["r"]))
            await held.answered.wait()  # Redis answered with ts 100; the answer is still on its way
            before = plain.stats.invalidations
            await writer.write([row("r", 200)])
            await until(lambda: plain.stats.invalidations > before, STALENESS_BOUND_S, "invalidation")
            held.release.set()
            old = (await in_flight)[0]
            after = (await plain.read("v", ["r"]))[0]  # a miss: the old answer was not kept
            return old and old.ts, after and after.ts, plain.stats.misses
        finally:
            await plain.close()
            await writer.close()

    old, after, misses = asyncio.run(go())
    assert (old, after, misses) == (100, 200, 3 if doorkeeper else 2)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_killed_tracking_connection_empties_the_cache_before_it_serves_again(
    settings: Settings, node: RedisNode, node_client: redis.Redis, loop: str
) -> None:
    async def body(cache: NearCache, writer: RedisStore) -> None:
        await writer.write([row("k", 10)])
        await cache.read("v", ["k"])
        assert (await cache.read("v", ["k"]))[0].ts == 10 and cache.stats.hits == 1  # type: ignore[union-attr]
        (killed,) = tracking_ids(node_client)
        flushes = cache.stats.flushes
        node_client.execute_command("CLIENT", "KILL", "ID", killed)
        await writer.write([row("k", 20)])  # no invalidation can arrive for this one: the connection is gone
        assert not cache.serving and len(cache) == 0 and cache.stats.flushes == flushes + 1
        assert (await cache.read("v", ["k"]))[0].ts == 20  # type: ignore[union-attr]
        await until(lambda: cache.serving, ESTABLISHED_S, "tracking back")
        assert tracking_ids(node_client) not in ([], [killed])
        await cache.read("v", ["k"])
        await writer.write([row("k", 30)])  # reported on the new connection
        await until(lambda: len(cache) == 0, STALENESS_BOUND_S, "invalidated after the reconnection")
        assert (await cache.read("v", ["k"]))[0].ts == 30  # type: ignore[union-attr]

    run(settings.model_copy(update={"redis_url": node.url}), body, loop)


async def loop_turns() -> None:
    """Two turns of the event loop: what a request arriving through a socket takes at least (it is read in
    the same poll as the end of the tracking connection, or a later one)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_a_redis_restart_empties_the_cache_and_nothing_old_is_served(
    settings: Settings, node: RedisNode
) -> None:
    s = settings.model_copy(update={"redis_url": node.url})

    async def body(cache: NearCache, writer: RedisStore) -> None:
        await writer.write([row("x", 10)])
        await cache.read("v", ["x"])
        assert (await cache.read("v", ["x"]))[0].ts == 10 and len(cache) == 1  # type: ignore[union-attr]
        node.stop()
        await loop_turns()
        assert not cache.serving and len(cache) == 0
        with pytest.raises(STORE_ERRORS):  # Redis away: an error (the API's 503), never the cached vector
            await cache.read("v", ["x"])
        node.start()  # without persistence: the vector is gone; another is written
        fresh = clients.feature_store(s)  # (redis-py leaves a pipeline that loaded a script before open)
        try:
            await fresh.write([row("x", 5)])
        finally:
            await fresh.close()
        assert (await cache.read("v", ["x"]))[0].ts == 5  # type: ignore[union-attr]
        await until(lambda: cache.serving, ESTABLISHED_S, "tracking back after the restart")
        assert [(await cache.read("v", ["x"]))[0].ts for _ in range(2)] == [5, 5]  # type: ignore[union-attr]
        assert cache.stats.hits >= 2
        flushes = cache.stats.flushes
        direct = redis.Redis.from_url(node.url)
        try:
            direct.flushdb()  # reported as an invalidation of every key: the cache empties
        finally:
            direct.close()
        await until(lambda: cache.stats.flushes > flushes, STALENESS_BOUND_S, "FLUSHDB reported")
        assert len(cache) == 0 and cache.serving and await cache.read("v", ["x"]) == [None]

    run(s, body)


def test_a_redis_that_stops_answering_turns_the_cache_off(settings: Settings, node: RedisNode) -> None:
    """A hung Redis (its process stopped: no end of connection, no answer) is found by the tracking
    connection's PING: the cache empties and stops serving; it comes back once Redis answers again."""
    s = settings.model_copy(update={"redis_url": node.url, "redis_socket_timeout_s": 0.5})

    async def body(cache: NearCache, writer: RedisStore) -> None:
        await writer.write([row("h", 10)])
        await cache.read("v", ["h"])
        assert len(cache) == 1 and node.pid is not None
        os.kill(node.pid, signal.SIGSTOP)
        try:
            await until(lambda: not cache.serving, 5.0, "a hung Redis noticed (ping 1 s + timeout 0.5 s)")
            assert len(cache) == 0
        finally:
            os.kill(node.pid, signal.SIGCONT)
        await until(lambda: cache.serving, ESTABLISHED_S, "tracking back once Redis answers")

    run(s, body)


def test_the_cache_is_bounded_least_recently_used_out(settings: Settings, redis_client: redis.Redis) -> None:
    async def body(cache: NearCache, writer: RedisStore) -> tuple[int, int]:
        await writer.write([row(e, 1) for e in "abcde"])
        await cache.read("v", ["a", "b", "c"])
        await cache.read("v", ["a"])  # a is now the most recent
        await cache.read("v", ["d", "e"])  # b and c out
        assert len(cache) == 3
        hits = cache.stats.hits
        await cache.read("v", ["a", "d", "e"])
        assert cache.stats.hits == hits + 3
        await cache.read("v", ["b"])
        return cache.stats.hits - hits, len(cache)

    assert run(settings, body, near_cache_entries=3) == (3, 3)


def test_the_doorkeeper_keeps_a_vector_on_its_second_miss(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """RIVULET_NEAR_CACHE_DOORKEEPER (on by default): a first miss is read as without the cache and not
    kept; the second is kept; then it is served from memory. Its memory of first misses is bounded."""

    async def body(cache: NearCache, writer: RedisStore) -> list[tuple[int, int]]:
        await writer.write([row(e, 3, 1.0) for e in "abcde"])
        steps = []
        for pick in (["a"], ["a", "b"], ["a", "b"], ["c", "d", "e"]):
            rows = await cache.read("v", pick)
            assert [r and (r.entity, r.ts) for r in rows] == [(e, 3) for e in pick]
            steps.append((len(cache), cache.stats.hits))
        assert cache._seen is not None and len(cache._seen) <= 3  # emptied at near_cache_entries
        return steps

    # a missed, not kept; a kept, b missed; a a hit, b kept; c, d, e first misses (the doorkeeper emptied)
    assert run(settings, body, near_cache_doorkeeper=True, near_cache_entries=3) == [
        (0, 0),
        (1, 0),
        (2, 1),
        (2, 1),
    ]


def test_held_vectors_are_invisible_to_the_garbage_collector(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Issue 16: misses over many entities churn the cache; held FeatureRows (tracked objects) reached the
    collector's oldest generation, and each full collection walked every one of them (pauses of hundreds
    of ms on the scoring path). What the cache holds is untracked after a collection, and still served
    exactly."""

    async def body(cache: NearCache, writer: RedisStore) -> tuple[int, list[FeatureRow | None]]:
        await writer.write([row(str(e), 7, float(e)) for e in range(200)])
        first = await cache.read("v", [str(e) for e in range(200)] + ["absent"])
        gc.collect()
        tracked = sum(gc.is_tracked(entry) for entry in cache._entries.values())
        again = await cache.read("v", ["3", "absent"])
        assert cache.stats.hits == 2 and first[3] == again[0]
        return tracked, again

    tracked, again = run(settings, body)
    assert tracked == 0
    assert again == [FeatureRow("v", "3", {"n": 3.0, "ts_copy": 7}, 7), None]


def test_the_cache_counts_are_exported(settings: Settings, redis_client: redis.Redis) -> None:
    def value(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    async def body(cache: NearCache, writer: RedisStore) -> None:
        watch_near_cache(cache)
        hits, misses = value("rivulet_near_cache_hits_total"), value("rivulet_near_cache_misses_total")
        await writer.write([row("m", 1)])
        for _ in range(3):
            await cache.read("v", ["m"])
        assert value("rivulet_near_cache_hits_total") == hits + 2
        assert value("rivulet_near_cache_misses_total") == misses + 1
        assert value("rivulet_near_cache_flushes_total") >= 1

    run(settings, body)


def test_the_cache_is_off_on_a_redis_cluster(settings: Settings, redis_cluster_up: str) -> None:
    s = settings.model_copy(update={"redis_url": redis_cluster_up, "redis_cluster": True, "near_cache": True})
    store = RedisStore(clients.async_redis(s), s.redis_prefix)
    assert near_cached(s, store) is store
    assert isinstance(near_cached(s.model_copy(update={"redis_cluster": False}), store), NearCache)
    assert near_cached(settings.model_copy(update={"near_cache": False}), store) is store


class DebugRedisNode(RedisNode):
    """A node that takes ``DEBUG`` commands (off on the shared services)."""

    def options(self) -> dict[str, str]:
        return {"enable-debug-command": "yes"}


def test_a_vector_past_its_ttl_is_not_served_from_memory(
    settings: Settings, redis_up: str, tmp_path: Path
) -> None:
    """Before: a vector whose TTL had passed was served from memory, where Redis answers no vector, until
    Redis deleted the key and reported it: its active expiry is a sweep that samples keys, which on a large
    keyspace gets round to one long after its TTL (here turned off, to stand for that), so the vector stayed
    up to ``RIVULET_NEAR_CACHE_MAX_AGE_S`` (60 s) past its TTL. Now a cached vector expires when its key
    does (its TTL read with it)."""
    node = DebugRedisNode(tmp_path / "redis", port=free_port())
    node.start()
    s = settings.model_copy(update={"redis_url": node.url})
    direct = redis.Redis.from_url(node.url)
    direct.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")

    async def body(cache: NearCache, writer: RedisStore) -> tuple[list[Any], list[Any]]:
        await writer.write([FeatureRow("v", "t", {"n": 1.0}, 1_000, ttl_s=1), row("forever", 1_000)])
        first = await cache.read("v", ["t", "forever"])
        assert [r and r.ts for r in first] == [1_000, 1_000]
        assert await cache.read("v", ["t", "forever"]) == first and cache.stats.hits == 2
        await asyncio.sleep(1.3)  # past the TTL (no timing asserted: the wait only lets it pass)
        served = await cache.read("v", ["t", "forever"])
        redis_holds = await cache.inner.read("v", ["t", "forever"])  # as without the cache
        return [r and r.ts for r in served], [r and r.ts for r in redis_holds]

    try:
        served, redis_holds = run(s, body)
        assert redis_holds == [None, 1_000]
        assert served == redis_holds
    finally:
        direct.close()
        node.stop()


def test_the_cache_is_bounded_in_memory_not_only_in_entries(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Before: the bound was a count of entries only, whatever each held: a hash of 5,000 fields under a
    vector key took about 0.5 MB of the API's memory in the cache (200 of them: 99 MB, measured with
    tracemalloc), so 100,000 entries of them could take 50 GB. Now the values held are bounded too
    (``RIVULET_NEAR_CACHE_MAX_MB``, estimated): least recently used out first, and a vector larger than the
    whole bound is not cached at all; every answer is still Redis's."""
    fields = {f"f{j}": float(j) for j in range(2_000)}  # about 0.2 MB held each

    async def body(cache: NearCache, writer: RedisStore) -> tuple[list[Any], list[Any]]:
        await writer.write([FeatureRow("v", f"big{i}", fields, 1_000 + i) for i in range(10)])
        huge = {"_ts": "7", **{f"g{j}": "1.0" for j in range(20_000)}}  # past what the writer's script takes
        redis_client.hset(vector_key(settings.redis_prefix, "v", "huge"), mapping=huge)  # type: ignore[arg-type]
        served = []
        for i in range(10):
            served.append((await cache.read("v", [f"big{i}"]))[0])
            assert cache.held_mb <= 0.5, cache.held_mb
        assert 0 < len(cache) < 10
        assert (await cache.read("v", ["huge"]))[0].ts == 7  # type: ignore[union-attr]
        assert (await cache.read("v", ["huge"]))[0].ts == 7  # type: ignore[union-attr]
        assert cache.held_mb <= 0.5 and vector_key(settings.redis_prefix, "v", "huge") not in cache._entries
        direct = await cache.inner.read("v", [f"big{i}" for i in range(10)])
        return [r and (r.ts, len(r.values)) for r in served], [r and (r.ts, len(r.values)) for r in direct]

    served, direct = run(settings, body, near_cache_max_mb=0.5)
    assert served == direct == [(1_000 + i, 2_000) for i in range(10)]


def test_a_storm_of_client_kills_and_pauses_never_serves_an_older_vector(
    settings: Settings, node: RedisNode, node_client: redis.Redis
) -> None:
    """Each of 30 writes followed by a ``CLIENT KILL`` of the tracking connection (a storm: it is killed
    again while it reconnects), every fifth by a ``CLIENT PAUSE ... WRITE``: a read never returns a vector
    older than the last one served, nor older than the write acknowledged once its invalidation is
    delivered; the reads never fail; tracking comes back."""

    async def body(cache: NearCache, writer: RedisStore) -> list[int]:
        served: list[int] = []
        for i in range(1, 31):
            await writer.write([row("k", i)])
            acked = time.monotonic()
            for cid in tracking_ids(node_client):
                node_client.client_kill_filter(_id=cid)
            if i % 5 == 0:
                node_client.client_pause(100, all=False)  # writes paused; reads and PING answer
            while True:
                got = (await cache.read("v", ["k"]))[0]
                assert got is not None and (not served or got.ts >= served[-1]), (i, got, served[-3:])
                served.append(got.ts)
                if got.ts == i:
                    break
                assert time.monotonic() - acked < STALENESS_BOUND_S, f"write {i} not served"
                await asyncio.sleep(0.001)
        await until(lambda: cache.serving, ESTABLISHED_S, "tracking back after the storm")
        assert [(await cache.read("v", ["k"]))[0].ts for _ in range(2)] == [30, 30]  # type: ignore[union-attr]
        return served

    served = run(settings.model_copy(update={"redis_url": node.url}), body, loop="uvloop")
    assert served == sorted(served) and served[-1] == 30
