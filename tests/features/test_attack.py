"""The feature path under a hostile producer (issue 11): every finding of the attack, as a regression test.

Each test failed before its fix: a feature record or dead letter larger than the topic takes (the worker
crashed on it forever), stored states with numbers that wedge the commit, freeze an entity or overflow to
infinity, timestamps that raised Python's own errors, River generators whose rows were all rejected, a
label time past year 9999 that crashed ``rivulet produce``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from features.aggregations import Count, DistinctCount, Last, Mean, Std, Sum, Var
from features.definitions import FeatureView
from features.engine import EntityState, FeatureEngine
from features.errors import AggregateOverflow, InvalidEvent, LateEvent
from features.events import MAX_TS_MS, Event, Label, parse_ts
from features.numeric import INT64_MAX, INT64_MIN
from features.pipeline import DeadLetter, FeaturePipeline, RawRecord
from features.store import MemoryStore
from features.windows import sliding
from streaming.ingest.feed import LabelPolicy, publish
from streaming.ingest.rows import Row, RowMapping, open_source
from tests.support.feature_defs import ALL
from tests.support.oracle import Oracle, diff, stream

pytestmark = pytest.mark.unit

LIMIT = 20_000


def run(
    view: FeatureView, events: list[Event], store: MemoryStore | None = None, **kwargs: Any
) -> tuple[Any, MemoryStore]:
    store = store or MemoryStore()
    pipeline = FeaturePipeline([view], store, **kwargs)
    result = asyncio.run(pipeline.process([RawRecord(e.to_json(), "t", 0, i) for i, e in enumerate(events)]))
    asyncio.run(result.commit(store))
    return result, store


# --------------------------------------------------------------------------- records too large


def test_an_event_whose_feature_record_is_too_large_is_dead_lettered_and_not_applied() -> None:
    """A 700 kB event (under max_event_bytes) made a feature record of 1.4 MB (the event and its vector hold
    the fields twice): the broker refused it and the worker crashed on it at every restart."""
    good = stream(60, entities=3, seed=5, step_ms=1_000)
    big = good[30].model_copy(update={"event_id": "big", "fields": {**good[30].fields, "blob": "x" * LIMIT}})
    events = [*good[:30], big, *good[30:]]
    result, store = run(ALL, events, max_record_bytes=LIMIT)
    (dead,) = result.dead_letters
    assert dead.reason == "too_large" and dead.view == "all"
    assert f"over the limit of {LIMIT}" in dead.error
    assert Event.from_json(dead.record.value).event_id == "big"  # type: ignore[arg-type]
    oracle = Oracle(ALL).feed(good)  # as if it had never been sent
    assert {r.event.event_id for r in result.records} == oracle.vectors.keys()
    for r in result.records:
        assert not diff(r.features, oracle.vectors[r.event.event_id])
        assert len(r.to_json()) + len(r.entity.encode()) <= LIMIT
        assert orjson.loads(r.to_json())["features"] == r.features
    rows = asyncio.run(store.read("all", sorted(oracle.online())))
    for row, (entity, (wm, aggs)) in zip(rows, sorted(oracle.online().items()), strict=True):
        assert row is not None and row.ts == wm and not diff(row.values, aggs), entity


def test_a_dead_letter_always_fits_the_limit_and_keeps_the_bytes_when_they_fit() -> None:
    """A dead letter of a record near max_event_bytes (base64 is a third larger) or with a huge key was
    larger than the dead-letter topic takes: the worker crashed on it forever."""
    value, key = b"\xff" * 30_000, b"k" * 10_000
    d = DeadLetter("invalid", "e" * 100_000, RawRecord(value, "events", 2, 9, key))
    out_key, out = d.encode(LIMIT)
    assert out_key is None and len(out) <= LIMIT  # a 10 kB key is not reused as the dead letter's key
    doc = orjson.loads(out)
    assert doc["value_b64"] is None and doc["value_bytes"] == len(value)
    assert doc["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert base64.b64decode(doc["key_b64"]) == key  # the key still fits once the value is left out
    huge_key = DeadLetter("invalid", "x", RawRecord(value, "events", 2, 9, key * 3))
    out_key, out = huge_key.encode(LIMIT)
    doc = orjson.loads(out)
    assert out_key is None and len(out) <= LIMIT
    assert doc["key_b64"] is None and doc["key_sha256"] == hashlib.sha256(key * 3).hexdigest()
    assert (doc["partition"], doc["offset"], doc["reason"]) == (2, 9, "invalid")
    assert len(doc["error"]) < 2_100
    small = DeadLetter("invalid", "bad", RawRecord(b"v" * 100, "events", 0, 1, b"key"))
    out_key, out = small.encode(LIMIT)
    doc = orjson.loads(out)
    assert out_key == b"key" and base64.b64decode(doc["value_b64"]) == b"v" * 100
    assert base64.b64decode(doc["key_b64"]) == b"key" and "omitted" not in doc


# --------------------------------------------------------------------------- tampered states

U64 = 2**64 - 1


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        target = d
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value

    return mutate


LIFE = "lifetime@2000"  # ALL's lifetime tiles: its lateness (2m) / 60


def _acc(name: str, *path: Any) -> tuple[Any, ...]:
    """The path to ``name``'s accumulator in the first lifetime tile (the only one: one event applied)."""
    (tw,) = [tw for tw in ALL.tiled if tw.key == LIFE]
    return ("t", LIFE, 0, 1 + [a.name for a in tw.aggs].index(name), *path)


