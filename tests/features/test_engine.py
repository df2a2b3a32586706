"""The feature engine against the brute-force oracle, on in-order, out-of-order and late events."""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections.abc import Mapping

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from features.aggregations import Count, Last, Max, Mean, Min, SinceLast, Std, Sum, Var
from features.definitions import Derived, Expression, FeatureView
from features.engine import EntityState, FeatureEngine
from features.errors import AggregateOverflow, DefinitionError, LateEvent
from features.events import Event
from features.examples import customer, site
from features.pipeline import FeaturePipeline, RawRecord
from features.store import MemoryStore
from features.windows import hopping, sliding, tumbling
from tests.support.engine_run import row_lists, run_engine, run_rows
from tests.support.feature_defs import ALL, ZIP
from tests.support.oracle import Oracle, diff, stream

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("view", [ALL, customer, site], ids=lambda v: v.name)
@pytest.mark.parametrize("seed", [1, 2])
def test_engine_matches_brute_force(view: FeatureView, seed: int) -> None:
    events = stream(
        1_500, entities=25, seed=seed, late_every=97, shuffle_every=11, step_ms=3_000, grain_ms=10_000
    )
    vectors, late, online = run_engine(view, events)
    oracle = Oracle(view).feed(events)
    assert late == oracle.late and late  # some events were late, and the same ones
    assert vectors.keys() == oracle.vectors.keys()
    for event_id, expected in oracle.vectors.items():
        assert not diff(vectors[event_id], expected), (event_id, diff(vectors[event_id], expected))
    expected_online = oracle.online()
    assert online.keys() == expected_online.keys()
    for entity, (wm, aggs) in expected_online.items():
        assert online[entity][0] == wm
        assert not diff(online[entity][1], aggs), entity


def test_label_never_leaks_and_vector_excludes_the_event_itself() -> None:
    engine = FeatureEngine(ALL)
    state = engine.new_state()
    first = stream(1, 1, seed=3)[0]
    v = engine.apply(state, first)
    assert "label" not in v and v["count_lifetime"] == 0 and v["since_last_ms"] is None
    assert v["sal_k"] == first.fields["salary"] / 1000  # type: ignore[operator]
    assert v["broken"] is None and v["ratio"] is None  # failing derived field / division by zero: null


def test_late_events_change_nothing_and_redelivered_ones_are_recognised() -> None:
    engine = FeatureEngine(ALL)
    state = engine.new_state()
    e = stream(3, 1, seed=4)
    for x in e:
        engine.apply(state, x)
    before = state.to_json()
    late = e[0].model_copy(update={"event_id": "late", "ts": e[2].ts - 121_000})
    with pytest.raises(LateEvent, match="late: event time"):
        engine.apply(state, late)
    assert state.to_json() == before
    # a re-keyed view recognises an event it already holds by its id (direct views use source offsets)
    zip_engine = FeatureEngine(ZIP)
    zip_state = zip_engine.new_state()
    zip_engine.apply(zip_state, e[1])
    assert zip_engine.seen(zip_state, e[1]) and not zip_engine.seen(zip_state, late)
    assert not engine.seen(state, e[1])


def test_a_rekeyed_view_recognises_each_event_it_holds_among_others_at_the_same_time() -> None:
    engine = FeatureEngine(ZIP)
    state = engine.new_state()
    at = [
        Event(entity="u", ts=t, event_id=f"e{i}", fields={"zipcode": 1})
        for i, t in enumerate((5, 9, 9, 9, 12))
    ]
    for e in at:
        engine.apply(state, e)
    held = {e.event_id for e in at if engine.seen(state, e)}
    assert held == {"e0", "e1", "e2", "e3", "e4"}
    others = [e.model_copy(update={"event_id": "new"}) for e in at]  # same times, ids never applied
    assert not any(engine.seen(state, e) for e in others)


