"""A near cache of online vectors in the API process, kept correct by Redis invalidations.

:class:`NearCache` is an :class:`~features.store.OnlineStore` in front of the Redis store: a read serves
the entities it holds from memory and fetches the others from the store in one read (one pipeline), as
without it. It holds at most ``max_entries`` vectors (least recently used first out) and each for at most
``max_age_s`` (a safety net), and never past its key's TTL, read with it (Redis reports an expired key only
when it deletes it, which its sampling sweep may do long after the TTL). A vector
keeps its event time ``ts``, so the ``feature_age_ms`` a response reports stays true. An absent vector is
cached too (its creation is reported like any write).

Correctness rests on :class:`~serving.tracking.Tracker` (its docstring says how invalidations arrive):

- Only while tracking is on (between ``established()`` and ``lost()``) is anything served from memory or
  stored in it; otherwise every read goes to Redis, as without the cache (and is a 503 if Redis is away).
  ``lost()`` and ``established()`` both empty the cache.
- The race of a read in flight with its key's invalidation (the read answered by Redis before a write, its
  answer arriving after the write's invalidation, on another connection): a read that misses marks each
  key it fetches as *pending* with a token of its own; an invalidation of the key, or emptying the cache,
  drops the mark; the answer is stored only if the mark is still the read's. So a value is stored only if
  no invalidation of its key arrived since the read was sent, and any write Redis applies after it answered
  the read is reported afterwards (rueidis and Lettuce guard the same race the same way, redis-py's sync
  cache with an in-progress entry).
- A stored vector never replaces a newer one (``_ts``).

What a user gives up: a vector written to Redis is served old until its invalidation reaches the API (the
time Redis takes to send it and the event loop to read it: under a millisecond on loopback, see the
README), and for at most ``ping_s + timeout_s`` if the connection dies silently.

>>> import asyncio
>>> from features.store import MemoryStore
>>> async def demo():
...     store = MemoryStore()
...     await store.write([FeatureRow("v", "e", {"n": 1}, ts=5)])
...     cache = NearCache(store, "p:", max_entries=10)
...     cache.established()
...     first, again = await cache.read("v", ["e"]), await cache.read("v", ["e"])
...     cache.invalidate([vector_key("p:", "v", "e").encode()])
...     await cache.read("v", ["e"])
...     return first[0].ts, again[0].ts, cache.stats
>>> asyncio.run(demo())
(5, 5, CacheStats(hits=1, misses=2, invalidations=1, flushes=1))
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from features.redis_store import vector_key
from features.store import FeatureRow, OnlineStore
from serving.tracking import Tracker
from streaming.logs import get_logger
from streaming.settings import Settings

__all__ = ["CacheStats", "NearCache", "near_cached"]

log = get_logger("rivulet.serving")
PING_S = 1.0  # how often the tracking connection is checked (a silent loss is seen within this + timeout)


def near_cached(settings: Settings, inner: OnlineStore) -> OnlineStore:
    """``inner`` behind a :class:`NearCache` tracked on ``settings.redis_url``, when ``RIVULET_NEAR_CACHE``
    is on and Redis is not a cluster; else ``inner`` itself.

    On a Redis Cluster tracking is per node: a node reports only its own keys, and a slot that moves (a
    failover, a resharding) moves its keys to a node this process does not track. The cache stays off there
    rather than trust a connection per primary to follow every change of the cluster's layout.

    >>> from features.store import MemoryStore
    >>> type(near_cached(Settings(), MemoryStore())).__name__
    'NearCache'
    >>> type(near_cached(Settings(near_cache=False), MemoryStore())).__name__
    'MemoryStore'
    """
    if not settings.near_cache:
        return inner
    if settings.redis_cluster:
        log.warning(
            "near cache off: RIVULET_REDIS_CLUSTER is on (tracking is per node; a moved slot is not "
            "reported); every read goes to Redis"
        )
        return inner
    prefix = f"{settings.redis_prefix}fv:"
    return NearCache(
        inner,
        settings.redis_prefix,
        max_entries=settings.near_cache_entries,
        max_mb=settings.near_cache_max_mb,
        max_age_s=settings.near_cache_max_age_s,
        doorkeeper=settings.near_cache_doorkeeper,
        tracker=lambda sink: Tracker(
            settings.redis_url, prefix, sink, ping_s=PING_S, timeout_s=settings.redis_socket_timeout_s
        ),
    )


@dataclass(slots=True)
class CacheStats:
    """Counts since the cache was made (exported by :mod:`serving.metrics`). ``hits``/``misses``: entities
    served from memory / read from the store (every read while tracking is off is a miss);
    ``invalidations``: keys reported changed that the cache held or had pending; ``flushes``: times the
    cache was emptied (tracking lost or established, ``FLUSHDB``)."""

    hits: int = 0
    misses: int = 0
    invalidations: int = 0
    flushes: int = 0


_Entry = tuple[Any, ...]  # (expires, size, ts (None: no vector), ttl_s, name, value, name, value...)


def _row(view: str, entity: str, entry: _Entry) -> FeatureRow:
    """The vector an entry holds (a new dict each time: a caller may not change it, and cannot).

    >>> _row("v", "e", (9.0, 600, 5, None, "a", 1.0, "b", "x"))
    FeatureRow(view='v', entity='e', values={'a': 1.0, 'b': 'x'}, ts=5, ttl_s=None)
    """
    return FeatureRow(view, entity, dict(zip(entry[4::2], entry[5::2], strict=True)), entry[2], entry[3])


_ENTRY_BYTES = 520  # an entry's own: its key, tuple, row and dict (tracemalloc, 20,000 of 3 values: ~530)
_VALUE_BYTES = 100  # a value's in the row's dict: its slot, name and float (measured: ~99)


def _size(row: FeatureRow | None) -> int:
    """An estimate of the memory a cached row holds (its values' names and texts counted by length).

    >>> _size(None), _size(FeatureRow("v", "e", {"n": 1.0, "s": "x" * 1000}, 5))
    (520, 1723)
    """
    if row is None:
        return _ENTRY_BYTES
    size = _ENTRY_BYTES + len(row.entity)
    for name, value in row.values.items():
        size += _VALUE_BYTES + len(name) + (len(value) if isinstance(value, str) else 0)
    return size


class NearCache(OnlineStore):
    """Vectors of ``inner`` (whose keys are under ``prefix``) kept in memory while tracking is on.

    ``tracker``, when given, is started by :meth:`start` and stopped by :meth:`close`; it tells this cache
    (its sink) ``invalidate``, ``lost`` and ``established``. A row it returns may be returned again, to
    other requests: a caller must not change it (its ``values`` included)."""

    def __init__(
        self,
        inner: OnlineStore,
        prefix: str,
        *,
        max_entries: int,
        max_mb: float = 256.0,
        max_age_s: float = 60.0,
        tracker: Callable[[NearCache], Tracker] | None = None,
        clock: Callable[[], float] = time.monotonic,
        doorkeeper: bool = False,
    ) -> None:
        self.inner = inner
        self._prefix = prefix
        self._max = max_entries
        self._max_bytes = int(max_mb * 1e6)
        self._bytes = 0  # the estimated size of the vectors held (_size)
        self._max_age_s = max_age_s
        self._clock = clock
        # key -> (expires, size, ts (None: absent), ttl_s, name, value, name, value...): see _store
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._pending: dict[str, object] = {}
        # the hashes of keys missed once (doorkeeper on): a key is cached on its second miss, emptied when
        # it holds max_entries (TinyLFU's doorkeeper, a set rather than a Bloom filter)
        self._seen: set[int] | None = set() if doorkeeper else None
        self._on = False
        self.stats = CacheStats()
        self.tracker = tracker(self) if tracker is not None else None

    @property
    def serving(self) -> bool:
        """Is tracking on (the cache in use)?"""
        return self._on

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held_mb(self) -> float:
        """The estimated memory of the vectors held, in MB (bounded by ``max_mb``)."""
        return self._bytes / 1e6

    # -- the tracker's sink: called from the event loop's callbacks, synchronously ---------------------

    def invalidate(self, keys: list[bytes] | None) -> None:
        if keys is None:
            self._flush()
            return
        entries, pending = self._entries, self._pending
        for raw in keys:
            key = raw.decode("utf-8", "replace")
            held = entries.pop(key, None)
            if held is not None:
                self._bytes -= held[1]
            if pending.pop(key, None) is not None or held is not None:
                self.stats.invalidations += 1

    def lost(self) -> None:
        if self._on or self._entries or self._pending:
            self._flush()
        self._on = False

    def established(self) -> None:
        self._flush()
        self._on = True

    def _flush(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self._pending.clear()  # a read in flight stores nothing (its mark is gone)
        self.stats.flushes += 1

    # -- the store -----------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.tracker is not None:
            self.tracker.start()

    async def write(self, rows: Sequence[FeatureRow]) -> int:
        return await self.inner.write(rows)  # its invalidations come back through the tracker

    async def read(self, view: str, entities: Sequence[str]) -> list[FeatureRow | None]:
        if not self._on:
            self.stats.misses += len(entities)
            return await self.inner.read(view, entities)
        now = self._clock()
        prefix, entries = self._prefix, self._entries
        keys = [vector_key(prefix, view, e) for e in entities]
        out: list[FeatureRow | None] = [None] * len(keys)
        missed: list[int] = []
        for i, key in enumerate(keys):
            found = entries.get(key)
            if found is not None and found[0] > now:
                entries.move_to_end(key)
                out[i] = None if found[2] is None else _row(view, entities[i], found)
            else:
                missed.append(i)
        self.stats.hits += len(keys) - len(missed)
        if not missed:
            return out
        self.stats.misses += len(missed)
        admitted = missed if self._seen is None else self._admit(keys, missed)
        if not admitted:  # read as without the cache: nothing of it is stored, no TTL needed
            for i, row in zip(
                missed, await self.inner.read(view, [entities[i] for i in missed]), strict=True
            ):
                out[i] = row
            return out
        token = object()
        pending = self._pending
        for i in admitted:  # a key not admitted has no mark of this read's: its answer is not stored
            pending[keys[i]] = token
        try:
            read = await self.inner.read_expiring(view, [entities[i] for i in missed])
        except BaseException:
            for i in admitted:
                if pending.get(keys[i]) is token:
                    del pending[keys[i]]
            raise
        longest = now + self._max_age_s
        for i, (row, left) in zip(missed, read, strict=True):
            out[i] = row
            key = keys[i]
            if pending.get(key) is token:  # no invalidation (nor flush) since the read was sent
                del pending[key]
                # not past the key's own TTL (counted from before the read): Redis reports an expired key
                # only when it deletes it, maybe long after (its active expiry samples keys)
                self._store(key, row, longest if left is None else min(longest, now + left))
        return out

    def _admit(self, keys: list[str], missed: list[int]) -> list[int]:
        """Those of ``missed`` whose key missed before (since the doorkeeper was last emptied); the others
        are remembered. Over many entities read once each (a uniform spread over a million), a miss then
        costs what a read without the cache does: no TTL read, no entry made to be evicted unread."""
        seen = self._seen
        assert seen is not None
        admitted = []
        for i in missed:
            h = hash(keys[i])
            if h in seen:
                admitted.append(i)
            else:
                if len(seen) >= self._max:
                    seen.clear()
                seen.add(h)
        return admitted

    def _store(self, key: str, row: FeatureRow | None, expires: float) -> None:
        entries = self._entries
        current = entries.get(key)
        if current is not None and current[2] is not None and row is not None and current[2] > row.ts:
            return  # never back in event time
        size = _size(row)
        if current is not None:
            self._bytes -= entries.pop(key)[1]
        if size > self._max_bytes:
            return  # (hostile data under a vector key) served from Redis each time, never held
        # the row's parts in one flat tuple, not the row: a tuple of scalars (strings, ints, floats) is
        # untracked by the garbage collector at its first collection; a FeatureRow, its dict or a tuple that
        # holds either is not. Rows churned by misses (a million entities through 100,000 entries) made each
        # full collection walk every entry: pauses of hundreds of ms on the scoring path (issue 16)
        if row is None:
            entries[key] = (expires, size, None, None)
        else:
            entries[key] = (
                expires,
                size,
                row.ts,
                row.ttl_s,
                *itertools.chain.from_iterable(row.values.items()),
            )
        self._bytes += size
        while len(entries) > self._max or self._bytes > self._max_bytes:
            self._bytes -= entries.popitem(last=False)[1][1]

    async def close(self) -> None:
        if self.tracker is not None:
            await self.tracker.stop()
        await self.inner.close()
