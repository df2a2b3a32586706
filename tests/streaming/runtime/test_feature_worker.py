"""The Faust feature worker on real Kafka and Redis, against the brute-force oracle.

Covers: vectors on the features topic and in Redis equal a recomputation from the raw events (with
out-of-order and late events, and a view re-keyed through Faust's repartitioning); poison records on the
dead-letter topic with reason and position; the in-process path giving identical vectors; a worker killed
with SIGKILL mid-stream and restarted; two workers sharing four partitions.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from features.engine import FeatureEngine
from features.events import Event
from features.pipeline import FeaturePipeline, RawRecord
from features.redis_store import state_key
from features.store import MemoryStore
from streaming.clients import kafka_producer, redis_client
from streaming.ingest.producer import Producer
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings
from tests.support.feature_defs import ALL, ZIP
from tests.support.kafka_read import read_all
from tests.support.oracle import Oracle, diff, stream
from tests.support.workers import (
    KILL_DRILL_ENV,
    Worker,
    group_members,
    read_redis,
    run_worker,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

POISON = [
    b"not json at all",
    b'\xff\xfe{"entity": "x"}',
    b'{"ts": 1704067200000, "fields": {"a": 1}}',
    b'{"entity": "x", "ts": "soon", "fields": {"a": 1}}',
    b'{"entity": "x", "ts": 1704067200000, "fields": {"a": NaN}}',
]


@pytest.fixture
def topics(settings: Settings, kafka_up: str, redis_client: Any) -> Any:
    """Rivulet's topics under the test prefix (4 partitions), and cleanup of Faust's repartition topics
    (RIVULET_TEST_KEEP_TOPICS=1 keeps them, printing the prefix: a failed drill's history to read)."""
    s = settings.model_copy(update={"partitions": 4})
    with TopicAdmin(s) as admin:
        admin.create()
        yield s
        if os.environ.get("RIVULET_TEST_KEEP_TOPICS") == "1":
            print("topics kept under prefix", s.topic_prefix)
        else:
            admin.delete([t for t in admin.list_topics(all_topics=True) if s.topic_prefix in t])


def events_for(seed: int, n: int = 3_000) -> list[Event]:
    return stream(n, entities=150, seed=seed, late_every=97, shuffle_every=11, step_ms=300, grain_ms=1_000)


def check_direct_view(settings: Settings, events: list[Event]) -> dict[str, dict[str, Any]]:
    """Features topic, dead letters and Redis for view ALL equal the oracle; returns the records by id."""
    oracle = Oracle(ALL).feed(events)
    records = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap, settings.topics.features)]
    seen: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec["view"] != "all":
            continue
        event_id = rec["event"]["event_id"]
        expected = oracle.vectors[event_id]
        assert not diff(rec["features"], expected), (event_id, diff(rec["features"], expected))
        assert rec["entity"] == oracle.entity_of[event_id]
        first = seen.setdefault(event_id, rec)  # a re-emitted record (after a crash) is identical
        assert first == rec, (
            event_id,
            {
                k: (v, rec["features"].get(k))
                for k, v in first["features"].items()
                if v != rec["features"].get(k)
            },
        )
    assert seen.keys() == oracle.vectors.keys()
    late = set()
    for r in read_all(settings.kafka_bootstrap, settings.topics.dead_letters):
        dl = orjson.loads(r.value)
        if dl["reason"] == "late" and dl.get("view") == "all":
            late.add(Event.from_json(base64.b64decode(dl["value_b64"])).event_id)
    assert late == oracle.late and late
    online = oracle.online()
    entities = sorted(online)
    for entity, row in zip(entities, read_redis(settings, "all", entities), strict=True):
        assert row is not None, entity
        wm, aggs = online[entity]
        assert row.ts == wm and not diff(row.values, aggs), (entity, diff(row.values, aggs))
    return seen