def test_definitions_are_checked() -> None:
    with pytest.raises(DefinitionError, match="defined twice"):
        FeatureView("v", aggregations=[Count(), Count()])
    with pytest.raises(DefinitionError, match="step <= size"):
        hopping("1m", "2m")
    with pytest.raises(DefinitionError, match="expected milliseconds"):
        sliding("soon")
    assert customer.fingerprint() != site.fingerprint()


def test_fingerprint_follows_the_definition_and_nothing_else() -> None:
    def view(**change: object) -> FeatureView:
        spec: dict = {"name": "v", "aggregations": [Count(), Mean("x", window=sliding("1m"))]}
        spec.update(change)
        return FeatureView(**spec)  # built anew each time: equal definitions, distinct objects

    base = view().fingerprint()
    # computed here from what the definition says: name, key, lateness, own fields, each aggregation
    described = [
        "v",
        "entity",
        "60000",  # the default allowed lateness, a minute
        "True",
        # and since issue 13 each window's tiles: the lifetime's from the lateness (60 s / 60), the minute's
        "Count(None, Window(kind='lifetime', size_ms=0, step_ms=0, resolution_ms=0), 'count_lifetime')"
        " tiles@1000",
        "Mean('x', Window(kind='sliding', size_ms=60000, step_ms=0, resolution_ms=1000), 'x_mean_1m')"
        " tiles@1000",
    ]
    assert base == hashlib.sha256("\n".join(described).encode()).hexdigest()[:16]
    assert view().fingerprint() == base and len(base) == 16 and int(base, 16) >= 0
    changed = [
        view(name="w"),
        view(entity="zipcode"),
        view(allowed_lateness="1s"),
        view(include_fields=False),
        view(aggregations=[Count(), Mean("x", window=sliding("2m"))]),
        view(aggregations=[Count(), Mean("x", window=sliding("1m", resolution="2s"))]),
        view(aggregations=[Count(), Mean("y", window=sliding("1m"))]),
        view(aggregations=[Count(), Sum("x", window=sliding("1m"), name="x_mean_1m")]),
        view(derived=[Derived("d", lambda f: 1)]),
        view(expressions=[Expression("e", lambda v: 2)]),
    ]
    prints = [v.fingerprint() for v in changed]
    assert base not in prints and len(set(prints)) == len(prints)


def test_pipeline_skips_redelivered_records_and_dead_letters_bad_ones() -> None:
    async def go() -> None:
        store = MemoryStore()
        pipeline = FeaturePipeline([customer], store)
        events = stream(40, 4, seed=5)
        raws = [RawRecord(e.to_json(), "t", 0, i) for i, e in enumerate(events)]
        poison = [
            RawRecord(b"{nope", "t", 0, 40),
            RawRecord(b'{"entity": "x"}', "t", 0, 41),
            RawRecord(None, "t", 0, 42),
        ]
        first = await pipeline.process(raws[:25] + poison[:1])
        await first.commit(store)
        # the broker redelivers from offset 20 (as after a crash before the offset commit)
        second = await pipeline.process(raws[20:] + poison[1:])
        await second.commit(store)
        assert second.skipped == 5
        assert [r.event.event_id for r in first.records + second.records] == [e.event_id for e in events]
        assert [(d.reason, d.record.offset) for d in first.dead_letters + second.dead_letters] == [
            ("invalid", 40),
            ("invalid", 41),
            ("invalid", 42),
        ]
        assert "ts: is required" in second.dead_letters[0].error
        expected = Oracle(customer).feed(events)
        for r in first.records + second.records:
            assert not diff(r.features, expected.vectors[r.event.event_id])
        rows = await store.read("customer", sorted(expected.online()))
        for row in rows:
            assert row is not None
            wm, aggs = expected.online()[row.entity]
            assert row.ts == wm and not diff(row.values, aggs)

    asyncio.run(go())


# ---------------------------------------------------------------- numbers stay finite (issue 11)

BIG = FeatureView(
    name="big",
    aggregations=[
        Mean("loan"),
        Sum("loan", window=sliding("1h")),
        Max("loan"),
        Var("hvalue", window=sliding("1h")),
        Std("hvalue"),
        Count(),
    ],
    allowed_lateness="1h",
)