TAMPER = {
    # the commit raised TypeError (orjson: integer beyond 64 bits) for the whole batch, at every restart
    "count_u64": _set(_acc("count_lifetime", 0), U64),
    "seq_u64": _set(("q",), U64),
    # every later event of the entity was dead-lettered late, forever
    "watermark_u64": _set(("w",), U64),
    # every later event of the entity was dead-lettered 'error' (orjson), forever
    "tile_u64": _set(("t", LIFE, 0, 0), U64),
    # a tile after the watermark's: the range arithmetic would read it for every later event
    "tile_in_the_future": _set(("t", LIFE, 0, 0), 2**40),
    # a Last at a time past every event: its value frozen
    "last_ts_u64": _set(_acc("zipcode_last_lifetime", 0), U64),
    # a Last from an event the state never applied (a sequence number past its own)
    "last_seq_ahead": _set(_acc("zipcode_last_lifetime", 1), 10**6),
    # every later event of the entity silently skipped as 'redelivered'
    "offset_u64": _set(("p",), {"t": "t", "p": 0, "o": U64}),
    # a sum beyond the magnitudes the overflow rule tracks: the next loan took the mean to infinity (null)
    "sum_beyond_bounds": _set(_acc("loan_mean_lifetime", 1), 1.7976931348623157e308),
    "m2_beyond_bounds": _set(_acc("hvalue_std_lifetime", 2), 1.7e308),
    # a count far beyond the events applied: merging tiles would count past int64 (and n * mean**2 overflow)
    "var_count_huge": _set(_acc("hvalue_std_lifetime", 0), 2**62),
    "settled_count_beyond_seq": _set(("s", "count_lifetime", 0), 7),
    # a Last with a time but no sequence number: comparing positions raised TypeError at that time
    "last_without_seq": _set(_acc("zipcode_last_lifetime", 1), None),
    # a distinct count that is neither hashes nor a sketch
    "distinct_not_a_sketch": _set(_acc("elevel_distinct_lifetime", 0), "bm90IGEgc2tldGNo"),
    "distinct_hashes_not_ints": _set(_acc("elevel_distinct_lifetime", 0), ["a"]),
    # ids on a view keyed by the entity, a format from the future
    "ids_on_a_direct_view": _set(("i",), [1, 2]),
    "format_3": _set(("v",), 3),
}