def check_rekeyed_view(settings: Settings, events: list[Event]) -> None:
    """View ZIP, re-keyed by zipcode: its processing order per zipcode is the order of its records."""
    by_id = {e.event_id: e for e in events}
    order: dict[str, list[Event]] = defaultdict(list)
    got: dict[str, dict[str, Any]] = {}
    for r in read_all(settings.kafka_bootstrap, settings.topics.features):
        rec = orjson.loads(r.value)
        if rec["view"] == "zip" and rec["event"]["event_id"] not in got:
            got[rec["event"]["event_id"]] = rec
            order[rec["entity"]].append(by_id[rec["event"]["event_id"]])
    assert got.keys() == by_id.keys()  # every event, re-keyed
    for entity, evs in order.items():
        oracle = Oracle(ZIP).feed(evs)
        for e in evs:
            assert not diff(got[e.event_id]["features"], oracle.vectors[e.event_id]), entity
        (row,) = read_redis(settings, "zip", [entity])
        wm, aggs = oracle.online()[entity]
        assert row is not None and row.ts == wm and not diff(row.values, aggs)


def test_worker_matches_the_oracle_and_dead_letters_poison(topics: Settings, tmp_path: Path) -> None:
    settings = topics
    events = events_for(seed=11)
    positions = run_worker(settings, events, tmp_path / "worker.log", raw=[(b"x", p) for p in POISON])

    records = check_direct_view(settings, events)
    check_rekeyed_view(settings, events)

    invalid = [
        orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap, settings.topics.dead_letters)
    ]
    invalid = [d for d in invalid if d["reason"] == "invalid"]
    assert sorted((d["partition"], d["offset"]) for d in invalid) == sorted(
        (m.partition, m.offset) for m in positions
    )
    assert sorted(base64.b64decode(d["value_b64"]) for d in invalid) == sorted(POISON)
    errors = " | ".join(d["error"] for d in invalid)
    for fragment in ("not valid JSON", "UTF-8", "entity: is required", "ts: 'soon'"):
        assert fragment in errors
    assert all(d["topic"] == settings.topics.events for d in invalid)

    # the count is exposed

    stats = redis_client(settings).hgetall(f"{settings.redis_prefix}stats:features")
    assert int(stats[b"dead_letters:invalid"]) == len(POISON)

    # the in-process path (engine + memory store, no Kafka) gives identical vectors
    async def in_process() -> list[Any]:
        pipeline = FeaturePipeline([ALL], MemoryStore())
        result = await pipeline.process([RawRecord(e.to_json(), "mem", 0, i) for i, e in enumerate(events)])
        return result.records

    for r in asyncio.run(in_process()):
        assert records[r.event.event_id]["features"] == r.features  # exactly equal, not just close