def _ev(i: int, entity: str = "u", **fields: object) -> Event:
    return Event(event_id=f"e{i}", entity=entity, ts=1_000 * i, fields=fields)


def _finite_everywhere(value: object) -> bool:
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_everywhere(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def test_an_event_that_would_overflow_an_aggregate_is_refused_before_it_changes_the_state() -> None:
    """Two loans of 1e308 took the lifetime mean to infinity, stored as null: the next batch raised."""
    engine = FeatureEngine(BIG)
    state = engine.new_state()
    events = [_ev(1, loan=1e308, hvalue=1.0), _ev(2, loan=1e308, hvalue=2.0), _ev(3, loan=-5.0, hvalue=4.0)]
    engine.apply(state, events[0])
    before = state.to_json()
    with pytest.raises(AggregateOverflow, match="overflow: field 'loan' of entity 'u' in view 'big'"):
        engine.apply(state, events[1])
    assert state.to_json() == before  # nothing changed, not even the sequence number
    last = engine.apply(state, events[2])
    oracle = Oracle(BIG).feed(events)
    assert oracle.overflow == {"e2"}  # the exact rule, written out again, refuses the same event
    assert not diff(last, oracle.vectors["e3"])
    wm, aggs = oracle.online()["u"]
    assert state.watermark == wm and not diff(engine.online(state), aggs)
    assert engine.online(state)["loan_mean_lifetime"] == pytest.approx((1e308 - 5.0) / 2)
    restored = EntityState.from_json(state.to_json())  # through JSON, as through Redis: no null appeared
    assert engine.check_state(restored) is None and _finite_everywhere(orjson.loads(state.to_json()))
    # squares: a var/std field refuses values whose squares would overflow Welford's sums
    with pytest.raises(AggregateOverflow, match=r"'hvalue'.*sum of squares"):
        engine.apply(state, _ev(4, hvalue=1e160))
    assert Oracle(BIG).feed([*events, _ev(4, hvalue=1e160)]).overflow == {"e2", "e4"}


@hyp_settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),  # entity
            st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1)),
            st.one_of(st.none(), st.floats(-1e200, 1e200, allow_nan=False)),
            st.integers(0, 90),  # seconds; out of order within the lateness
        ),
        min_size=1,
        max_size=30,
    )
)
def test_no_stream_of_numbers_in_the_domain_makes_an_aggregate_non_finite(rows: list) -> None:
    engine = FeatureEngine(BIG)
    states: dict[str, EntityState] = {}
    events = [_ev(i, f"u{k}", loan=loan, hvalue=h) for i, (k, loan, h, _) in enumerate(rows)]
    events = [e.model_copy(update={"ts": 1_000 * rows[i][3]}) for i, e in enumerate(events)]
    refused = set()
    for e in events:
        state = states.setdefault(e.entity, engine.new_state())
        try:
            vector = engine.apply(state, e)
        except AggregateOverflow:
            refused.add(e.event_id)
            continue
        assert _finite_everywhere(vector)
        states[e.entity] = state = EntityState.from_json(state.to_json())
        assert engine.check_state(state) is None
        assert _finite_everywhere(engine.online(state))
    assert refused == Oracle(BIG).feed(events).overflow


def test_derived_fields_and_expressions_outside_the_domain_are_null() -> None:
    """A derived 2**70 could not be written by orjson (the worker's batch failed); inf became null."""
    view = FeatureView(
        name="d",
        derived=[
            Derived("huge", lambda f: f["n"] ** 10),
            Derived("inf", lambda f: f["x"] * 1e308),
            Derived("obj", lambda f: [f["n"]]),
            Derived("ok", lambda f: f["n"] + 1),
        ],
        aggregations=[Sum("huge"), Sum("inf"), Sum("ok")],
        expressions=[Expression("ratio", lambda v: v["x"] * 1e308 * 10)],
    )
    engine = FeatureEngine(view)
    state = engine.new_state()
    v = engine.apply(state, _ev(1, n=2**10, x=10.0))
    assert (v["huge"], v["inf"], v["obj"], v["ratio"], v["ok"]) == (None, None, None, None, 1025)
    v = engine.apply(state, _ev(2, n=2**10, x=10.0))
    assert v["huge_sum_lifetime"] == 0.0 and v["ok_sum_lifetime"] == 1025.0
    orjson.dumps(v)  # a vector is always serialisable


