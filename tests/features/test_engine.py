"""The feature engine against the brute-force oracle, on in-order, out-of-order and late events."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Mapping

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from features.aggregations import Count, Max, Mean, Std, Sum, Var
from features.definitions import Derived, Expression, FeatureView
from features.engine import EntityState, FeatureEngine
from features.errors import AggregateOverflow, DefinitionError, LateEvent
from features.events import Event
from features.examples import customer, site
from features.pipeline import FeaturePipeline, RawRecord
from features.store import MemoryStore
from features.windows import hopping, sliding
from tests.support.feature_defs import ALL, ZIP
from tests.support.oracle import Oracle, diff, stream

pytestmark = pytest.mark.unit


def run_engine(view: FeatureView, events: list[Event]) -> tuple[dict, set, dict]:
    engine = FeatureEngine(view)
    states: dict[str, EntityState] = {}
    vectors, late = {}, set()
    for e in events:
        key = engine.key(e)
        if key is None:
            continue
        state = states.setdefault(key, engine.new_state())
        # round-trip the state through JSON now and then, as the worker does through Redis
        if len(vectors) % 7 == 0:
            state = states[key] = EntityState.from_json(state.to_json())
        try:
            vectors[e.event_id] = engine.apply(state, e)
        except LateEvent:
            late.add(e.event_id)
    online = {k: (s.watermark, engine.online(s)) for k, s in states.items()}
    return vectors, late, online


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
