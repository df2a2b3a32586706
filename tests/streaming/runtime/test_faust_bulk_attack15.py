"""Attack on the bulk consumer (streaming.runtime.faust_bulk, attack 15): the fetch after a rebalance.

Faust's fetch loop calls ``getmany`` again at once when a fetch is dropped; during a rebalance that call
waits, inside Faust's ``getmany``, for the flow to resume, and the rebalance ends meanwhile (a new
generation, the seek back to the committed offsets, the flow resumed). The records that call then fetches
are the new generation's, from the committed offsets. Seen in a worker going through rebalances with its
inbox full: 7,307 such records dropped, the read offsets and the fetch positions already past them, so
they were never processed nor acknowledged and the group's commits stopped there for good (and after the
next restart, read again from there, an entity already further along skips them as redelivered).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streaming.runtime import faust_bulk

pytestmark = pytest.mark.unit


def _record(tp: TP, offset: int) -> Any:
    return ConsumerRecord(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=b"k",
        value=b"{}",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=2,
        headers=(),
    )


async def _fetch_across_a_rebalance(tmp_path: Path, *, resumed: bool) -> tuple[list[int], Any]:
    """The offsets an inbox receives from one ``getmany`` entered while the flow is stopped, whose wait
    sees the rebalance end (``resumed``) or not; and the read offset left behind."""
    app = faust_bulk.App(
        "attack15",
        fetch_max_wait_ms=10,
        broker="kafka://127.0.0.1:9",
        datadir=str(tmp_path),
        store="memory://",
    )
    inbox = app.inbox("events", 100)
    consumer: Any = app.consumer
    tp = TP("events", 0)
    app.consumer_generation_id = 1
    consumer.stop_flow()  # partitions revoked: a rebalance began

    async def wait_next_records(timeout: float) -> tuple[Any, Any]:
        # Faust's waits for the flow to resume; the rebalance ends meanwhile
        app.consumer_generation_id = 2  # assigned
        consumer._read_offset[tp] = 10  # the seek back to the committed offset
        if resumed:
            consumer.resume_flow()
        return {tp: [_record(tp, 10), _record(tp, 11)]}, {tp}

    consumer._wait_next_records = wait_next_records
    consumer.highwater = lambda tp: 12
    try:
        passed = [m async for m in consumer.getmany(1.0)]
    finally:
        consumer._thread.thread_loop.close()  # made with the thread, never run: the thread was not started
    assert passed == []  # the inbox's topic: none goes to Faust's per-message path
    return [m.offset for m in inbox.queue], consumer._read_offset[tp]


def test_a_fetch_made_after_the_rebalance_ended_reaches_the_inbox(tmp_path: Path) -> None:
    offsets, _ = asyncio.run(_fetch_across_a_rebalance(tmp_path, resumed=True))
    assert offsets == [10, 11]  # dropped before: nothing would ever read them again


def test_a_fetch_while_the_flow_is_still_stopped_is_dropped(tmp_path: Path) -> None:
    offsets, _ = asyncio.run(_fetch_across_a_rebalance(tmp_path, resumed=False))
    assert offsets == []  # Faust seeks back to the committed offsets before it resumes the flow


def test_the_worker_consumer_reads_committed_records_only(tmp_path: Path) -> None:
    """Faust's at-least-once consumer read uncommitted records: the events of an aborted transaction were
    counted (test_feature_worker_attack15), where the learner reads committed ones only."""
    from streaming.settings import Settings
    from tests.streaming.runtime.test_faust_fetch import made_consumer

    assert made_consumer(Settings(data_dir=str(tmp_path)), "_isolation_level") == "read_committed"
