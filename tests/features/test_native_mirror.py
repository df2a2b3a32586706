"""The compiled step holding a state in C (features/_native_mirror.pxi) beside the same step on the state's
lists (``hold=False``), on states nobody should hand it: pickled or deep-copied while held, a watermark set
by hand under a held state, and hand-built states whose partials are not finite, whose sums or counts sit
near the limits C doubles and integers hold, whose times sit near int64's ends, or with any accumulator's
leaf replaced by a hostile value. Each pair gives the same outcome (vector or refusal) and the same state
after every event. The compiled path must be built (``native=True`` raises ImportError otherwise)."""

from __future__ import annotations

import copy
import pickle
import random
from collections.abc import Callable
from typing import Any

import numpy as np  # River's own dependency: always there
import pytest

from features.aggregations import Count, Last, Max, Mean, Min, SinceLast, Std, Sum, Var
from features.definitions import FeatureView
from features.engine import EntityState, FeatureEngine
from features.events import Event
from features.windows import hopping, sliding, tumbling
from tests.support.streams import stream

pytestmark = pytest.mark.unit

VIEW = FeatureView(
    name="mirror",
    aggregations=[
        Count(),
        Mean("salary"),
        Var("hvalue"),
        Min("age"),
        Last("car"),
        SinceLast(),
        Count(window=sliding("2m", resolution="10s")),
        Sum("loan", window=sliding("2m", resolution="10s")),
        Mean("salary", window=sliding("2m", resolution="10s")),
        Var("hvalue", window=sliding("2m", resolution="10s")),
        Max("loan", window=sliding("5m", resolution="30s")),
        Std("salary", window=hopping("10m", "2m")),
        Sum("loan", window=tumbling("1h")),
    ],
    allowed_lateness="1m",
)
HELD = FeatureEngine(VIEW, native=True)
LISTS = FeatureEngine(VIEW, native=True, hold=False)
EVENTS = stream(240, entities=1, seed=13, step_ms=4_000)
WINDOW = "2m@10000"  # the 2-minute window's key in the state's tiles


def test_the_engines_under_test() -> None:
    assert HELD.native.mirrorable and not LISTS.native.mirrorable
    assert WINDOW in LISTS.new_state().tiles, sorted(LISTS.new_state().tiles)


def _outcome(engine: FeatureEngine, state: EntityState, e: Event) -> tuple[str, str]:
    try:
        return "vector", repr(engine.apply(state, e))  # repr: keys' order and values' types
    except Exception as exc:  # a hand-built state may make the list path raise anything: both must
        return type(exc).__name__, str(exc)


def _lists(state: EntityState) -> str:
    """The state's stored fields (a held one written back), NaN and infinities kept."""
    return repr((state.watermark, state.seq, state.tiles, state.settled, state.bounds))


def _json(state: EntityState) -> bytes | str:
    try:
        return state.to_json()
    except TypeError as exc:  # a hand-built leaf JSON does not hold (2**64)
        return str(exc)


def run_both(held: EntityState, lists: EntityState, events: list[Event], release: bool = True) -> list[str]:
    """``events`` through the held engine on ``held`` and the list engine on ``lists``: the same outcome and
    the same state (``to_json`` does not give a held state up) after every event, and the same lists at the
    end (``release``: a held state written back); the outcomes' kinds."""
    kinds = []
    for i, e in enumerate(events):
        got, want = _outcome(HELD, held, e), _outcome(LISTS, lists, e)
        assert got == want, f"event {i} (ts {e.ts})"
        assert _json(held) == _json(lists), f"event {i} (ts {e.ts}): states differ"
        kinds.append(want[0])
    if release:
        assert _lists(held) == _lists(lists)
    return kinds


def warm(n: int = 120) -> EntityState:
    """A state after ``n`` events on the list path (not held)."""
    state = LISTS.new_state()
    for e in EVENTS[:n]:
        LISTS.apply(state, e)
    return state


def test_a_held_state_pickles_and_deep_copies_as_its_lists() -> None:
    held = HELD.new_state()
    lists = LISTS.new_state()
    run_both(held, lists, EVENTS[:100], release=False)
    assert held.native is not None
    for clone in (copy.deepcopy, lambda s: pickle.loads(pickle.dumps(s))):
        twin = clone(held)
        assert twin.native is None and twin == lists and _lists(twin) == _lists(lists)
        assert held == lists  # the original is unchanged by being copied
    twin = copy.deepcopy(held)
    kinds = run_both(held, lists, EVENTS[100:160])
    assert kinds.count("vector") > 50
    twin_lists = copy.deepcopy(warm(100))
    run_both(twin, twin_lists, EVENTS[100:160])  # the copy goes on alone, as a state of its own
    assert twin == held


