"""Attack on the feature worker's bulk path (issue 13, attack 15): rebalances while the consumer waits for
room in a full inbox, and the consumer offsets a worker leaves behind."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from features.events import Event
from streaming.settings import Settings
from tests.streaming.runtime.test_feature_worker import (  # noqa: F401 (topics: a fixture)
    check_direct_view,
    check_rekeyed_view,
    events_for,
    topics,
)
from tests.support.workers import (
    KILL_DRILL_ENV,
    Worker,
    produce,
    run_worker,
    wait_caught_up,
    wait_records,
)

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def small_batch_workers(settings: Settings, tmp_path: Path) -> Iterator[Callable[[], Worker]]:
    """Starts feature workers with batches of 20 (a small inbox: the consumer often waits for room in it)
    and the kill drills' 6 s session, each logging to a file of its own; every one started is stopped on
    the way out."""
    workers: list[Worker] = []

    def start() -> Worker:
        log = tmp_path / f"w{len(workers)}.log"
        env = {"RIVULET_FEATURES_BATCH_SIZE": "20", **KILL_DRILL_ENV}
        workers.append(Worker(settings, "tests.support.feature_defs", log, **env))
        return workers[-1]

    try:
        yield start
    finally:
        for w in workers:
            w.stop()


def test_workers_joining_and_leaving_mid_stream_count_every_event_once(
    topics: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A second worker joins while the first is busy with a backlog (its inbox full: 2 x 20 records), then
    leaves (SIGTERM), then a third joins: each is a rebalance with a fetch waiting for room or in flight.
    Before attack 15 (its unit tests fail deterministically on that code; this one depends on timing):
    the workers never caught up, a fetch made after a rebalance dropped (test_faust_bulk_attack15); or
    events had no feature record, a fetch of before the rebalance put in the cleared inbox and processed
    first (test_feature_batches_attack15)."""
    settings = topics
    events: list[Event] = events_for(seed=151, n=20_000)
    produce(settings, events)
    with small_batch_workers(settings, tmp_path) as start:
        first = start()
        wait_records(settings, 3_000, [first])
        second = start()
        wait_records(settings, 8_000, [first, second])
        second.stop()
        wait_records(settings, 11_000, [first])
        third = start()
        wait_caught_up(settings, [first, third], timeout_s=150)
    check_direct_view(settings, events)
    check_rekeyed_view(settings, events)


def test_a_worker_killed_while_its_inbox_is_full_loses_and_double_counts_nothing(
    topics: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Small batches (the consumer mostly waits for room in the inbox) and SIGKILL: a member killed with
    its inbox full, batches forwarded to the repartition topic and not acknowledged; its partitions move
    when its session lapses, and a new worker joins meanwhile."""
    settings = topics
    events: list[Event] = events_for(seed=154, n=12_000)
    produce(settings, events)
    with small_batch_workers(settings, tmp_path) as start:
        first, second = start(), start()
        wait_records(settings, 3_000, [first, second])
        first.kill()
        third = start()
        wait_records(settings, 7_000, [second, third])
        second.kill()
        wait_caught_up(settings, [third], timeout_s=150)
    check_direct_view(settings, events)
    check_rekeyed_view(settings, events)


def _transactional(settings: Settings, events: list[Event], *, abort: bool, tid: str) -> None:
    """``events`` onto the events topic (keyed by entity) in one transaction, committed or aborted."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, transactional_id=tid)
        await producer.start()
        try:
            await producer.begin_transaction()
            for e in events:
                await producer.send_and_wait(settings.topics.events, e.to_json(), key=e.entity.encode())
            if abort:
                await producer.abort_transaction()
            else:
                await producer.commit_transaction()
        finally:
            await producer.stop()

    asyncio.run(go())


def test_events_of_an_aborted_transaction_are_not_counted(
    topics: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A producer writing the events topic in transactions: the events of an aborted one are not events (the
    learner reads committed records only). The last events are sent without a transaction: a partition
    whose last record is a transaction's ends with its commit marker, and Faust commits the offset after
    the last record it acknowledged, one short of the end offset (the lag wait_caught_up waits for). Read
    committed, the aborted records are a gap in the offsets after the record at offset 0: Faust's gap
    bookkeeping took a read offset of 0 for none, and the group's commit stopped at offset 1 for good."""
    settings = topics
    events: list[Event] = events_for(seed=152, n=800)
    # of the first event's entity: its partition holds the first event at offset 0, then the aborted ones
    aborted = [events[0].model_copy(update={"event_id": f"aborted-{i}"}) for i in range(50)]
    produce(settings, events[:1])
    _transactional(settings, aborted, abort=True, tid=f"{settings.topic_prefix}t1")
    _transactional(settings, events[1:600], abort=False, tid=f"{settings.topic_prefix}t2")
    run_worker(settings, events[600:], tmp_path / "w.log", timeout_s=120)
    check_direct_view(settings, events)
    check_rekeyed_view(settings, events)
