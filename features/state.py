"""An entity's state in one view (format 2: tiles), and the checks a stored state passes before use.

A state holds, per window of the view, its tiles (see :mod:`features.tiles`), the lifetime aggregations'
settled accumulators, and for re-keyed views the hashes of the entity's last :data:`MAX_IDS` event ids
and the highest source offset applied per source partition (``sources``, at most :data:`MAX_SOURCES`).
Stored as JSON::

    {"v": 2, "w": watermark, "q": seq, "t": {window_key: [[k, acc_1, ...], ...]},
     "s": {lifetime aggregation: acc}, "i": [id hashes], "p": position, "m": bounds,
     "r": {source_key(topic, partition): offset}}

``"r"`` is optional (left out when empty: states written before it load as they are, and states of views
keyed by the entity are the bytes they were).

A state comes back from a store (Redis, or anything that kept its JSON): :func:`check_state` says why it
cannot be used, or None. It refuses a state that does not fit the view (a ``null`` where a number must be,
a missing accumulator, a tile out of place) and one whose sums exceed the magnitude totals that keep every
aggregate finite (see :mod:`features.engine`); the adapters reset such a state (see
:mod:`features.pipeline`). A state of format 1 (before issue 13: buffered events) is migrated to tiles by
:func:`check_state` (see :mod:`features.migrate`), or refused saying so.

>>> from features.aggregations import Sum
>>> from features.definitions import FeatureView
>>> layout = Layout.of(FeatureView("v", aggregations=[Sum("x")], allowed_lateness=60))
>>> layout.inputs, layout.bounded, [tw.key for tw in layout.tiled]
(['x'], {'x': (True, False)}, ['lifetime@1'])
>>> state = EntityState(watermark=5, seq=1, tiles={"lifetime@1": [[5, [2.0]]]},
...                     settled={"x_sum_lifetime": [0.0]}, bounds={"x": [2.0, 4.0]})
>>> check_state(layout, state) is None
True
>>> state.tiles["lifetime@1"][0][1] = [1e300]
>>> check_state(layout, state)
"x_sum_lifetime: beyond the total magnitude of 'x'"
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from features.aggregations import Aggregation
from features.definitions import FeatureView
from features.events import MAX_TS_MS, MIN_TS_MS
from features.numeric import INT64_MAX, INT64_MIN, SUM_LIMIT
from features.summaries import MAX_COUNT
from features.tiles import Tiled

__all__ = ["MAX_IDS", "MAX_SOURCES", "EntityState", "Layout", "check_state", "id_hash", "source_key"]

# how many event ids (as int64 hashes) a re-keyed view keeps per entity to recognise a duplicate
MAX_IDS = 256
# how many source partitions a re-keyed view keeps the highest applied offset of, per entity
MAX_SOURCES = 4096
# the longest key of ``sources`` (a Kafka topic name is at most 249 characters)
_MAX_SOURCE_KEY = 300


def source_key(topic: str, partition: int) -> str:
    """The key of a source partition in a state's ``sources``.

    >>> source_key("events", 3)
    '3:events'
    """
    return f"{partition}:{topic}"


FORMAT = 2


def id_hash(event_id: str) -> int:
    """The signed int64 a re-keyed view keeps of an event id (blake2b, 8 bytes) to recognise duplicates.

    >>> id_hash("e1") == id_hash("e1") != id_hash("e2")
    True
    """
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class Layout:
    """What of a view shapes its entities' states: the inputs the aggregations read (in this order), the
    tiled windows, the lifetime aggregations (settled), per bounded field (bounded by the sum of ``|x|``,
    by the sum of ``x*x``), and whether event ids are kept (re-keyed views)."""

    inputs: list[str]
    tiled: tuple[Tiled, ...]
    lifetime: list[Aggregation]
    bounded: dict[str, tuple[bool, bool]]
    rekeyed: bool = False

    @property
    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.inputs)}

    @classmethod
    def of(cls, view: FeatureView) -> Layout:
        bounded: dict[str, tuple[bool, bool]] = {}
        for a in view.aggregations:
            if a.magnitude and a.field is not None:
                by_sum, by_square = bounded.get(a.field, (False, False))
                bounded[a.field] = (by_sum or a.magnitude == "sum", by_square or a.magnitude == "square")
        lifetime = [a for a in view.aggregations if a.window.kind == "lifetime"]
        return cls(view.inputs, view.tiled, lifetime, bounded, view.rekeyed)


class _Unset:
    pass


_UNSET = _Unset()  # bounds not given (None is a value: a format 1 state without them)

# Rounding slack when stored accumulators are compared with the magnitude totals that bound them (relative,
# and absolute for totals in float64's subnormal range, where a relative slack rounds away)
_SLACK = 1 + 2**-20
_TINY = 1e-300


class EntityState:
    """One entity's state in one view. ``position`` is for adapters: the source partition and offset of the
    last event applied, stored together with the state so that a redelivered event is recognised.

    Attributes: ``watermark``, ``seq``, ``tiles`` (window key -> ``[[k, accs...], ...]``), ``settled``
    (lifetime aggregation -> folded tiles), ``ids`` (re-keyed views: hashes of the last ``MAX_IDS`` event
    ids), ``position`` (``{"t": topic, "p": partition, "o": offset}``), ``sources`` (re-keyed views: per
    source partition, :func:`source_key`, the highest source offset applied; features.pipeline),
    ``bounds`` (per bounded field, ``[sum of |x|, sum of x*x]`` over the entity's lifetime; None only in a
    format 1 state from a version that did not keep them: the migration derives them); and, not stored
    nor compared: ``size`` (an upper bound of the serialised size, kept by the pipeline), ``cache`` (per
    window key, the merged accumulators of the last range read in order, features.engine) and ``legacy``
    (a format 1 state as decoded, until check_state migrates it).

    **Held natively.** The compiled step (features._native) may hold the tiles, the settled accumulators,
    the bounds and the cache in C between events (``native``): reading or setting any of them from Python
    first writes them back as the lists above (the same lists the Python paths would hold), and the
    state is the lists again until the step takes it up at its next event. ``to_json`` reads the native
    state without giving it up; pickling and ``copy.deepcopy`` copy the lists. A state the step refuses
    to hold (a hand-built one check_state would refuse) is marked ``unheld`` and stays on the lists until
    check_state passes it. A plain class with slots, not a dataclass: those four are properties."""

    __slots__ = (
        "_bounds",
        "_cache",
        "_settled",
        "_tiles",
        "ids",
        "legacy",
        "native",
        "position",
        "seq",
        "size",
        "sources",
        "unheld",
        "watermark",
    )

    def __init__(
        self,
        watermark: int | None = None,
        seq: int = 0,
        tiles: dict[str, list[list[Any]]] | None = None,
        settled: dict[str, list[Any]] | None = None,
        ids: list[int] | None = None,
        position: dict[str, Any] | None = None,
        sources: dict[str, int] | None = None,
        bounds: dict[str, list[float]] | _Unset | None = _UNSET,
        size: int = 0,
        cache: dict[str, list[Any]] | None = None,
        legacy: dict[str, Any] | None = None,
    ) -> None:
        self.watermark = watermark
        self.seq = seq
        self._tiles = {} if tiles is None else tiles
        self._settled = {} if settled is None else settled
        self.ids = [] if ids is None else ids
        self.position = position
        self.sources = {} if sources is None else sources
        self._bounds: dict[str, list[float]] | None = {} if isinstance(bounds, _Unset) else bounds
        self.size = size
        self._cache = {} if cache is None else cache
        self.legacy = legacy
        self.native: Any = None  # the compiled step's hold of the state (features._native), or None
        self.unheld = False  # the compiled step refused to hold it (a state check_state would refuse)

    def release(self) -> None:
        """Write a natively held state back into its lists (the four properties do it before reading)."""
        held = self.native
        if held is not None:
            self.native = None
            held.release(self)

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        """Pickling and ``copy.deepcopy``: the lists (a held state written back first; the hold itself is
        not copied)."""
        if self.native is not None:
            self.release()
        return None, {name: getattr(self, name) for name in self.__slots__}

    @property
    def tiles(self) -> dict[str, list[list[Any]]]:
        if self.native is not None:
            self.release()
        return self._tiles

    @tiles.setter
    def tiles(self, value: dict[str, list[list[Any]]]) -> None:
        if self.native is not None:
            self.release()
        self._tiles = value

    @property
    def settled(self) -> dict[str, list[Any]]:
        if self.native is not None:
            self.release()
        return self._settled

    @settled.setter
    def settled(self, value: dict[str, list[Any]]) -> None:
        if self.native is not None:
            self.release()
        self._settled = value

    @property
    def bounds(self) -> dict[str, list[float]] | None:
        if self.native is not None:
            self.release()
        return self._bounds

    @bounds.setter
    def bounds(self, value: dict[str, list[float]] | None) -> None:
        if self.native is not None:
            self.release()
        self._bounds = value

    @property
    def cache(self) -> dict[str, list[Any]]:
        if self.native is not None:
            self.release()
        return self._cache

    @cache.setter
    def cache(self, value: dict[str, list[Any]]) -> None:
        if self.native is not None:
            self.release()
        self._cache = value

    def _stored(self) -> tuple[Any, ...]:
        return (self.watermark, self.seq, self.tiles, self.settled, self.ids, self.position, self.sources,
                self.bounds)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, EntityState)
        return self._stored() == other._stored()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it was

    def __repr__(self) -> str:
        names = ("watermark", "seq", "tiles", "settled", "ids", "position", "sources", "bounds")
        pairs = zip(names, self._stored(), strict=True)
        return "EntityState(" + ", ".join(f"{n}={v!r}" for n, v in pairs) + ")"

    def to_json(self) -> bytes:
        held = self.native
        if held is not None:  # the lists it would write back, made for this call only
            tiles, settled, bounds = held.export(self)
        else:
            tiles, settled, bounds = self._tiles, self._settled, self._bounds
        d = {"v": FORMAT, "w": self.watermark, "q": self.seq, "t": tiles, "s": settled, "i": self.ids,
             "p": self.position, "m": bounds}  # fmt: skip
        if self.sources:
            d["r"] = self.sources
        return orjson.dumps(d)

    @classmethod
    def from_json(cls, raw: bytes | str) -> EntityState:
        """Decode a stored state (any error for bytes that are not one: the stores catch it). A format 1
        state is kept as ``legacy`` for :func:`check_state` to migrate."""
        d = orjson.loads(raw)
        size = len(raw)
        if "v" not in d:
            return cls(watermark=d["w"], seq=d["q"], position=d.get("p"), legacy=d, size=size)
        if d["v"] != FORMAT:
            raise ValueError(f"state format {d['v']!r} is not {FORMAT}")
        return cls(
            watermark=d["w"],
            seq=d["q"],
            tiles=d["t"],
            settled=d["s"],
            ids=d["i"],
            position=d["p"],
            bounds=d["m"],
            sources=d.get("r", {}),
            size=size,
        )


def check_state(layout: Layout, state: EntityState) -> str | None:
    """Why a stored ``state`` cannot be used by this view (None: it can). Migrates a format 1 state in
    place first (the refusal then says why it could not be migrated)."""
    if state.legacy is not None:
        from features.migrate import migrate  # the migration builds on this module

        problem = migrate(layout, state)
        if problem is not None:
            return f"format 1 state from before issue 13 could not be migrated: {problem}"
    state.cache = {}  # whatever it held was not checked
    problem = _check_header(layout, state) or _check_tiles(layout, state) or _check_magnitudes(layout, state)
    if problem is None:
        state.unheld = False  # a state the step refused to hold (EntityState) is one it can hold once checked
    return problem


def _check_header(layout: Layout, state: EntityState) -> str | None:
    wm = state.watermark
    if not (wm is None or (type(wm) is int and MIN_TS_MS <= wm <= MAX_TS_MS)):
        return "watermark: not an event time"
    if type(state.seq) is not int or not 0 <= state.seq <= MAX_COUNT:
        return "seq: not a count"
    pos = state.position
    if pos is not None and not (
        type(pos) is dict
        and type(pos.get("t")) is str
        and type(p := pos.get("p")) is int
        and type(o := pos.get("o")) is int
        and -1 <= p <= INT64_MAX
        and -1 <= o <= INT64_MAX
    ):
        return "position: not a topic, partition and offset"
    ids = state.ids
    if not (
        type(ids) is list
        and len(ids) <= (MAX_IDS if layout.rekeyed else 0)
        and all(type(x) is int and INT64_MIN <= x <= INT64_MAX for x in ids)
    ):
        return f"ids: not at most {MAX_IDS} event id hashes (none for a view keyed by the entity)"
    sources = state.sources
    if not (
        type(sources) is dict
        and len(sources) <= (MAX_SOURCES if layout.rekeyed else 0)
        and all(
            type(k) is str and len(k) <= _MAX_SOURCE_KEY and type(o) is int and 0 <= o <= INT64_MAX
            for k, o in sources.items()
        )
    ):
        return f"sources: not at most {MAX_SOURCES} source offsets (none for a view keyed by the entity)"
    bounds = state.bounds
    if not (
        type(bounds) is dict
        and all(
            type(b) is list and len(b) == 2 and all(type(x) is float and 0 <= x <= SUM_LIMIT for x in b)
            for b in bounds.values()
        )
    ):
        return "bounds: not finite magnitudes"
    settled = state.settled
    if type(settled) is not dict or set(settled) != {a.name for a in layout.lifetime}:
        return "settled: not one accumulator per lifetime aggregation"
    for agg in layout.lifetime:
        if not agg.valid(settled[agg.name]):
            return f"settled.{agg.name}: not a valid accumulator"
    return None


def _check_tiles(layout: Layout, state: EntityState) -> str | None:
    """Every window's tiles: valid accumulators, sorted by index, within the range retention keeps."""
    tiles = state.tiles
    if type(tiles) is not dict or set(tiles) != {tw.key for tw in layout.tiled}:
        return "tiles: not one list of tiles per window of the view"
    wm = state.watermark
    for tw in layout.tiled:
        found = tiles[tw.key]
        if type(found) is not list:
            return f"tiles.{tw.key}: not a list"
        if not found:
            continue
        if wm is None:
            return f"tiles.{tw.key}: tiles without a watermark"
        lo, hi = tw.cutoff(wm), wm // tw.resolution
        width = len(tw.aggs) + 1
        last = lo - 1
        for tile in found:
            if not (type(tile) is list and len(tile) == width and type(k := tile[0]) is int):
                return f"tiles.{tw.key}: a tile is not [k, accumulators...]"
            if not last < k <= hi:
                return f"tiles.{tw.key}: tile {k} is out of order or outside [{lo}, {hi}]"
            last = k
            for agg, acc in zip(tw.aggs, tile[1:], strict=True):
                if not agg.valid(acc):
                    return f"tiles.{tw.key}: tile {k}: not a valid accumulator of {agg.name}"
    return None