def test_a_watermark_lowered_under_a_held_state_goes_to_the_lists() -> None:
    held = HELD.new_state()
    lists = LISTS.new_state()
    run_both(held, lists, EVENTS[:120], release=False)
    assert held.native is not None
    for s in (held, lists):
        s.watermark -= 300_000  # five minutes back: tiles after the watermark's tile
    # events again from those five minutes (in order now: after the lowered watermark), then new ones
    again = [e for e in EVENTS[:120] if e.ts >= held.watermark]
    assert len(again) > 20
    kinds = run_both(held, lists, again + EVENTS[120:160])
    assert kinds.count("vector") > 50, kinds


def test_a_watermark_raised_by_hand_is_taken_up_anew() -> None:
    held = HELD.new_state()
    lists = LISTS.new_state()
    run_both(held, lists, EVENTS[:120], release=False)
    for s in (held, lists):
        s.watermark += 400_000
    later = [e for e in EVENTS[120:] if e.ts >= held.watermark][:40]
    kinds = run_both(held, lists, later)
    assert kinds.count("vector") > 10, kinds


def _hand_built(edit: Callable[[EntityState], None], n: int = 120) -> tuple[EntityState, EntityState]:
    state = warm(n)
    edit(state)
    state.cache = {}  # the list path's cached ranges are of the lists before the edit
    return copy.deepcopy(state), copy.deepcopy(state)


def _set_tiles(key: int, values: list[Any]) -> Callable[[EntityState], None]:
    """The 2-minute window's last tiles' accumulator ``key`` set to ``values`` (one per tile, newest last)."""

    def edit(state: EntityState) -> None:
        tiles = state.tiles[WINDOW]
        for tile, v in zip(tiles[-len(values) :], values, strict=True):
            tile[key] = copy.deepcopy(v)

    return edit


SUM, MEAN, VAR = 2, 3, 4  # the 2-minute window's accumulators in a tile ([k, count, sum, mean, var])


@pytest.mark.parametrize(
    "edit",
    [
        _set_tiles(SUM, [[float("nan")]]),
        _set_tiles(SUM, [[float("inf")], [1.0]]),
        _set_tiles(SUM, [[1.0, float("-inf")]]),
        _set_tiles(MEAN, [[1, float("nan")]]),
        _set_tiles(VAR, [[1, [float("inf")], [1.0]]]),
        _set_tiles(SUM, [[1.7e308], [1.7e308]]),  # each finite, their range's sum not
        _set_tiles(SUM, [[1e308, 7e307], [-1.7e308]]),
        _set_tiles(VAR, [[1, [1e308], [1.7e308]], [1, [1e308], [1.7e308]]]),
        _set_tiles(1, [[2**63 - 2]]),  # a count the next event takes past int64
        _set_tiles(1, [[2**62], [2**62]]),  # two counts whose range passes it
        _set_tiles(1, [[-(2**63)], [2**63 - 1]]),
        _set_tiles(MEAN, [[2**63 - 1, 5.0]]),
        _set_tiles(VAR, [[2**63 - 1, [5.0], [25.0]]]),
    ],
    ids=lambda _: "edit",
)
def test_hand_built_sums_and_counts_give_the_list_paths_outcome(edit: Callable[[EntityState], None]) -> None:
    held, lists = _hand_built(edit)
    run_both(held, lists, EVENTS[120:200])


def test_times_near_int64s_ends() -> None:
    def since(state: EntityState) -> None:  # every lifetime SinceLast at the earliest int64
        state.settled["since_last_ms"] = [-(2**63) + 1]
        for tile in state.tiles["lifetime@1000"]:
            tile[6] = [-(2**63) + 1]

    def last(state: EntityState) -> None:
        state.settled["car_last_lifetime"] = [-(2**63), -(2**63), "x"]

    def early_tile(state: EntityState) -> None:  # a tile whose start time is past int64 (k * resolution)
        state.tiles[WINDOW].insert(0, [-(2**62), [1], [1.0], [1, 1.0], [1, [1.0], [1.0]]])

    for edit in (since, last, early_tile):
        held, lists = _hand_built(edit)
        first = HELD.apply(copy.deepcopy(held), EVENTS[120])
        if edit is since:
            assert first["since_last_ms"] == EVENTS[120].ts + 2**63 - 1  # not wrapped
        kinds = run_both(held, lists, EVENTS[120:160])
        assert "vector" in kinds


HOSTILE_LEAVES: tuple[Any, ...] = (
    float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 1.7976931348623157e308, 5e-324, -0.0,
    2**63 - 1, -(2**63), 2**64, 2**62 + 1, -1, 0, None, "x", True, 0.5, [], [1.0],
)  # fmt: skip