# ---------------------------------------------------------------- one record never stops a batch


def _raw(events: list[Event], start: int = 0) -> list[RawRecord]:
    return [RawRecord(e.to_json(), "t", 0, start + i) for i, e in enumerate(events)]


def test_a_batch_mixing_an_overflow_with_other_entities_gives_every_other_entity_its_oracle_vector() -> None:
    async def go() -> None:
        store = MemoryStore()
        pipeline = FeaturePipeline([BIG], store)
        good = [_ev(i, f"g{i % 3}", loan=float(i), hvalue=float(i * i)) for i in range(1, 30)]
        bad = [_ev(100, "x", loan=1e308), _ev(101, "x", loan=1e308), _ev(102, "x", loan=7.0)]
        mixed = good[:10] + bad[:2] + good[10:20] + bad[2:] + good[20:]
        result = await pipeline.process(_raw(mixed))
        await result.commit(store)
        assert [(d.reason, d.record.offset, d.stage) for d in result.dead_letters] == [
            ("overflow", 11, "features")
        ]
        assert result.dead_letters[0].record.value == bad[1].to_json()  # the original bytes
        oracle = Oracle(BIG).feed(mixed)
        assert oracle.overflow == {"e101"}
        assert {r.event.event_id for r in result.records} == oracle.vectors.keys()
        for r in result.records:
            assert not diff(r.features, oracle.vectors[r.event.event_id])
        online = oracle.online()
        for row in await store.read("big", sorted(online)):
            assert row is not None and not diff(row.values, online[row.entity][1])
            assert row.ts == online[row.entity][0]
        # the next batch for the same entity goes on (it used to raise TypeError on the null forever)
        more = await pipeline.process(_raw([_ev(103, "x", loan=1.0)], start=len(mixed)))
        assert not more.dead_letters and more.records[0].features["count_lifetime"] == 2

    asyncio.run(go())


def test_a_corrupt_stored_state_is_reset_and_its_record_dead_lettered() -> None:
    """A null where a number must be (an older version, tampering), or bytes that are not a state, made every
    batch with that entity raise: retried forever, blocking its neighbours."""

    async def go() -> None:
        store = MemoryStore()
        engine = FeatureEngine(BIG)
        seeded = engine.new_state()
        engine.apply(seeded, _ev(1, "nulls", loan=3.0))
        tampered = orjson.loads(seeded.to_json())
        tampered["s"]["loan_mean_lifetime"][1] = None  # what orjson wrote for an infinite mean
        store.put_raw("big", "nulls", orjson.dumps(tampered))
        store.put_raw("big", "garbage", b"\x00not json")
        store.put_raw(
            "big", "shape", b'{"v": 2, "w": 1, "q": 1, "t": {}, "s": {}, "i": [], "p": null, "m": {}}'
        )
        events = [
            _ev(2, "nulls", loan=1.0),
            _ev(3, "good", loan=2.0),
            _ev(4, "garbage", loan=4.0),
            _ev(5, "nulls", loan=5.0),
            _ev(6, "shape", loan=6.0),
            _ev(7, "garbage", loan=8.0),
            _ev(8, "good", loan=9.0),
        ]
        pipeline = FeaturePipeline([BIG], store)
        result = await pipeline.process(_raw(events))
        await result.commit(store)
        dead = {(d.reason, d.record.offset) for d in result.dead_letters}
        assert dead == {("corrupt_state", 0), ("corrupt_state", 2), ("corrupt_state", 4)}
        assert result.resets == 3
        errors = " | ".join(d.error for d in result.dead_letters)
        assert "settled.loan_mean_lifetime" in errors and "does not decode" in errors and "settled:" in errors
        # each reset entity starts again after its dead-lettered record; the good one is untouched
        kept = [events[i] for i in (1, 3, 5, 6)]
        oracle = Oracle(BIG).feed(kept)
        assert {r.event.event_id for r in result.records} == {e.event_id for e in kept}
        for r in result.records:
            assert not diff(r.features, oracle.vectors[r.event.event_id])
        loaded = await store.load("big", ["nulls", "garbage", "shape", "good"])
        for entity in ("nulls", "garbage", "good"):
            state = loaded[entity]
            assert isinstance(state, EntityState) and engine.check_state(state) is None
            assert not diff(engine.online(state), oracle.online()[entity][1])
        assert isinstance(loaded["shape"], EntityState) and loaded["shape"].watermark is None  # reset, empty

    asyncio.run(go())


