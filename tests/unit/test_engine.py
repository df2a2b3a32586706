"""The feature engine against the brute-force oracle, on in-order, out-of-order and late events."""

from __future__ import annotations

import asyncio

import pytest

from features.aggregations import Count
from features.definitions import FeatureView
from features.engine import EntityState, FeatureEngine
from features.errors import DefinitionError, LateEvent
from features.events import Event
from features.examples import customer, site
from features.pipeline import FeaturePipeline, RawRecord
from features.store import MemoryStore
from features.windows import hopping, sliding
from tests.feature_defs import ALL, ZIP
from tests.oracle import Oracle, diff, stream


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


def test_definitions_are_checked() -> None:
    with pytest.raises(DefinitionError, match="defined twice"):
        FeatureView("v", aggregations=[Count(), Count()])
    with pytest.raises(DefinitionError, match="step <= size"):
        hopping("1m", "2m")
    with pytest.raises(DefinitionError, match="expected milliseconds"):
        sliding("soon")
    assert customer.fingerprint() != site.fingerprint()
    assert customer.fingerprint() == customer.fingerprint()


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
