"""A view's windows as tiles: which tiles a vector merges, where an event goes, and what retention drops.

Each window of a view (all its aggregations share it) keeps a sorted list of sparse tiles
``[k, acc_1, ..., acc_n]``: ``k`` is the tile index (event time ``// R``) and ``acc_i`` the accumulator of
the window's ``i``-th aggregation over the events of that tile (see :mod:`features.windows` for the tile
ranges, and :mod:`features.engine` for the semantics). The lifetime aggregations share one tiled window
whose resolution comes from the view's allowed lateness (``max(1, ceil(lateness / 60))``), and a
*settled* accumulator per aggregation, into which retention folds the tiles no acceptable event can need.

A window retains at most ``(extent + lateness) // R + 2`` tiles, and a view whose window could retain more
than :data:`MAX_TILES` is refused at definition (:func:`tilings`).

>>> from features.aggregations import Count
>>> from features.windows import sliding
>>> [tw.key for tw in tilings([Count(), Count(window=sliding("1h"))], lateness_ms=300_000)]
['lifetime@5000', '1h@60000']
>>> tilings([Count(window=sliding("1h", resolution="100ms"))], lateness_ms=0)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
features.errors.DefinitionError: window 1h (resolution 100 ms, allowed lateness 0 ms) could keep 36002 ...
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from features.aggregations import Aggregation, Max, Min
from features.compiled import Compiled
from features.errors import DefinitionError
from features.windows import Window

__all__ = ["MAX_TILES", "Tiled", "lifetime_resolution", "tile_k", "tilings"]

MAX_TILES = 10_000


def lifetime_resolution(lateness_ms: int) -> int:
    """The tile resolution of the lifetime aggregations: about 60 tiles over the allowed lateness.

    >>> lifetime_resolution(300_000), lifetime_resolution(0), lifetime_resolution(61)
    (5000, 1, 2)
    """
    return max(1, -(-lateness_ms // 60))


tile_k = itemgetter(0)  # a tile's index (a C call: bisect calls it at every probe)


class Tiled:
    """One window of a view with its aggregations, compiled for the engine (see the module docstring)."""

    __slots__ = (
        "aggs",
        "blank",
        "bound",
        "code",
        "expiry",
        "key",
        "kind",
        "lateness",
        "move",
        "names",
        "picks",
        "resolution",
        "span",
        "window",
    )

    def __init__(self, window: Window, aggs: Sequence[Aggregation], lateness_ms: int) -> None:
        self.window = window
        self.kind = window.kind
        self.aggs = tuple(aggs)
        self.lateness = lateness_ms
        r = self.resolution = window.resolution_ms or lifetime_resolution(lateness_ms)
        self.key = f"{window.label}@{r}"
        # the aggregations' add, merge, copy and value compiled into one function each (features.compiled)
        self.code = code = Compiled(self.aggs)
        self.blank = code.new(0)  # an empty tile to read (never written)
        self.names = tuple(a.name for a in self.aggs)
        # how the engine moves a cached range forward: taking tiles out when every aggregation can
        self.move = self.slide if code.invertible else self.advance
        # min and max only: a monotonic queue of the range's tiles per aggregation (select)
        self.picks = (
            tuple(type(a) is Max for a in self.aggs) if all(type(a) in (Min, Max) for a in aggs) else ()
        )
        if self.picks:
            self.move = self.select
        # sliding: the range is [kt - span, kt]; tumbling: span 0; hopping and lifetime: see first()
        self.span = window.size_ms // r - 1 if window.kind == "sliding" else 0
        self.bound = (window.extent_ms + lateness_ms) // r + 2
        # tile k can serve no acceptable event once the watermark reaches k * R + expiry (see retain)
        if window.kind == "hopping":  # first(wm - lateness) > k  <=>  wm - lateness - size >= k * step
            self.expiry = window.size_ms + lateness_ms
        else:  # (wm - lateness) // R - span > k  <=>  wm - lateness >= (k + span + 1) * R
            self.expiry = (self.span + 1) * r + lateness_ms

    def first(self, t: int) -> int | None:
        """The oldest tile in the window at reference time ``t`` (None: lifetime, every tile)."""
        if self.kind == "sliding" or self.kind == "tumbling":
            return t // self.resolution - self.span
        return self.window.first_tile(t)

    def cutoff(self, watermark: int) -> int:
        """Tiles below this index can serve no acceptable event (time >= watermark - lateness)."""
        x = watermark - self.lateness
        if self.kind == "hopping":
            return self.window.first_tile(x)  # type: ignore[return-value]
        return x // self.resolution - self.span  # sliding and tumbling: first(x); lifetime: span 0

    def empty(self) -> list[Any]:
        """A tile's accumulators (without its index), all empty."""
        return self.code.new(0)[1:]

    def merged(
        self, tiles: list[list[Any]], lo: int | None, hi: int | None, settled: Any = None
    ) -> list[Any]:
        """The accumulators of the tiles with ``lo <= k <= hi`` (None: unbounded) merged, on top of
        copies of ``settled`` (a mapping from the lifetime aggregations' names) when given."""
        code = self.code
        accs = code.copy([settled[a.name] for a in self.aggs]) if settled is not None else self.empty()
        start = 0 if lo is None else bisect_left(tiles, lo, key=tile_k)
        end = len(tiles) if hi is None else bisect_right(tiles, hi, key=tile_k)
        merge_tile = code.merge_tile
        for tile in tiles[start:end]:
            merge_tile(accs, tile)
        return accs

    def advance(self, c: list[Any] | None, tiles: list[list[Any]], lo: int, kt: int) -> list[Any]:
        """The cached range ``c`` (``[lo, kt, running, front, back, back_acc]``) moved forward to
        ``[lo, kt]`` for an event in order, or built anew (``c`` None or not behind). ``running`` is what a
        vector reads (every tile in range merged); the others are a two-stack sliding aggregation of the
        range's earlier tiles, so a moving range costs O(1) merges amortised, not one per tile in range:
        ``front`` (oldest last) holds each tile's index with the merge of it and every newer front tile,
        ``back`` the tiles that left the current position since, merged in ``back_acc``."""
        copy, merge, merge_tile = self.code.copy, self.code.merge, self.code.merge_tile
        if c is None or lo < c[0] or kt < c[1]:
            front: list[Any] = []
            back = [t for t in tiles[bisect_left(tiles, lo, key=tile_k) :] if t[0] < kt]
            back_acc = None
        else:
            _, ckt, _, front, back, back_acc = c
            if kt > ckt and tiles:
                i = len(tiles) - 1 if tiles[-1][0] == ckt else bisect_left(tiles, ckt, key=tile_k)
                if i < len(tiles) and tiles[i][0] == ckt >= lo:  # the tile of the old position leaves it
                    back.append(tiles[i])
                    if back_acc is None:
                        back_acc = copy(tiles[i][1:])
                    else:
                        merge_tile(back_acc, tiles[i])
            while front and front[-1][0] < lo:
                front.pop()
        if not front and back:  # flip: the back tiles still in range become the front stack
            acc = None
            for tile in reversed([t for t in back if t[0] >= lo]):
                if acc is None:
                    acc = copy(tile[1:])
                else:
                    acc = copy(acc)
                    merge_tile(acc, tile)
                front.append((tile[0], acc))
            back, back_acc = [], None
        running = copy(front[-1][1]) if front else self.empty()
        if back_acc is not None:
            merge(running, back_acc)
        if tiles and tiles[-1][0] == kt:  # the current tile
            merge_tile(running, tiles[-1])
        return [lo, kt, running, front, back, back_acc]

    def slide(self, c: list[Any] | None, tiles: list[list[Any]], lo: int, kt: int) -> list[Any]:
        """:meth:`advance` for an invertible window (counts and exact sums, variances too): the cached range
        ``[lo, kt, running]`` moves forward by taking the tiles that leave it out of ``running`` and merging
        those that enter (O(1) amortised, exact); built anew when ``c`` is None, behind, or disjoint."""
        if c is None or lo < c[0] or kt < c[1] or lo > c[1]:
            return [lo, kt, self.merged(tiles, lo, kt)]
        running = c[2]
        n = len(tiles)
        if lo > c[0]:  # the tiles of [c[0], lo) leave the range
            i = bisect_left(tiles, c[0], key=tile_k)
            while i < n and tiles[i][0] < lo:
                self.code.unmerge_tile(running, tiles[i])
                i += 1
        if kt > c[1]:  # the tiles of (c[1], kt] enter it
            self.slide_in(c, tiles, kt)
        return [lo, kt, running]

    def slide_in(self, c: list[Any], tiles: list[list[Any]], kt: int) -> None:
        """The tiles of ``(c[1], kt]`` merged into the cached range ``c`` (:meth:`slide`'s second half)."""
        n = len(tiles)
        i = n if not tiles or tiles[-1][0] <= c[1] else bisect_right(tiles, c[1], key=tile_k)
        while i < n and tiles[i][0] <= kt:
            self.code.merge_tile(c[2], tiles[i])
            i += 1

    def select(self, c: list[Any] | None, tiles: list[list[Any]], lo: int, kt: int) -> list[Any]:
        """:meth:`advance` for a window of min and max only: ``[lo, kt, running, queues]``, each queue the
        ``(k, value)`` of the range's tiles before ``kt`` whose value no later tile beats (a monotonic
        queue: its first is the range's extreme), so a moving range costs O(1) amortised."""
        if c is None or lo < c[0] or kt < c[1]:
            queues: list[deque[tuple[int, Any]]] = [deque() for _ in self.picks]
            start = bisect_left(tiles, lo, key=tile_k)
        else:
            queues, start = c[3], bisect_left(tiles, max(c[1], lo), key=tile_k)
        n = len(tiles)
        while start < n and tiles[start][0] < kt:  # the tiles that joined the range's earlier part
            tile = tiles[start]
            for j, (q, top) in enumerate(zip(queues, self.picks, strict=True)):
                v = tile[j + 1][0]
                if v is not None:
                    while q and _beaten(q[-1][1], v, top):
                        q.pop()
                    q.append((tile[0], v))
            start += 1
        running = []
        for q in queues:
            while q and q[0][0] < lo:
                q.popleft()
            running.append([q[0][1] if q else None])
        if tiles and tiles[-1][0] == kt:  # the current tile
            self.code.merge_tile(running, tiles[-1])
        return [lo, kt, running, queues]

    def tile(self, tiles: list[list[Any]], k: int) -> list[Any]:
        """The tile ``k``, made (empty, in its place) if the window has none yet."""
        if not tiles or tiles[-1][0] < k:
            tile = self.code.new(k)
            tiles.append(tile)
            return tile
        i = bisect_left(tiles, k, key=tile_k)
        if tiles[i][0] != k:
            tiles.insert(i, self.code.new(k))
        return tiles[i]

    def retain(self, tiles: list[list[Any]], watermark: int, settled: dict[str, list[Any]]) -> None:
        """Drop the tiles no acceptable event can need (lifetime: fold them into ``settled`` first)."""
        cut = self.cutoff(watermark)
        if not tiles or tiles[0][0] >= cut:
            return
        n = 1 if len(tiles) == 1 or tiles[1][0] >= cut else bisect_left(tiles, cut, key=tile_k)
        if self.kind == "lifetime":
            accs = list(map(settled.__getitem__, self.names))  # merged into in place
            for tile in tiles[:n]:
                self.code.merge_tile(accs, tile)
        del tiles[:n]