@pytest.mark.parametrize("name", sorted(TAMPER))
def test_a_tampered_state_is_reset_never_wedging_freezing_or_overflowing(name: str) -> None:
    good = stream(40, entities=1, seed=3, step_ms=1_000)
    engine = FeatureEngine(ALL)
    state = engine.new_state()
    first = good[0].model_copy(update={"ts": good[0].ts - 1_000, "event_id": "before"})
    engine.apply(state, first)
    stored = orjson.loads(state.to_json())
    TAMPER[name](stored)
    store = MemoryStore()
    store.put_raw("all", good[0].entity, orjson.dumps(stored))
    later = [
        e.model_copy(update={"fields": {**e.fields, "loan": 1e300}}) if i == 5 else e
        for i, e in enumerate(good)
    ]
    result, store = run(ALL, later, store)  # on the old code: TypeError from the commit, for some
    (dead,) = result.dead_letters
    assert dead.reason == "corrupt_state" and dead.record.offset == 0
    oracle = Oracle(ALL).feed(later[1:])  # the entity starts again after the record that found it
    assert {r.event.event_id for r in result.records} == oracle.vectors.keys()
    for r in result.records:
        assert not diff(r.features, oracle.vectors[r.event.event_id]), diff(
            r.features, oracle.vectors[r.event.event_id]
        )
    (row,) = asyncio.run(store.read("all", [good[0].entity]))
    wm, aggs = oracle.online()[good[0].entity]
    assert row is not None and row.ts == wm and not diff(row.values, aggs)
    assert all(not isinstance(v, float) or math.isfinite(v) for v in row.values.values())


finite = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1e308, -1e308, 6.7e153, 2**53, True, None, "s"]),
)
MAG = FeatureView(
    name="mag",
    aggregations=[
        Sum("x"),
        Mean("x"),
        Var("x"),
        Std("x", window=sliding("10s")),
        Sum("x", window=sliding("5s")),
        Last("x"),
        Var("y"),
    ],
    allowed_lateness="20s",
    include_fields=False,
)


@hyp_settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), finite, finite),
        min_size=1,
        max_size=40,
    )
)
def test_a_state_the_engine_wrote_is_never_taken_for_corrupt(rows: list[tuple[int, Any, Any]]) -> None:
    """The stricter check of stored states (ranges, magnitudes consistent with the overflow totals) never
    resets an entity that only ever saw events: every state the engine writes passes it, through JSON."""
    engine = FeatureEngine(MAG)
    state = engine.new_state()
    for i, (step, x, y) in enumerate(rows):
        event = Event(event_id=f"e{i}", entity="u", ts=1_000 * step, fields={"x": x, "y": y})
        with contextlib.suppress(AggregateOverflow, LateEvent):
            engine.apply(state, event)
        state = EntityState.from_json(state.to_json())
        assert engine.check_state(state) is None
        for value in engine.online(state).values():
            assert not isinstance(value, float) or math.isfinite(value)


# --------------------------------------------------------------------------- event times


@pytest.mark.parametrize(
    "ts",
    [
        "²",  # str.isdigit() says yes, int() raised ValueError: a pydantic error, not InvalidEvent
        "--5",
        "9" * 5_000,  # int() refuses more than 4300 digits: a ValueError with Python's own message
        "-" + "9" * 25,
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),  # OverflowError from timestamp()
    ],
    ids=["superscript-two", "double-minus", "5000-digits", "25-digits", "year-1-at-plus-5h"],
)
def test_odd_event_times_are_invalid_events_naming_the_field(ts: object) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_ts(ts)
    assert info.value.field == "ts"
    with pytest.raises(InvalidEvent):
        Event(entity="u", ts=ts)
    with pytest.raises(InvalidEvent):
        Label(event_id="e", label=1, ts=ts)


def test_a_huge_time_string_makes_a_short_error() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_ts("y" * 1_000_000)
    assert len(str(info.value)) < 300


def test_times_at_the_range_edges_are_accepted() -> None:
    assert parse_ts("0001-01-01T00:00:00Z") == -62_135_596_800_000
    assert parse_ts(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)) == MAX_TS_MS


# --------------------------------------------------------------------------- rivulet produce and sources


