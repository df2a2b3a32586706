"""The real feature worker on real Kafka and Redis under a hostile producer and a tampered Redis (issue 11).

One worker run takes every attack mixed into a known good stream: records near the size limit (the worker
crashed at every restart on the feature record or the dead letter of one, before), huge keys, null
values, JSON that is not an object, a stored count past int64 (it wedged every commit), a state of the
wrong Redis type, a vector key holding a string. The worker must stay up, dead-letter each bad record with
its reason, position and (when they fit) bytes, and give every good event exactly its oracle vector.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from features.engine import EntityState, FeatureEngine
from features.events import Event
from features.pipeline import FeaturePipeline, RawRecord
from features.redis_store import state_key, vector_key
from features.store import FeatureRow, StateUpdate
from streaming.clients import feature_store, kafka_producer, redis_client
from streaming.ingest.producer import Producer
from streaming.settings import Settings
from tests.features.test_redis_cluster import CLUSTER_URL, cluster  # noqa: F401 (fixture)
from tests.streaming.runtime.test_feature_worker import read_redis, topics  # noqa: F401 (fixture)
from tests.support.feature_defs import ALL
from tests.support.kafka_read import read_all
from tests.support.oracle import Oracle, diff, stream
from tests.support.workers import Worker, wait_caught_up

pytestmark = pytest.mark.integration


def test_hostile_records_and_tampered_redis_never_stop_the_worker_or_change_good_vectors(
    topics: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = topics
    client = redis_client(settings)
    good = stream(300, entities=12, seed=31, step_ms=300, grain_ms=1_000)
    t0 = good[0].ts

    # tampered Redis: a count past int64 (the commit raised TypeError for the whole batch, forever), a list
    # where the state hash should be, a string where the vector hash should be
    engine = FeatureEngine(ALL)
    earlier = engine.new_state()
    engine.apply(earlier, good[0].model_copy(update={"entity": "c2", "ts": t0 - 60_000, "event_id": "old"}))
    stored = orjson.loads(earlier.to_json())
    stored["s"]["count_lifetime"][0] = 2**64 - 1  # a settled count (format 2 since issue 13)
    client.hset(state_key(settings.redis_prefix, "all", "c2"), mapping={"s": orjson.dumps(stored)})
    client.rpush(state_key(settings.redis_prefix, "all", "c3"), b"not a hash")
    client.set(vector_key(settings.redis_prefix, "all", "c4"), b"\xff garbage")

    # accepted by the SDK (under max_event_bytes), but its feature record holds the fields twice: 1.4 MB
    big = good[100].model_copy(
        update={"event_id": "big", "fields": {**good[100].fields, "blob": "x" * 700_000}, "ts": good[100].ts}
    )
    with Producer(settings) as producer:
        producer.send_many([*good[:150], big])
    raw = kafka_producer(settings, max_request_size=2_000_000)
    hostile = [
        (b"c5", b'{"entity": "c5", "ts": "' + b"9" * 900_000 + b'"}'),  # its dead letter: 1.2 MB
        (b"k" * 100_000, b"not json"),  # a 100 kB key
        (b"c6", None),  # a tombstone
        (b"\xff\xfe", b"[1, 2]"),
        (None, b'"just a string"'),
        (None, b"null"),
        (None, b"{" * 5_000),  # nesting beyond orjson's depth limit
    ]
    sent = {}
    for key, value in hostile:
        meta = raw.send(settings.topics.events, key=key, value=value).get(timeout=30)
        sent[(meta.partition, meta.offset)] = (key, value)
    raw.close()
    with Producer(settings) as producer:
        producer.send_many(good[150:])

    worker = Worker(settings, "tests.support.feature_defs", tmp_path / "worker.log")
    try:
        wait_caught_up(settings, [worker], timeout_s=150)  # asserts the worker never exited
    finally:
        worker.stop()

    # every good event has its oracle vector; the reset entities start again after their first record
    first = {e: next(g for g in good if g.entity == e) for e in ("c2", "c3")}
    accepted = [e for e in good if e not in first.values()]
    oracle = Oracle(ALL).feed(accepted)
    got: dict[str, dict[str, Any]] = {}
    zip_ids = set()
    for r in read_all(settings.kafka_bootstrap, settings.topics.features):
        rec = orjson.loads(r.value)
        if rec["view"] == "all":
            got.setdefault(rec["event"]["event_id"], rec)
        else:
            zip_ids.add(rec["event"]["event_id"])
    assert got.keys() == oracle.vectors.keys()
    for event_id, rec in got.items():
        assert not diff(rec["features"], oracle.vectors[event_id]), diff(
            rec["features"], oracle.vectors[event_id]
        )
    assert "big" in zip_ids  # the re-keyed view without the event's fields takes it: its record is small
    online = oracle.online()
    entities = sorted(online)
    for entity, row in zip(entities, read_redis(settings, "all", entities), strict=True):
        wm, aggs = online[entity]
        assert row is not None and row.ts == wm and not diff(row.values, aggs), entity

    dead: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in read_all(settings.kafka_bootstrap, settings.topics.dead_letters):
        assert len(r.value) + len(r.key or b"") <= settings.max_event_bytes
        d = orjson.loads(r.value)
        assert d["stage"] == "features" and d["topic"] == settings.topics.events
        dead[d["reason"]].append({**d, "kafka_key": r.key})
    assert sorted(dead) == ["corrupt_state", "invalid", "too_large"]
    (too_large,) = dead["too_large"]
    assert Event.from_json(base64.b64decode(too_large["value_b64"])).event_id == "big"
    assert too_large["view"] == "all" and "over the limit" in too_large["error"]
    assert sorted(
        Event.from_json(base64.b64decode(d["value_b64"])).event_id for d in dead["corrupt_state"]
    ) == sorted(e.event_id for e in first.values())
    invalid = {(d["partition"], d["offset"]): d for d in dead["invalid"]}
    assert invalid.keys() == sent.keys()
    for position, (key, value) in sent.items():
        d = invalid[position]
        if value is not None and len(value) > 500_000:  # too large to carry: its size and hash
            assert d["value_b64"] is None and d["value_bytes"] == len(value)
            assert d["value_sha256"] == hashlib.sha256(value).hexdigest()
        else:
            assert d["value_b64"] == (base64.b64encode(value).decode() if value is not None else None)
        if key is not None:
            assert base64.b64decode(d["key_b64"]) == key
        assert d["kafka_key"] == (key if key is not None and len(key) <= 4_096 else None)

    stats = client.hgetall(f"{settings.redis_prefix}stats:features")
    assert int(stats[b"dead_letters:invalid"]) == len(hostile)
    assert int(stats[b"dead_letters:too_large"]) == 1
    assert int(stats[b"state_resets"]) == 2
    assert client.type(vector_key(settings.redis_prefix, "all", "c4")) == b"hash"


@pytest.mark.parametrize("on_cluster", [False, True], ids=["redis", "cluster"])
def test_a_vector_of_another_shape_is_not_served_and_a_commit_replaces_it(
    settings: Settings,
    redis_client: redis.Redis,
    on_cluster: bool,
    request: pytest.FixtureRequest,
) -> None:
    """Valid JSON of another shape under a vector (an object, an integer beyond int64) was served as a
    feature value; a ``_ts`` beyond every event time kept the vector from ever changing again."""
    client = request.getfixturevalue("cluster") if on_cluster else redis_client
    on = (
        settings.model_copy(update={"redis_url": CLUSTER_URL, "redis_cluster": True})
        if on_cluster
        else settings
    )
    p = settings.redis_prefix
    client.hset(vector_key(p, "v", "shape"), mapping={"_ts": "5", "x": b'{"a": [1, 2]}'})
    client.hset(vector_key(p, "v", "u64"), mapping={"_ts": "5", "x": b"18446744073709551615"})
    client.hset(vector_key(p, "v", "future"), mapping={"_ts": "99999999999999999999", "x": b"1"})
    client.hset(vector_key(p, "v", "fine"), mapping={"_ts": "5", "x": b"null", "y": b'"s"', "z": b"-0.0"})
    entities = ["shape", "u64", "future", "fine"]

    async def go() -> tuple[list[FeatureRow | None], list[FeatureRow | None], list[FeatureRow | None]]:
        store = feature_store(on)  # as a process with these settings builds it
        try:
            before = await store.read("v", entities)
            one = await store.read("v", ["future"])  # the single-entity path
            state = EntityState(watermark=9, position={"t": "events", "p": 0, "o": 1})
            await store.commit(
                "v", [StateUpdate(e, state, FeatureRow("v", e, {"x": 2}, 9)) for e in entities]
            )
            return before, one, await store.read("v", entities)
        finally:
            await store.close()

    before, one, after = asyncio.run(go())
    assert before[:3] == [None, None, None] and one == [None]
    assert before[3] == FeatureRow("v", "fine", {"x": None, "y": "s", "z": -0.0}, 5)
    assert [(r.values, r.ts) if r else None for r in after] == [({"x": 2}, 9)] * 4


def test_a_huge_value_of_the_field_a_view_is_keyed_by_never_stops_the_worker(
    topics: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    """View ``zip`` is re-keyed by ``zipcode`` through a Faust repartition topic, keyed by the field's value:
    a 600 kB zipcode made a repartition record of 1.2 MB (key and event), which the broker refused, and the
    worker crashed on it at every restart. Its key is now bounded, and a key value longer than an entity
    may be is an invalid record for that view."""
    settings = topics
    good = stream(200, entities=8, seed=41, step_ms=300, grain_ms=1_000)
    huge = good[60].model_copy(
        update={"event_id": "huge-zip", "fields": {**good[60].fields, "zipcode": "z" * 600_000}}
    )
    with Producer(settings) as producer:
        producer.send_many([*good[:100], huge, *good[100:]])
    worker = Worker(settings, "tests.support.feature_defs", tmp_path / "worker.log")
    try:
        wait_caught_up(settings, [worker], timeout_s=150)  # asserts the worker never exited
    finally:
        worker.stop()
    zip_records: dict[str, dict[str, Any]] = {}
    all_ids = set()
    for r in read_all(settings.kafka_bootstrap, settings.topics.features):
        rec = orjson.loads(r.value)
        if rec["view"] == "zip":
            zip_records.setdefault(rec["event"]["event_id"], rec)
        else:
            all_ids.add(rec["event"]["event_id"])
    assert zip_records.keys() == {e.event_id for e in good}
    assert "huge-zip" not in all_ids  # view all: its record (the fields twice) is too large
    dead = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap, settings.topics.dead_letters)]
    reasons = sorted((d["reason"], d.get("view")) for d in dead)
    assert reasons == [("invalid", "zip"), ("too_large", "all")], reasons
    (invalid,) = [d for d in dead if d["reason"] == "invalid"]
    assert "fields.zipcode" in invalid["error"]
    assert Event.from_json(base64.b64decode(invalid["value_b64"])).event_id == "huge-zip"


def test_an_event_stamped_9999_does_not_make_its_entity_late_forever(
    topics: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Through the real worker: one event of entity c1 at 9999-12-31 was applied, moved c1's watermark there,
    and every later event of c1 was dead-lettered late. It is now 'future' (its Kafka record's timestamp is
    now), and c1 goes on."""
    settings = topics
    good = stream(200, entities=4, seed=51, step_ms=300, grain_ms=1_000)
    far = good[50].model_copy(update={"event_id": "far", "entity": "c1", "ts": 253_402_300_799_999})
    with Producer(settings) as producer:
        producer.send_many([*good[:50], far, *good[50:]])
    worker = Worker(settings, "tests.support.feature_defs:DIRECT", tmp_path / "worker.log")
    try:
        wait_caught_up(settings, [worker], timeout_s=150)
    finally:
        worker.stop()
    oracle = Oracle(ALL).feed(good)
    got = {}
    for r in read_all(settings.kafka_bootstrap, settings.topics.features):
        rec = orjson.loads(r.value)
        got.setdefault(rec["event"]["event_id"], rec)
    assert got.keys() == oracle.vectors.keys()
    assert all(not diff(rec["features"], oracle.vectors[k]) for k, rec in got.items())
    dead = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap, settings.topics.dead_letters)]
    assert [d["reason"] for d in dead] == ["future"]
    assert Event.from_json(base64.b64decode(dead[0]["value_b64"])).event_id == "far"
    (row,) = read_redis(settings, "all", ["c1"])
    wm, aggs = oracle.online()["c1"]
    assert row is not None and row.ts == wm and not diff(row.values, aggs)


