"""Attacks on this round's changes (features/_native_exact.pxi, features/pipeline.py's batch applied entity
by entity), kept as regression tests.

- A batch's dead letters keep the batch's order: a re-keyed view's key error (a key field's value too long
  to be an entity) was dead-lettered while the records were keyed, ahead of the dead letters of the records
  before it (a late event, say); applied one at a time they come in the records' order.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from features.pipeline import FeaturePipeline, RawRecord
from features.store import MemoryStore
from tests.support.feature_defs import HOSTILE, HOSTILE_KEYED

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------- the pipeline: a key error's place


def _event(i: int, zipcode: str, ts: int) -> bytes:
    fields = {"zipcode": zipcode, "salary": float(i), "hvalue": 1.5, "device": f"d{i % 3}"}
    return orjson.dumps({"event_id": f"e{i}", "entity": f"c{i % 2}", "ts": ts, "fields": fields})


def _records(seed: int, n: int) -> list[RawRecord]:
    """Events of a few zipcodes, some late (10 minutes behind their zipcode, lateness 2m), some with a
    zipcode too long to be an entity (the re-keyed view dead-letters them when it keys them)."""
    rng = random.Random(seed)
    out: list[RawRecord] = []
    ts = 10_000_000
    for i in range(n):
        ts += rng.randrange(1, 20_000)
        roll = rng.random()
        zipcode = rng.choice(["z1", "z2", "z3"]) if roll >= 0.2 else "z" * 1_100
        when = ts - 600_000 if 0.2 <= roll < 0.4 else ts
        out.append(RawRecord(_event(i, zipcode, when), "events", 0, i, None, ts))
    return out


def _run(raws: list[RawRecord], size: int) -> list[Any]:
    store = MemoryStore()
    pipeline = FeaturePipeline([HOSTILE, HOSTILE_KEYED], store)

    async def go() -> list[Any]:
        out: list[Any] = []
        for i in range(0, len(raws), size):
            result = await pipeline.process(raws[i : i + size])
            await result.commit(store)
            for view in (HOSTILE.name, HOSTILE_KEYED.name):  # a batch gives its views one after the other
                dead = [(d.view, d.reason, d.record.offset) for d in result.dead_letters if d.view == view]
                out.append(dead)
                out.append([(r.view, r.entity, r.to_json()) for r in result.records if r.view == view])
        return out

    got = asyncio.run(go())
    # per view, everything in the order it came (the batches' lists joined)
    return [[x for part in got[k::4] for x in part] for k in range(4)]


def test_a_key_error_is_dead_lettered_in_its_records_place() -> None:
    late = _event(1, "z1", 1_000_000 - 600_000)
    raws = [
        RawRecord(_event(0, "z1", 1_000_000), "events", 0, 0),
        RawRecord(late, "events", 0, 1),  # late: its dead letter first
        RawRecord(_event(2, "z" * 1_100, 1_000_000), "events", 0, 2),  # then the key's
    ]
    whole = _run(raws, 3)
    assert whole == _run(raws, 1)
    assert whole[2] == [("hostile_keyed", "late", 1), ("hostile_keyed", "invalid", 2)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batch_with_key_errors_gives_what_its_records_give_one_at_a_time(seed: int) -> None:
    raws = _records(seed, 120)
    one = _run(raws, 1)
    reasons = {d[1] for d in one[0] + one[2]}
    assert {"late", "invalid"} <= reasons, reasons
    assert len(one[3]) > 30
    for size in (len(raws), 17):
        assert _run(raws, size) == one, size