def test_any_other_exception_on_one_record_is_dead_lettered_as_error() -> None:
    def boom(f: Mapping[str, object]) -> object:
        if f.get("loan") == 13.0:
            raise RuntimeError("unlucky")  # not one of the errors a derived field may raise to mean null
        return f.get("loan")

    view = FeatureView(name="boom", derived=[Derived("d", boom)], aggregations=[Sum("d"), Count()])

    async def go() -> None:
        store = MemoryStore()
        events = [_ev(1, loan=1.0), _ev(2, loan=13.0), _ev(3, "v", loan=2.0), _ev(4, loan=4.0)]
        result = await FeaturePipeline([view], store).process(_raw(events))
        assert [(d.reason, d.record.offset) for d in result.dead_letters] == [("error", 1)]
        assert "RuntimeError: unlucky" in result.dead_letters[0].error
        assert orjson.loads(result.dead_letters[0].to_json())["stage"] == "features"
        assert [r.features["d_sum_lifetime"] for r in result.records] == [0.0, 0.0, 1.0]

    asyncio.run(go())


# ---------------------------------------------------------------- tiles (issue 13)

TILED = FeatureView(
    name="tiled",
    aggregations=[
        Count(window=sliding(60, resolution=10)),
        SinceLast(window=sliding(60, resolution=10)),
        Count(window=tumbling(20)),
        Count(window=hopping(30, 20)),  # a step that does not divide the size
        Count(),
        SinceLast(),
    ],
    allowed_lateness=50,
    include_fields=False,
)


def at(i: int, ts: int) -> Event:
    return Event(event_id=f"e{i}", entity="u", ts=ts, fields={})


def counts(v: Mapping[str, object]) -> tuple[object, ...]:
    names = ("count_60ms", "since_last_ms_60ms", "count_20ms_tumbling", "count_30ms_every_20ms")
    return tuple(v[k] for k in (*names, "count_lifetime", "since_last_ms"))


def test_tile_ranges_at_their_edges_in_order_and_out_of_order() -> None:
    """Expectations by hand from the design's table: sliding(60, 10) counts tiles [kt - 5, kt]; tumbling(20)
    the tile kt; hopping(30, 20) the tiles from (t - 30) // 20 + 1 to kt; lifetime (1 ms tiles: lateness
    50 / 60) every earlier time. An out-of-order event counts the later events of its own tile (since_last
    then 0) and never those of a later tile."""
    engine = FeatureEngine(TILED)
    s = engine.new_state()
    events = [at(i, ts) for i, ts in enumerate((5, 9, 9, 59, 60, 69, 75, 62, 40))]
    got = [counts(engine.apply(s, e)) for e in events]
    assert got == [
        (0, None, 0, 0, 0, None),  # 5: nothing before it
        (1, 4, 1, 1, 1, 4),  # 9: tile 0 of every window (hopping: tiles -1..0)
        (2, 0, 2, 2, 2, 0),  # 9 again, a tie: both earlier events
        (3, 50, 0, 0, 3, 50),  # 59: sliding tiles 0..5; tumbling and hopping tile 2, empty
        (1, 1, 0, 1, 4, 1),  # 60: sliding tiles 1..6 (5, 9, 9 left); tumbling tile 3; hopping 2..3
        (2, 9, 1, 2, 5, 9),  # 69: same tiles
        (3, 6, 2, 2, 6, 6),  # 75: sliding 2..7; hopping from (75 - 30) // 20 + 1 = 3
        (3, 0, 3, 4, 5, 2),  # 62, out of order: tile 6 holds 69 (later, counts), 75 is tile 7 (not)
        (3, 31, 1, 1, 3, 31),  # 40, out of order: sliding -1..4 (tile 0 is kept: the oldest acceptable
        # time, 75 - 50 = 25, needs tiles from -3); tumbling tile 2 holds 59; lifetime up to 40 only
    ]
    oracle = Oracle(TILED).feed(events)  # written from the design independently: it agrees
    assert [counts(oracle.vectors[e.event_id]) for e in events] == got