@pytest.mark.parametrize("where", ["redis", "cluster"])
def test_a_commit_refused_for_a_position_ahead_is_counted(
    settings: Settings,
    redis_client: redis.Redis,
    where: str,
    request: pytest.FixtureRequest,
) -> None:
    """A stored position ahead of the writer's (a zombie's write, or an offset tampered with in Redis) made
    the commit drop the entity's update silently, at every batch: the entity stopped changing and nothing
    said so. The commit now returns how many it refused (the worker counts them: stale_commits)."""
    events = stream(30, entities=2, seed=61, step_ms=1_000)
    raws = [RawRecord(e.to_json(), "events", 0, 100 + i) for i, e in enumerate(events)]
    client = request.getfixturevalue("cluster") if where == "cluster" else redis_client
    on_cluster = {"redis_url": CLUSTER_URL, "redis_cluster": True}
    store = feature_store(settings.model_copy(update=on_cluster) if where == "cluster" else settings)

    async def go() -> tuple[int, int]:
        try:
            first = await FeaturePipeline([ALL], store).process(raws[:10])
            assert await first.commit(store) == 0
            # the stored position of one entity moves far ahead (what a zombie's rival, or tampering, leaves)
            tampered = events[0].entity
            client.hset(state_key(settings.redis_prefix, "all", tampered), "o", str(10**15))
            second = await FeaturePipeline([ALL], store).process(raws[10:])
            touched = {e.entity for e in events[10:]}
            return await second.commit(store), int(tampered in touched)
        finally:
            await store.close()

    refused, expected = asyncio.run(go())
    assert expected == 1 and refused == 1