class _Recorder:
    """The part of the Producer that publish() uses, validating labels as the real one does."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.labels: list[Label] = []

    def send(self, event: Event) -> None:
        self.events.append(event)

    def send_label(self, event_id: str, label: Any, ts: int) -> None:
        self.labels.append(Label.parse({"event_id": event_id, "label": label, "ts": ts}))

    def flush(self) -> int:
        return len(self.events)


@pytest.mark.parametrize(
    "policy", [LabelPolicy("topic", delay_events=1), LabelPolicy("topic", delay_s=0.001)]
)
def test_labels_of_events_at_the_last_valid_time_are_sent(policy: LabelPolicy) -> None:
    """An event at 9999-12-31T23:59:59.999 with its label on the topic: the label's time was the event's
    plus the delay, past the range, and rivulet produce crashed with InvalidEvent."""
    rows = [Row(i + 1, {"entity": "u", "ts": MAX_TS_MS, "label": i % 2 == 0, "x": i}) for i in range(3)]
    recorder = _Recorder()
    report = publish(rows, recorder, RowMapping(), labels=policy)  # type: ignore[arg-type]
    assert report.sent == 3 and report.labels_sent == 3 and not report.rejected
    assert [lb.ts for lb in recorder.labels] == [MAX_TS_MS] * 3
    assert [lb.label for lb in recorder.labels] == [True, False, True]


@pytest.mark.parametrize("name", ["hyperplane", "sine", "friedman", "sea"])
def test_river_generators_with_numbered_features_make_events(name: str) -> None:
    """River numbers the features of many generators (0, 1, ...): every row was rejected ('names must be
    non-empty strings, got 0')."""
    rows = [row for _, row in zip(range(5), open_source(f"synth:{name}"), strict=False)]
    mapping = RowMapping(entities=2, start_ts=0)
    events = [mapping.to_event(r) for r in rows]
    assert len(events) == 5 and all(e.fields for e in events)
    assert all(type(k) is str for e in events for k in e.fields)


# --------------------------------------------------------------------------- engine against the oracle

EXACT = FeatureView(
    name="exact",
    aggregations=[
        Sum("x"),
        Mean("x"),
        Var("x"),
        Std("x"),
        Sum("x", window=sliding("5s")),
        Mean("x", window=sliding("5s")),
        Var("x", window=sliding("5s")),
        Std("x", window=sliding("10s")),
    ],
    allowed_lateness="20s",
    include_fields=False,
)


def _vectors(view: FeatureView, events: list[Event]) -> dict[str, dict[str, Any]]:
    result, _ = run(view, events)
    return {r.event.event_id: r.features for r in result.records}


def test_sums_are_exact_whatever_the_order_and_the_window() -> None:
    """[1e16, 1, -1e16] summed to 0.0 (the oracle: 1.0), and the lifetime and windowed sums of the same
    events differed ([2**53, 1, 1]: ...992.0 and ...994.0)."""
    for xs, total in (
        ([1e16, 1.0, -1e16], 1.0),
        ([2**53, 1, 1], 9007199254740994.0),
        ([1e300, 0.5, -1e300], 0.5),
    ):
        events = [Event(event_id=f"e{i}", entity="u", ts=i, fields={"x": x}) for i, x in enumerate(xs)]
        end = Event(event_id="end", entity="u", ts=len(xs), fields={})
        view = FeatureView(name="s", aggregations=[Sum("x"), Mean("x"), Sum("x", window=sliding("1h"))])
        vector = _vectors(view, [*events, end])["end"]
        assert vector["x_sum_lifetime"] == vector["x_sum_1h"] == total
        assert vector["x_mean_lifetime"] == total / len(xs)
        backwards = [e.model_copy(update={"ts": len(xs) - 1 - e.ts}) for e in events]  # out of order
        assert _vectors(view, [*backwards, end])["end"]["x_sum_lifetime"] == total


def test_the_variance_of_equal_huge_values_is_zero() -> None:
    """Three values of -1.78e106 in a window had a variance of 6.2e180 (deviations from a rounded mean)."""
    x = -1.779790980767302e106
    events = [Event(event_id=f"e{i}", entity="u", ts=i, fields={"x": x}) for i in range(4)]
    vector = _vectors(EXACT, events)["e3"]
    assert vector["x_var_5s"] == vector["x_var_lifetime"] == vector["x_std_10s"] == 0.0


huge_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e200, max_value=1e200),
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([1e16, -1e16, 1.0, 2**53, 1e150, -1e150, 5e-324, -0.0]),
)