SPARSE = FeatureView(
    name="sparse",
    aggregations=[
        Count(window=sliding(600, resolution=20)),
        Mean("x", window=sliding(600, resolution=20)),
        Max("x", window=sliding(600, resolution=20)),
        Var("x", window=hopping(500, 70)),
        SinceLast(window=hopping(500, 70)),
        Sum("x", window=sliding(90, resolution=1)),  # the exact mode
        Count(window=tumbling(250)),
        Mean("x"),
        SinceLast(),
    ],
    allowed_lateness=300,
    include_fields=False,
)


# every window invertible (counts and exact sums only): the cached ranges take leaving tiles out (slide)
INVERTIBLE = FeatureView(
    name="invertible",
    aggregations=[
        Count(window=sliding(600, resolution=20)),
        Mean("x", window=sliding(600, resolution=20)),
        Sum("x", window=hopping(500, 70)),
        Count("x", window=hopping(500, 70)),
        Sum("x", window=sliding(90, resolution=1)),
        Mean("x", window=tumbling(250)),
    ],
    allowed_lateness=300,
    include_fields=False,
)


# every window of min and max only: the cached ranges keep monotonic queues of their tiles (select)
SELECTIVE = FeatureView(
    name="selective",
    aggregations=[
        Max("x", window=sliding(600, resolution=20)),
        Min("x", window=sliding(600, resolution=20)),
        Min("x", window=hopping(500, 70)),
        Max("x", window=tumbling(250)),
        Max("x", window=sliding(90, resolution=1)),
    ],
    allowed_lateness=300,
    include_fields=False,
)


@pytest.mark.parametrize("view", [SPARSE, INVERTIBLE, SELECTIVE], ids=["sparse", "invertible", "selective"])
@hyp_settings(max_examples=120, deadline=None, derandomize=True)
@given(rows=row_lists())
def test_the_cached_ranges_give_the_oracle_vectors_on_any_stream(view: FeatureView, rows: list) -> None:
    """Sparse and dense stretches, gaps longer than a window, out-of-order events into earlier tiles of the
    cached range, late ones: the per-window caches (two stacks; invertible windows: tiles taken out) must
    give what recomputing would."""
    engine = FeatureEngine(view)
    state, events, got, late = run_rows(engine, rows)
    oracle = Oracle(view).feed(events)
    assert late == oracle.late and got.keys() == oracle.vectors.keys()
    for k, v in oracle.vectors.items():
        assert not diff(got[k], v), (k, diff(got[k], v))
    assert not diff(engine.online(state), oracle.online()["u"][1])


def test_a_window_that_could_keep_too_many_tiles_is_refused_at_definition() -> None:
    with pytest.raises(
        DefinitionError, match=r"window 1h \(resolution 100 ms, allowed lateness 60000 ms\) could keep"
    ):
        FeatureView("v", aggregations=[Count(window=sliding("1h", resolution="100ms"))])
    with pytest.raises(DefinitionError, match=r"coarser resolution .* or a shorter allowed_lateness"):
        FeatureView("v", aggregations=[Count(window=tumbling("1s"))], allowed_lateness="3h")
    # at the bound: (extent + lateness) // R + 2 = 10,000 tiles
    FeatureView("v", aggregations=[Count(window=sliding(9_998, resolution=1))], allowed_lateness=0)
    with pytest.raises(DefinitionError, match="10001 tiles"):
        FeatureView("v", aggregations=[Count(window=sliding(9_999, resolution=1))], allowed_lateness=0)