def _beaten(held: Any, v: Any, top: bool) -> bool:
    """True if a later tile's ``v`` makes ``held`` useless to a max (``top``) or min queue: beyond it, or
    equal to it and not an int beside a float (on a tie the float wins, whatever the order: Min/Max)."""
    if held == v:
        return type(v) is float or type(held) is not float
    return held < v if top else held > v


def tilings(aggregations: Sequence[Aggregation], lateness_ms: int) -> list[Tiled]:
    """The tiled windows of a view's aggregations (lifetime first, then in order of first use); a
    window that could keep more than :data:`MAX_TILES` tiles raises :class:`DefinitionError`."""
    groups: dict[Window, list[Aggregation]] = {}
    for a in sorted(aggregations, key=lambda a: a.window.kind != "lifetime"):
        groups.setdefault(a.window, []).append(a)
    out = [Tiled(w, aggs, lateness_ms) for w, aggs in groups.items()]
    for tw in out:
        if tw.bound > MAX_TILES:
            raise DefinitionError(
                f"window {tw.window.label} (resolution {tw.resolution} ms, allowed lateness {lateness_ms} ms)"
                f" could keep {tw.bound} tiles per entity, more than {MAX_TILES}: declare a coarser"
                " resolution (sliding(size, resolution=...)) or a shorter allowed_lateness"
            )
    return out