def _leaves(x: Any, path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    if isinstance(x, list):
        out = [path] if path else []
        for i, v in enumerate(x):
            out += _leaves(v, (*path, i))
        return out
    if isinstance(x, dict):
        return [p for k, v in x.items() for p in _leaves(v, (*path, k))]
    return [path]


def _replace(state: EntityState, path: tuple[Any, ...], value: Any) -> None:
    root: Any = {"t": state.tiles, "s": state.settled, "m": state.bounds}
    node = root
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


def test_any_leaf_of_a_hand_built_state_replaced_by_a_hostile_value() -> None:
    """Seeded: 300 states, each with one list or leaf (a tile's index, a count, a partial, a time, a value,
    a bound) replaced; the next 12 events through both paths."""
    rng = random.Random(1307)
    base = warm(120)
    paths = _leaves({"t": base.tiles, "s": base.settled, "m": base.bounds}, ())
    assert len(paths) > 300
    taken = 0
    for _ in range(300):
        path, value = rng.choice(paths), rng.choice(HOSTILE_LEAVES)
        state = copy.deepcopy(base)
        _replace(state, path, copy.deepcopy(value))
        state.cache = {}
        held, lists = copy.deepcopy(state), copy.deepcopy(state)
        start = rng.randrange(120, 220)
        run_both(held, lists, EVENTS[start : start + 12], release=False)
        taken += held.native is not None
        assert _lists(held) == _lists(lists)
    assert taken > 30  # some hostile states are still the step's to hold (a -0.0 partial, a 0 count...)


# ------------------------------------------------------------------ the state changed from inside an apply


def _twice(state: EntityState, inner: Callable[[FeatureEngine, EntityState], object]) -> list[str]:
    """EVENTS[100:140] through both engines, each with a check that calls ``inner`` (on its own engine and
    state) at every fourth event: the same outcomes, lists and states as the list path."""
    held, lists = copy.deepcopy(state), copy.deepcopy(state)
    kinds = []
    for i, e in enumerate(EVENTS[100:140]):
        outs = []
        for engine, s in ((HELD, held), (LISTS, lists)):

            def check(
                vector: dict[str, Any], engine: FeatureEngine = engine, s: EntityState = s, i: int = i
            ) -> None:
                if i % 4 == 0:
                    inner(engine, s)

            outs.append(_checked(engine, s, e, check))
        assert outs[0] == outs[1], f"event {i}"
        assert _json(held) == _json(lists), f"event {i}: states differ"
        kinds.append(outs[1][0])
    assert _lists(held) == _lists(lists)
    return kinds


def _checked(engine: FeatureEngine, state: EntityState, e: Event, check: Any) -> tuple[str, str]:
    try:
        return "vector", repr(engine.apply(state, e, check))
    except Exception as exc:
        return type(exc).__name__, str(exc)


def _apply(e: Event) -> Callable[[FeatureEngine, EntityState], object]:
    return lambda engine, s: _outcome(engine, s, e.model_copy(update={"event_id": f"in{s.seq}"}))


@pytest.mark.parametrize(
    "inner",
    [
        _apply(EVENTS[170]),  # a later tile than the outer event's: the held path raised RuntimeError
        lambda engine, s: (s.tiles, _apply(EVENTS[170])(engine, s)),  # written back, then an event
        lambda engine, s: _outcome(engine, s, EVENTS[0].model_copy(update={"ts": s.watermark - 5_000})),
        lambda engine, s: engine.online(s),  # the held ranges moved to the watermark's
        lambda engine, s: (copy.deepcopy(s), pickle.dumps(s), s.to_json()),  # written back only
    ],
    ids=["later", "read-then-apply", "late", "online", "copies"],
)
def test_a_check_that_changes_the_state_gives_the_list_paths_outcome(
    inner: Callable[[FeatureEngine, EntityState], object],
) -> None:
    kinds = _twice(warm(100), inner)
    assert kinds.count("vector") > 30, kinds


def test_a_watermark_not_an_int_does_not_leave_the_state_unheld() -> None:
    """A NumPy integer (or float) watermark set by hand is read as the step reads it: the state is held again
    (it was refused for good, though its watermark is an int again at the next event)."""
    for convert in (np.int64, float):
        held, lists = warm(100), warm(100)
        run_both(held, lists, EVENTS[100:101], release=False)
        held.watermark = lists.watermark = convert(held.watermark)
        run_both(held, lists, EVENTS[101:120], release=False)
        assert not held.unheld and held.native is not None
        assert _lists(held) == _lists(lists)