@hyp_settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 30), huge_values), min_size=2, max_size=12))
def test_the_engine_agrees_with_the_oracle_on_huge_cancelling_values(rows: list[tuple[int, Any]]) -> None:
    """Out-of-order events of any magnitude, cancelling sums, ints beyond 2**53: the engine's vectors are
    the oracle's (sums and means exactly: both are correctly rounded)."""
    events = [
        Event(event_id=f"e{i}", entity="u", ts=1_000 * s, fields={"x": x}) for i, (s, x) in enumerate(rows)
    ]
    vectors = _vectors(EXACT, events)
    oracle = Oracle(EXACT).feed(events)
    assert vectors.keys() == oracle.vectors.keys()
    for event_id, expected in oracle.vectors.items():
        assert not diff(vectors[event_id], expected), diff(vectors[event_id], expected)
        for name in ("x_sum_lifetime", "x_sum_5s", "x_mean_lifetime", "x_mean_5s"):
            assert vectors[event_id][name] == expected[name]


def test_a_producer_cannot_grow_an_entitys_state_without_bound() -> None:
    """A lifetime distinct count keeps every value: distinct large strings grew one entity's state without
    bound (past Redis's 512 MB per value every commit of the batch would fail). Past the pipeline's limit
    the events that would grow it are refused, too_large, and every other entity goes on."""
    view = FeatureView(name="d", aggregations=[Count(), DistinctCount("tag"), Last("tag")])
    limit = 300_000
    good = stream(200, entities=5, seed=8, step_ms=1_000)
    events: list[Event] = []
    for i, e in enumerate(good):
        events.append(e.model_copy(update={"fields": {**e.fields, "tag": f"t{i % 3}"}}))
        if i % 2 == 0:  # the attacker: a new 10 kB string every other event
            events.append(
                Event(event_id=f"big-{i}", entity="attacker", ts=e.ts, fields={"tag": f"{i}" * 5_000})
            )
    result, store = run(view, events, max_state_bytes=limit)
    refused = {d.record.offset for d in result.dead_letters}
    assert refused and all(d.reason == "too_large" and "state" in d.error for d in result.dead_letters)
    assert all(Event.from_json(d.record.value).entity == "attacker" for d in result.dead_letters)  # type: ignore[arg-type]
    for entity, raw in store._states.items():
        assert len(raw) <= limit, entity
    accepted = [e for i, e in enumerate(events) if i not in refused]
    oracle = Oracle(view).feed(accepted)
    assert {r.event.event_id for r in result.records} == oracle.vectors.keys()
    for r in result.records:
        assert not diff(r.features, oracle.vectors[r.event.event_id])
    assert oracle.online()["attacker"][1]["tag_distinct_lifetime"] >= 10  # accepted up to the limit


def test_the_states_kept_between_batches_stay_within_a_byte_budget() -> None:
    """Cached states were bounded by number only (100,000 in the worker), each up to the state limit: a few
    large entities could fill the worker's memory. With a byte budget the least recent go first, and the
    vectors are the same as without a cache."""
    view = FeatureView(name="d", aggregations=[Count(), DistinctCount("tag"), Last("tag")])
    events = []
    for i, e in enumerate(stream(300, entities=10, seed=9, step_ms=1_000)):  # tiles of a minute's lateness
        events.append(e.model_copy(update={"fields": {"tag": f"{e.entity}-{i}" * 1_000}}))
    raws = [RawRecord(e.to_json(), "t", 0, i) for i, e in enumerate(events)]
    budget = 150_000
    store = MemoryStore()
    pipeline = FeaturePipeline([view], store, cache_entities=1_000, cache_bytes=budget)
    got: dict[str, Any] = {}
    for i in range(0, len(raws), 25):
        result = asyncio.run(pipeline.process(raws[i : i + 25]))
        asyncio.run(result.commit(store))
        got.update({r.event.event_id: r.features for r in result.records})
        cached = sum(len(s.to_json()) for s in pipeline._cache.values())
        assert cached <= budget and pipeline._cached_bytes == cached
    assert 0 < len(pipeline._cache) < 10  # some entities were evicted, the most recent kept
    assert sum(len(raw) for raw in store._states.values()) > budget
    oracle = Oracle(view).feed(events)
    assert got.keys() == oracle.vectors.keys()
    assert all(not diff(got[k], v) for k, v in oracle.vectors.items())


