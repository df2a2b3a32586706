"""A batch is applied entity by entity (``FeaturePipeline._apply_view``: an entity's events together, in
their order, so its state stays in the CPU's cache), but what comes out is what applying the records one at a
time gives: the same feature records in the batch's order, the same dead letters in the batch's order, the
same counters, and the same states and rows in the store. The oracle is the pipeline itself fed one record
per batch, each committed before the next, on the hostile stream with records no view can apply mixed in
(not JSON, empty, an oversized record, a re-keyed event without its key field, a corrupt stored state, a
redelivered record)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from features import distinct
from features.pipeline import FeaturePipeline, RawRecord
from features.store import MemoryStore
from tests.support.feature_defs import HOSTILE, HOSTILE_KEYED
from tests.support.streams import stream

pytestmark = pytest.mark.unit

VIEWS = [HOSTILE, HOSTILE_KEYED]
COUNTERS = ("skipped", "missing_key", "resets")
LIMIT = 2_000  # a record of the features topic over this many bytes is dead-lettered "too_large"


def records(seed: int, n: int) -> list[RawRecord]:
    """The hostile stream over a few entities, as Kafka records, with broken ones mixed in."""
    rng = random.Random(seed)
    out: list[RawRecord] = []
    for event in stream(n, entities=4, seed=seed, step_ms=3_000, hostile=True, lateness_ms=120_000):
        value = event.to_json()
        roll = rng.random()
        if roll < 0.04:
            value = b"{not json"
        elif roll < 0.07:
            fields = {k: v for k, v in event.fields.items() if k != "zipcode"}  # the re-keyed view skips it
            value = event.model_copy(update={"fields": fields}).to_json()
        elif roll < 0.09:
            value = event.model_copy(update={"fields": {**event.fields, "pad": "x" * LIMIT}}).to_json()
        out.append(RawRecord(value if roll >= 0.02 else None, "events", 0, len(out), None, event.ts))
        if rng.random() < 0.05:  # redelivered: the same position again, later in the stream
            out.append(out[rng.randrange(len(out))])
    return out


def corrupt_store(first: RawRecord) -> MemoryStore:
    """A store where the first record's entity has a state that is not one."""
    store = MemoryStore()
    entity = orjson.loads(first.value or b"{}").get("entity", "c0")
    store.put_raw(HOSTILE.name, entity, b'{"v": 2, "w": "not a time"}')
    return store


def outcome(pipeline_batches: list[Any]) -> dict[str, Any]:
    """What came out, per view in order (a batch gives its records view by view; None: not decoded)."""
    out: dict[str, Any] = {"counts": [sum(getattr(b, k) for b in pipeline_batches) for k in COUNTERS]}
    for view in [None, *(v.name for v in VIEWS)]:
        out[f"records {view}"] = [
            (r.entity, r.event.event_id, r.to_json())
            for b in pipeline_batches
            for r in b.records
            if r.view == view
        ]
        out[f"dead {view}"] = [
            (d.reason, d.error, d.record.offset)
            for b in pipeline_batches
            for d in b.dead_letters
            if d.view == view
        ]
    return out


def sketches_as_values(x: Any) -> Any:
    """A decoded state with each HyperLogLog sketch as its estimate: a sketch's bytes depend on the order
    its hashes came in (decoded from the store each batch, or kept in memory), its value does not."""
    if type(x) is str and distinct.valid([x]):
        return ("sketch", distinct.value([x]))
    if type(x) is list:
        return [sketches_as_values(y) for y in x]
    if type(x) is dict:
        return {k: sketches_as_values(v) for k, v in x.items()}
    return x


def stored(store: MemoryStore) -> dict[str, Any]:
    rows = {key: orjson.dumps([row.values, row.ts]) for key, (row, _) in store._rows.items()}
    states = {key: sketches_as_values(orjson.loads(raw)) for key, raw in store._states.items()}
    return {"states": states, "rows": rows}


def run(raws: list[RawRecord], size: int, cache: int) -> tuple[dict[str, Any], dict[str, Any]]:
    store = corrupt_store(raws[0])
    pipeline = FeaturePipeline(VIEWS, store, cache_entities=cache, max_record_bytes=LIMIT)

    async def go() -> list[Any]:
        done = []
        for i in range(0, len(raws), size):
            result = await pipeline.process(raws[i : i + size])
            await result.commit(store)
            done.append(result)
        return done

    return outcome(asyncio.run(go())), stored(store)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("cache", [0, 100])
def test_a_batch_gives_what_its_records_give_one_at_a_time(seed: int, cache: int) -> None:
    raws = records(seed, 400)
    one, one_store = run(raws, 1, cache)
    assert sum(len(v) for k, v in one.items() if k.startswith("records")) > 400
    dead = {d[0] for k, v in one.items() if k.startswith("dead") for d in v}
    assert dead >= {"invalid", "too_large", "late", "corrupt_state"}, dead
    assert one["counts"][0] > 0 and one["counts"][1] > 0 and one["counts"][2] == 1
    for size in (len(raws), 37):
        whole, whole_store = run(raws, size, cache)
        for key, want in one.items():
            assert whole[key] == want, (size, key)  # the batch's order, not the entities'
        assert whole_store == one_store, size