def test_worker_killed_mid_stream_recovers_without_double_counting(topics: Settings, tmp_path: Path) -> None:
    settings = topics
    events = events_for(seed=12, n=6_000)
    with Producer(settings) as producer:
        producer.send_many(events)

    client = redis_client(settings)
    stats = f"{settings.redis_prefix}stats:features"
    for crash in range(2):
        worker = Worker(
            settings, "tests.support.feature_defs", tmp_path / f"worker-{crash}.log", **KILL_DRILL_ENV
        )
        target = 1_500 * (crash + 1)
        import time

        deadline = time.monotonic() + 120
        while int(client.hget(stats, "records:all") or 0) < target:
            assert worker.alive(), (tmp_path / f"worker-{crash}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "worker made no progress"
            time.sleep(0.05)
        worker.kill()  # SIGKILL mid-stream
    # No restart is needed, so none is allowed: wait_caught_up fails if the worker exits. Each new worker
    # takes over partitions that a SIGKILLed member still holds until its session lapses (6 s here), in the
    # rebalance that follows; worker-1 above went through the same takeover under alive() checks. An
    # agent crash would end the process (mode.CrashingSupervisor) for supervisord to restart, and a restart
    # counts nothing twice (the point of this test), but a crash here is a bug that restarting would hide.
    worker = Worker(settings, "tests.support.feature_defs", tmp_path / "worker-final.log", **KILL_DRILL_ENV)
    try:
        wait_caught_up(settings, [worker])
    finally:
        worker.stop()
    check_direct_view(settings, events)
    check_rekeyed_view(settings, events)
    print("stats after crashes:", client.hgetall(stats))


def test_two_workers_split_four_partitions(topics: Settings, tmp_path: Path) -> None:
    settings = topics
    events = events_for(seed=13)
    with Producer(settings) as producer:
        producer.send_many(events)
    workers = [Worker(settings, "tests.support.feature_defs", tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        wait_caught_up(settings, workers)
        assert group_members(settings) == 2
    finally:
        for w in workers:
            w.stop()
    check_direct_view(settings, events)
    check_rekeyed_view(settings, events)


def test_overflow_corrupt_state_and_out_of_range_numbers_are_dead_lettered_and_nobody_is_blocked(
    topics: Settings, tmp_path: Path
) -> None:
    """Issue 11: two loans of 1e308 pushed a lifetime mean to infinity, stored as null; the next batch with
    that entity raised in the aggregation and was retried forever, blocking every other entity. Through the
    real worker: the second 1e308 is dead-lettered 'overflow', a state stored corrupt is reset
    ('corrupt_state'), an integer beyond int64 is 'invalid', and every entity gets exactly its oracle
    vector."""
    settings = topics
    good = stream(400, entities=20, seed=21, step_ms=300, grain_ms=1_000)
    template = dict(good[0].fields)
    t0 = good[0].ts
    whale = [
        Event(event_id=f"whale-{i}", entity="whale", ts=t0 + 1_000 * i, fields={**template, "loan": loan})
        for i, loan in enumerate([1e308, 1e308, 5.0, 1e307])
    ]
    events = good[:50] + whale[:2] + good[50:200] + whale[2:] + good[200:]
    corrupt_entity = "c3"
    first_c3 = next(e for e in events if e.entity == corrupt_entity)
    # a state stored before this version could hold a null where a number must be (orjson's inf)

    client = redis_client(settings)
    engine = FeatureEngine(ALL)
    earlier = engine.new_state()
    engine.apply(earlier, good[0].model_copy(update={"entity": corrupt_entity, "ts": t0 - 600_000}))
    stored = orjson.loads(earlier.to_json())
    stored["s"]["loan_mean_lifetime"][1] = None  # a settled mean's partial (format 2 since issue 13)
    client.hset(state_key(settings.redis_prefix, "all", corrupt_entity), mapping={"s": orjson.dumps(stored)})
    beyond_int64 = (
        b'{"event_id": "big", "entity": "c1", "ts": 1704067200000, "fields": {"n": 18446744073709551615}}'
    )
    run_worker(settings, events, tmp_path / "worker.log", raw=[(b"c1", beyond_int64)])

    # the oracle over the accepted events: the corrupt entity starts again after its first record
    oracle = Oracle(ALL).feed([e for e in events if e is not first_c3])
    assert oracle.overflow == {"whale-1"}
    got: dict[str, dict[str, Any]] = {}
    for r in read_all(settings.kafka_bootstrap, settings.topics.features):
        rec = orjson.loads(r.value)
        if rec["view"] == "all":
            got.setdefault(rec["event"]["event_id"], rec)
    assert got.keys() == oracle.vectors.keys()
    for event_id, rec in got.items():
        assert not diff(rec["features"], oracle.vectors[event_id]), (
            event_id,
            diff(rec["features"], oracle.vectors[event_id]),
        )

    source = {
        (r.partition, r.offset): r.value for r in read_all(settings.kafka_bootstrap, settings.topics.events)
    }
    dead = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap, settings.topics.dead_letters)]
    by_reason: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in dead:
        assert d["stage"] == "features" and d["topic"] == settings.topics.events
        assert source[(d["partition"], d["offset"])] == base64.b64decode(d["value_b64"])  # bytes and position
        by_reason[d["reason"]].append(d)
    assert sorted(by_reason) == ["corrupt_state", "invalid", "overflow"]
    (overflow,) = by_reason["overflow"]
    assert Event.from_json(base64.b64decode(overflow["value_b64"])).event_id == "whale-1"
    assert "overflow: field 'loan' of entity 'whale'" in overflow["error"] and overflow["view"] == "all"
    (corrupt,) = by_reason["corrupt_state"]
    assert Event.from_json(base64.b64decode(corrupt["value_b64"])) == first_c3
    assert "settled.loan_mean_lifetime" in corrupt["error"]
    (invalid,) = by_reason["invalid"]
    assert base64.b64decode(invalid["value_b64"]) == beyond_int64
    assert "fields.n: integer outside the int64 range" in invalid["error"]

    online = oracle.online()
    entities = sorted(online)
    assert "whale" in entities and corrupt_entity in entities
    for entity, row in zip(entities, read_redis(settings, "all", entities), strict=True):
        assert row is not None, entity
        wm, aggs = online[entity]
        assert row.ts == wm and not diff(row.values, aggs), (entity, diff(row.values, aggs))
    assert online["whale"][1]["loan_mean_lifetime"] == pytest.approx((1e308 + 5.0 + 1e307) / 3)

    stats = client.hgetall(f"{settings.redis_prefix}stats:features")
    assert int(stats[b"dead_letters:overflow"]) == 1
    assert int(stats[b"dead_letters:corrupt_state"]) == 1
    assert int(stats[b"dead_letters:invalid"]) == 1
    assert int(stats[b"state_resets"]) == 1


def test_a_forged_source_header_cannot_make_a_real_event_a_duplicate(
    topics: Settings, tmp_path: Path
) -> None:
    """The re-keyed view recognises a crash's duplicates by the source position the worker writes on each
    repartition record (header ``rivulet-src``). A producer's own ``rivulet-src`` header, claiming offset
    10**12 of the very partition its events are in, is replaced: every later event of that zipcode still
    counts, and every repartition record carries the position of its own event on the events topic."""
    settings = topics
    events = [
        Event(event_id=f"f{i}", entity="forger", ts=1_704_067_200_000 + i * 1_000, fields={"zipcode": "z-f"})
        for i in range(6)
    ]
    forged = orjson.dumps([settings.topics.events, 0, 10**12])
    producer = kafka_producer(settings)
    try:
        sent = []
        for i, e in enumerate(events):
            # the first and fourth claim the furthest position; the others carry no header or another one
            headers = (
                [("rivulet-src", forged), ("other", b"kept")]
                if i % 3 == 0
                else [("other", b"kept")] * (i % 2)
            )
            sent.append(
                producer.send(
                    settings.topics.events, e.to_json(), key=b"forger", partition=0, headers=headers
                )
            )
        positions = [f.get(timeout=30) for f in sent]
    finally:
        producer.close()
    worker = Worker(settings, "tests.support.feature_defs", tmp_path / "worker.log")
    try:
        wait_caught_up(settings, [worker])
    finally:
        worker.stop()
    zips = [
        orjson.loads(r.value)["event"]["event_id"]
        for r in read_all(settings.kafka_bootstrap, settings.topics.features)
        if orjson.loads(r.value)["view"] == "zip"
    ]
    assert sorted(set(zips)) == [e.event_id for e in events]
    (row,) = read_redis(settings, "zip", ["z-f"])
    wm, aggs = Oracle(ZIP).feed(events).online()["z-f"]
    assert (
        row is not None and row.ts == wm and not diff(row.values, aggs) and row.values["count_lifetime"] == 6
    )
    stored = redis_client(settings).hget(state_key(settings.redis_prefix, "zip", "z-f"), "s")
    assert orjson.loads(stored)["r"] == {f"0:{settings.topics.events}": positions[-1].offset}
    # the repartition records: exactly one rivulet-src each, its own event's position; other headers kept
    by_position = {
        (r.topic, r.partition, r.offset): r.value
        for r in read_all(settings.kafka_bootstrap, settings.topics.events)
    }
    with TopicAdmin(settings) as admin:
        (repartition,) = [
            t for t in admin.list_topics(all_topics=True) if settings.topic_prefix in t and "by-zip" in t
        ]
    records = read_all(settings.kafka_bootstrap, repartition)
    assert len(records) == len(events)
    for r in records:
        src = [v for k, v in r.headers if k == "rivulet-src"]
        assert len(src) == 1, r.headers
        topic, partition, offset = orjson.loads(src[0])
        assert by_position[(topic, partition, offset)] == r.value and offset < 10**12
        event_index = int(orjson.loads(r.value)["event_id"][1:])
        assert [k for k, _ in r.headers].count("other") == (1 if event_index % 3 == 0 else event_index % 2)
