"""The online store's read alone, with and without the API's near cache: the time of one ``read`` of one
entity and of a batch, straight from Redis (``RedisStore``), from the near cache when it holds them (hits)
and through it when it does not (misses: the cache's bookkeeping, then the same Redis read).

    .venv/bin/python scripts/bench_near_cache.py --reads 20000 --batch 16

Runs on ``RIVULET_REDIS_URL`` under a scratch key prefix, removed after. Prints the median and p99 per read
in microseconds. A miss is measured on entities that were never read (each read a new one).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from benchkit import arguments

from features.redis_store import RedisStore
from features.store import FeatureRow
from serving.near_cache import NearCache, near_cached
from streaming.clients import async_redis, feature_store, redis_client
from streaming.settings import Settings

VALUES = {"count_lifetime": 12, "salary_mean_10m": 81_000.5, "loan_max_lifetime": 250_000.0, "car": "c3"}


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """Median and p99 of ``n`` calls of ``op(i)``, in microseconds."""
    took = []
    for i in range(n):
        start = time.perf_counter()
        await op(i)
        took.append((time.perf_counter() - start) * 1e6)
    took.sort()
    return statistics.median(took), took[int(0.99 * (len(took) - 1))]


async def main(reads: int, batch: int) -> None:
    s = Settings().model_copy(update={"redis_prefix": f"bench:{uuid.uuid4().hex[:8]}:", "near_cache": True})
    writer = feature_store(s)
    n = reads * batch + batch
    for i in range(0, n, 1000):
        await writer.write(
            [FeatureRow("zip", f"e{j}", VALUES, 1_000 + j) for j in range(i, min(n, i + 1000))]
        )
    plain = RedisStore(async_redis(s), s.redis_prefix)
    cache = near_cached(s, RedisStore(async_redis(s), s.redis_prefix))
    assert isinstance(cache, NearCache)
    await cache.start()
    while not cache.serving:
        await asyncio.sleep(0.01)
    hot = [f"e{j}" for j in range(batch)]
    await cache.read("zip", hot)
    rows: list[tuple[str, tuple[float, float]]] = []
    for size in sorted({1, batch}):
        ents = hot[:size]
        fresh = [[f"e{batch + i * size + k}" for k in range(size)] for i in range(reads)]
        rows.append((f"redis, {size}", await timed(reads, lambda i, e=ents: plain.read("zip", e))))
        rows.append((f"hit, {size}", await timed(reads, lambda i, e=ents: cache.read("zip", e))))
        rows.append((f"miss, {size}", await timed(reads, lambda i, f=fresh: cache.read("zip", f[i]))))
    print(f"store read, {reads} reads each (median / p99, microseconds):")
    for name, (p50, p99) in rows:
        print(f"  {name:<12} {p50:8.1f} / {p99:8.1f}")
    print(f"cache: {cache.stats}, entries {len(cache)}")
    await cache.close()
    await plain.close()
    await writer.close()
    client = redis_client(s)
    for key in client.scan_iter(match=f"{s.redis_prefix}*", count=1000):
        client.delete(key)
    client.close()


if __name__ == "__main__":
    args = arguments(__doc__ or "", [], reads=20_000, batch=16)
    asyncio.run(main(args.reads, args.batch))
