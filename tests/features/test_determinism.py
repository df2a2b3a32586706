"""A feature record is the same bytes however the state behind it was kept: in the pipeline's cache from
batch to batch, or read back from the store at every batch (as after a crash or a rebalance).

The crash test of the feature worker relies on it (a re-emitted record must be identical); so does
replay's reproducibility. Before the variance was exact, the cached merge of a window's tiles and the merge
of the same tiles read back from the store rounded differently (1,731 of 11,733 records differed in their
last bits, all variances and standard deviations), and Min/Max kept 1 or 1.0 by the order of the merge.
"""

from __future__ import annotations

import asyncio

import pytest

from features.definitions import FeatureView
from features.pipeline import FeaturePipeline, RawRecord
from features.store import MemoryStore
from tests.support.feature_defs import HOSTILE, VIEWS
from tests.support.streams import stream

pytestmark = pytest.mark.unit


def records(views: list[FeatureView], raws: list[RawRecord], *, cache: int, batch: int) -> dict[str, bytes]:
    async def go() -> dict[str, bytes]:
        store = MemoryStore()
        pipeline = FeaturePipeline(views, store, cache_entities=cache)
        out: dict[str, bytes] = {}
        for i in range(0, len(raws), batch):
            result = await pipeline.process(raws[i : i + batch])
            for r in result.records:
                out[f"{r.view}/{r.event.event_id}"] = r.to_json()
            await result.commit(store)
        return out

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("views", "events"),
    [
        (VIEWS, stream(4_000, 40, 12, late_every=97, shuffle_every=11, step_ms=300, grain_ms=1_000)),
        ([HOSTILE], stream(2_500, entities=4, seed=5, hostile=True)),
    ],
    ids=["feature_defs", "hostile"],
)
def test_records_do_not_depend_on_how_states_were_kept(views: list[FeatureView], events: list) -> None:
    raws = [RawRecord(e.to_json(), "ev", 0, i, e.entity.encode(), e.ts) for i, e in enumerate(events)]
    cached = records(views, raws, cache=100_000, batch=500)
    reloaded = records(views, raws, cache=0, batch=37)
    assert len(cached) > len(events) // 2 and cached.keys() == reloaded.keys()
    differ = [k for k in cached if cached[k] != reloaded[k]]
    assert not differ, (len(differ), differ[:3], [(cached[k], reloaded[k]) for k in differ[:1]])