def busy(view: FeatureView, per_hour: int) -> EntityState:
    engine, rng = FeatureEngine(view), random.Random(5)
    state = engine.new_state()
    gap = 3_600_000 // per_hour
    for i in range(per_hour + per_hour // 10):  # an hour and a tenth: the window and the lateness full
        x = round(rng.uniform(0, 1e3), 2)
        engine.apply(
            state, Event(event_id=f"e{i}", entity="u", ts=1_704_067_200_000 + i * gap, fields={"x": x})
        )
    return state


def test_the_state_of_a_busy_entity_does_not_grow_with_its_traffic() -> None:
    """Issue 13: a state grew with the events in the window (234 KB at 10,000 in an hour). Now it holds the
    window's tiles: the same number of tiles at 100 and 10,000 events an hour, each of a bounded size."""
    w = sliding("1h")
    plain = FeatureView(
        "busy",
        aggregations=[
            Count(window=w),
            Min("x", window=w),
            Max("x", window=w),
            Std("x", window=w),
            Last("x", window=w),
            SinceLast(window=w),
        ],
    )
    few, many = busy(plain, 100), busy(plain, 10_000)
    assert len(few.tiles["1h@60000"]) == len(many.tiles["1h@60000"]) == 61
    assert len(many.to_json()) <= 2 * len(few.to_json())
    # exact sums keep a few partials per tile (more with more events, at most 64): still bounded
    sums = FeatureView("sums", aggregations=[Count(window=w), Sum("x", window=w), Mean("x", window=w)])
    few, many = busy(sums, 100), busy(sums, 10_000)
    assert len(few.tiles["1h@60000"]) == len(many.tiles["1h@60000"]) == 61
    assert len(many.to_json()) <= 3 * len(few.to_json())


def test_a_rekeyed_view_recognises_its_last_256_event_ids() -> None:
    engine = FeatureEngine(ZIP)
    state = engine.new_state()
    events = [Event(entity="u", ts=1_000 + i, event_id=f"id-{i}", fields={"zipcode": 3}) for i in range(300)]
    for e in events:
        engine.apply(state, e)
    assert len(state.ids) == 256
    assert [engine.seen(state, e) for e in events] == [False] * 44 + [True] * 256
    assert not engine.seen(state, events[0].model_copy(update={"event_id": "never"}))


@pytest.mark.parametrize("xs", [(5.0, 5, 1), (5, 5.0, 1), (1, 5.0, 5), (1, 5, 5.0)])
def test_a_min_max_range_gives_the_same_value_cached_and_read_back(xs: tuple[float, ...]) -> None:
    """The monotonic queues of a min/max window follow Min/Max's ties (the float, whatever the order): the
    cached range and the same state read back give the same value, 5.0 (the queue gave 5 for 5.0, 5)."""
    view = FeatureView(
        name="m",
        aggregations=[Max("x", window=sliding(600, resolution=20)), Min("x", window=sliding(600, 20))],
        allowed_lateness=0,
        include_fields=False,
    )
    engine, t = FeatureEngine(view), 100 + 40 * len(xs)
    state = engine.new_state()
    for i, x in enumerate(xs):
        engine.apply(state, Event(event_id=f"e{i}", entity="u", ts=100 + 40 * i, fields={"x": x}))
    cached = engine.aggregates_at(state, t)
    fresh = FeatureEngine(view).aggregates_at(EntityState.from_json(state.to_json()), t)
    assert repr(cached) == repr(fresh) == repr({"x_max_600ms": 5.0, "x_min_600ms": 1})