def test_a_jsonl_file_with_a_byte_order_mark_loses_no_row(tmp_path: Any) -> None:
    """Editors on Windows start a file with a byte-order mark: its first row was rejected as not JSON."""
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"entity": "a", "ts": 1, "x": 1}\n{"entity": "b", "ts": 2, "x": 2}\n')
    rows = list(open_source(str(path)))
    assert [r.error for r in rows] == [None, None]
    assert [RowMapping().to_event(r).entity for r in rows] == ["a", "b"]


class _Acked:
    is_done = True
    exception = None

    def failed(self) -> bool:
        return False

    def get(self, timeout: float | None = None) -> None:
        return None


class _FakeKafka:
    """kafka-python's send/flush/close, recording what would be sent, each acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.sent.append((topic, value, key))
        return _Acked()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def test_the_sdk_sends_numpy_and_other_numbers_as_plain_json() -> None:
    """A numpy.float64 (a float subclass) passed validation, then Event.to_json raised TypeError ('Type is
    not JSON serializable'): Producer.send crashed on the values of a NumPy or pandas row."""
    import numpy as np

    from streaming.ingest.producer import Producer
    from streaming.settings import Settings

    client = _FakeKafka()
    producer = Producer(Settings(), client=client)  # type: ignore[arg-type]
    producer.send(
        {
            "entity": np.int64(42),
            "ts": np.int64(1_700_000_000_000),
            "fields": {"f64": np.float64(1.5), "f32": np.float32(0.25), "i64": np.int64(-3)},
            "label": np.float64(0.5),
        }
    )
    producer.send_label("e1", np.float64(2.0), ts=np.int64(5))  # type: ignore[arg-type]
    producer.flush()
    (_, event_value, key), (_, label_value, _) = client.sent
    event = Event.from_json(event_value)
    assert (event.entity, event.ts, event.label) == ("42", 1_700_000_000_000, 0.5) and key == b"42"
    assert event.fields == {"f64": 1.5, "f32": 0.25, "i64": -3}
    assert [type(v) for v in event.fields.values()] == [float, float, int]
    assert orjson.loads(label_value) == {"event_id": "e1", "label": 2.0, "ts": 5}
    with pytest.raises(InvalidEvent, match=r"fields\.x"):
        producer.send({"entity": "u", "ts": 1, "fields": {"x": np.float64("inf")}})


def test_an_event_far_ahead_of_its_record_time_is_refused_and_does_not_freeze_its_entity() -> None:
    """One event stamped 9999-12-31 moved its entity's watermark there: every later event of the entity was
    dead-lettered late, forever."""
    good = stream(120, entities=3, seed=12, step_ms=1_000)
    now = good[-1].ts
    far = good[40].model_copy(update={"event_id": "far", "ts": MAX_TS_MS})
    near = good[41].model_copy(update={"event_id": "near", "ts": now + 1_000})  # a second ahead: fine
    events = [*good[:40], far, near, *good[40:]]
    raws = [RawRecord(e.to_json(), "t", 0, i, timestamp_ms=now) for i, e in enumerate(events)]
    store = MemoryStore()
    pipeline = FeaturePipeline([ALL], store, max_ahead_ms=86_400_000)
    result = asyncio.run(pipeline.process(raws))
    (dead,) = result.dead_letters
    assert dead.reason == "future" and dead.record.offset == 40 and dead.view is None
    assert "ahead of its record's timestamp" in dead.error
    oracle = Oracle(ALL).feed([e for e in events if e is not far])
    assert not oracle.late
    assert {r.event.event_id for r in result.records} == oracle.vectors.keys()
    assert all(not diff(r.features, oracle.vectors[r.event.event_id]) for r in result.records)
    # the old behaviour, without a bound: every later event of far's entity is late
    frozen = Oracle(ALL).feed(events)
    assert frozen.late and all(e.entity == far.entity for e in events if e.event_id in frozen.late)
    # without a record time (in-process runs) or without a bound, the event is taken as before
    unbounded = asyncio.run(FeaturePipeline([ALL], MemoryStore()).process(raws))
    assert "far" in {r.event.event_id for r in unbounded.records}