def _accumulators(layout: Layout, state: EntityState) -> Iterable[tuple[Aggregation, list[list[Any]]]]:
    """Per aggregation, every accumulator it keeps (each event counted in at most one of them)."""
    for tw in layout.tiled:
        for i, agg in enumerate(tw.aggs):
            accs = [tile[i + 1] for tile in state.tiles[tw.key]]
            if tw.kind == "lifetime":
                accs.append(state.settled[agg.name])
            yield agg, accs


def _check_magnitudes(layout: Layout, state: EntityState) -> str | None:
    """Every aggregation's accumulators, together, within what the state's events can have made: counts
    within the events applied (``seq``), sums within their field's total of ``|x|``, sums of squares
    within its total of ``x*x``. Merging accumulators that pass can overflow nothing (features.engine)."""
    bounds = state.bounds or {}
    for agg, accs in _accumulators(layout, state):
        kind = agg.kind
        if kind in ("count", "mean", "var", "std") and sum(acc[0] for acc in accs) > state.seq:
            return f"{agg.name}: counts more events than the state applied"
        if kind == "last" and any(acc[1] is not None and acc[1] > state.seq for acc in accs):
            return f"{agg.name}: a value from an event the state did not apply"
        if not agg.magnitude or agg.field is None:
            continue
        a, q = bounds.get(agg.field) or (0.0, 0.0)
        if agg.magnitude == "sum":  # every partial of every accumulator within the field's total of |x|
            ok = _total(abs(x) for acc in accs for x in agg.partials(acc)) <= a * _SLACK + _TINY
        else:  # [n, sum of x, sum of x*x]: sums within the totals of |x| and of x*x
            ok = _total(abs(x) for acc in accs for x in acc[2]) <= q * _SLACK + _TINY
            ok = ok and _total(abs(x) for acc in accs for x in acc[1]) <= a * _SLACK + _TINY
        if not ok:
            return f"{agg.name}: beyond the total magnitude of {agg.field!r}"
    return None


def _total(terms: Iterable[float]) -> float:
    """The exact total of non-negative terms, infinity when it overflows (a hostile state's)."""
    try:
        return math.fsum(terms)
    except (OverflowError, ValueError):  # fsum's intermediate overflow, or infinities
        return math.inf
