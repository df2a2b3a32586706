"""A batch the feature worker took from its inbox before a rebalance and had not begun when the rebalance
came (the consumer's fetch was put in the inbox, the agent took it, then the rebalance's signal ran): it
is dropped unacknowledged, as the inbox's records are, and Faust reads its records again. Begun after the
rebalance, it would have read its states from the store (the pipeline's new epoch reads no state pinned
before: tests/features/test_pipeline_rebalance.py), where the batch before it, not yet committed, was
missing, and counted its events without that batch's."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from features.aggregations import Count
from features.definitions import FeatureView
from features.events import Event
from features.pipeline import FeaturePipeline
from features.store import MemoryStore
from streaming.runtime.feature_worker import _Worker
from streaming.settings import Settings

pytestmark = pytest.mark.unit

VIEW = FeatureView(name="wr", aggregations=[Count()])


@dataclass
class Message:
    """What the worker reads of a Faust consumer message."""

    value: bytes
    offset: int
    topic: str = "events"
    partition: int = 0
    key: bytes = b"u"
    timestamp: float | None = None
    headers: Any = None


def message(offset: int) -> Message:
    return Message(Event(event_id=f"e{offset}", entity="u", ts=1_000 * (offset + 1)).to_json(), offset)


def test_a_batch_taken_before_a_rebalance_is_dropped_and_its_records_counted_once_read_again(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        store = MemoryStore()
        worker = _Worker(Settings(data_dir=str(tmp_path)), app=None)  # type: ignore[arg-type]
        pipeline = FeaturePipeline([VIEW], store, cache_entities=1000)
        worker.pipelines.append(pipeline)
        first = await worker._compute((0, [message(0), message(1)]), pipeline, False, ())
        assert first is not None  # applied, its commit not done yet
        taken = (worker.rebalances, [message(2)])
        worker.on_rebalance(None)  # the partition stays: Faust reads on from the committed offset, 0
        assert await worker._compute(taken, pipeline, False, ()) is None  # dropped: no state read
        await first.result.commit(store)
        again = await worker._compute(
            (worker.rebalances, [message(0), message(1), message(2)]), pipeline, False, ()
        )
        assert again is not None and again.result.skipped == 2
        (record,) = again.result.records
        assert record.features["count_lifetime"] == 2  # begun after the rebalance, the dropped batch: 0

    asyncio.run(body())


def test_offsets_skipped_within_an_epoch_are_counted_and_a_rebalance_starts_the_count_again(
    tmp_path: Path,
) -> None:
    """A batch whose records of a partition start past the offset after the last one processed since the
    rebalance skipped records (offset_gaps): the evidence a drill needs to tell records never processed
    from a state applied out of order. After a rebalance Faust reads from the committed offsets: no gap."""

    async def body() -> None:
        worker = _Worker(Settings(data_dir=str(tmp_path)), app=None)  # type: ignore[arg-type]
        pipeline = FeaturePipeline([VIEW], MemoryStore(), cache_entities=1000)
        computed = [await worker._compute((0, [message(0), message(1)]), pipeline, False, ())]
        other = Message(message(9).value, 9, partition=1)  # another partition's first record: no gap
        computed.append(await worker._compute((0, [message(1), message(4), other]), pipeline, False, ()))
        computed.append(await worker._compute((0, [message(7)]), pipeline, False, ()))
        worker.on_rebalance(None)
        computed.append(await worker._compute((1, [message(20)]), pipeline, False, ()))
        assert [c.result.gaps if c is not None else None for c in computed] == [0, 2, 2, 0]

    asyncio.run(body())


@dataclass
class _Consumer:
    """What the worker reads of Faust's consumer: the offsets it last committed or sought to."""

    _committed_offset: dict[Any, int | None]


@dataclass
class _App:
    consumer: _Consumer


def test_records_skipped_past_the_committed_offset_at_an_epochs_start_are_counted(tmp_path: Path) -> None:
    """Issue 15 (kill drill run d8): after a rebalance a worker went on 992 records past where the seek
    should have started it, and its batches counted no gap (the count restarts at a rebalance). The first
    record of a partition in an epoch is compared with Faust's committed offset: past it, records were
    skipped; at or before it (records read again, skipped as redelivered), none; no committed offset known
    (another partition, or none committed), nothing is counted."""

    async def body() -> None:
        app = _App(_Consumer({TP("events", 0): 5, TP("events", 1): None}))
        worker = _Worker(Settings(data_dir=str(tmp_path)), app=app)  # type: ignore[arg-type]
        pipeline = FeaturePipeline([VIEW], MemoryStore(), cache_entities=1000)
        gaps = []
        for first in (8, 5, 3):
            worker.on_rebalance(None)
            batch = [message(first), message(first + 1), Message(message(40).value, 40, partition=1)]
            computed = await worker._compute((worker.rebalances, batch), pipeline, False, ())
            assert computed is not None
            gaps.append(computed.result.gaps)
        assert gaps == [3, 0, 0]

    asyncio.run(body())
