"""The Faust feature processor: events topic -> feature views -> Redis online store and features topic.

This module is the one Faust app (``create_app``). Its agents are short loops that hand each batch of raw
records to :class:`features.pipeline.FeaturePipeline` (pure feature code plus the state store) and publish
what it returns.

Delivery and state, per batch (mind faust #606, #316 and the table-recovery bugs, see STYLE.md):

1. ``at_least_once``, one agent instance per view group (concurrency 1), no Faust tables: the per-entity
   state lives in Redis with the source position of the last event applied to it;
2. the pipeline loads the batch's entities in one round trip and skips records at or before an entity's
   stored position (redelivered after a crash or a rebalance);
3. feature records and dead letters are produced and their acknowledgements awaited;
4. states and vectors are committed to Redis, atomically per entity (a Lua script per entity, one
   pipeline per batch), refusing to move an entity's position backwards (a zombie after a rebalance);
5. only then are the batch's records acknowledged (``consumer.ack``), and Faust's committer commits the
   consumer offsets acknowledged; a failed batch is never acknowledged.

Records reach the agents in bulk (:mod:`streaming.runtime.faust_bulk`): Faust's consumer hands each fetch of
the agent's topic to its inbox (:mod:`streaming.runtime.feature_batches`), not record by record through a
Faust stream; group membership, assignment, rebalances and commits stay Faust's. A batch is computed while
the previous one goes through 3 to 5 (:func:`~streaming.runtime.feature_batches.overlapped`; one at a time,
in order): the states the previous batch touched stay pinned in the pipeline until its commit is done, so
the next never reads one back from Redis from before it, and each commit writes the state bytes and
position of its own batch (``features.pipeline``, ``StateUpdate.position``). A rebalance begins a new
epoch of the pipeline (``FeaturePipeline.invalidate``): the batches begun after it read no state cached or
pinned before it (another worker may have moved those entities on in Redis meanwhile), and a batch taken
before it but not yet begun is dropped unacknowledged, its records read again (``_Worker._compute``).

A crash between 3 and 4 re-emits identical feature records (consumers de-duplicate by ``event_id``); a
crash between 4 and 5 re-reads records that 2 skips. Either way no event is counted twice or lost.

One record's problem is never the batch's: whatever raises while one record is processed (decoding,
keying, applying, serialising its feature record) sends that record to the dead-letter topic with its
reason (``features.pipeline.REASONS``), stage ``features``, topic, partition, offset and original bytes,
counted per reason (``rivulet_features_dead_letters_total{reason}`` and ``dead_letters:<reason>`` in the
stats hash), and the batch goes on. Only what concerns every record (Kafka unreachable, or Redis still
unreachable after ``RIVULET_REDIS_FAILOVER_S`` of retries: a Redis Cluster failover is ridden through, see
:class:`features.redis_store.RedisStore`) fails a batch, and then the process exits for its supervisor to
restart it.

Every record it publishes fits the topics' ``max.message.bytes`` (``max_event_bytes`` plus 4096, as
``streaming.ingest.topics`` creates them): an event whose feature record would be larger is dead-lettered
``too_large`` and not applied, and a dead letter leaves out original bytes that would not fit (their size
and SHA-256 instead; the position finds them). Before, one such record failed every batch forever.

Views keyed by a field other than the event's entity are re-keyed through a repartition topic
(:mod:`streaming.runtime.feature_forward`) and run in an agent of their own, with positions on the
repartition topic. The worker forwards each batch of the events topic there before it acknowledges it, so
a crash re-forwards the records forwarded but not acknowledged, at new positions; each repartition record
carries the position it was read at on the events topic (header ``rivulet-src``: ``[topic, partition,
offset]``, replacing any header of that name the producer sent: a forged one would make real events look
like duplicates). Per entity the state keeps the highest source offset applied per source partition, and
a record at or below it is a duplicate, skipped (``features.pipeline``). This is exact: the worker forwards
one source partition's records in offset order (one agent, concurrency 1, a batch forwarded and
acknowledged by Kafka before the next), and one entity's records all go to one repartition partition (its
key's). So an entity sees each source partition's records in offset order, and the first record it sees at
or below its stored offset was already applied. A record without a valid header falls back to the entity's
last ``MAX_IDS`` event ids.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mode
from faust.types import StreamT
from prometheus_client import Counter, Histogram

from features.definitions import FeatureView
from features.pipeline import (
    MAX_CACHE_BYTES,
    MAX_STATE_BYTES,
    BatchResult,
    DeadLetter,
    FeaturePipeline,
    RawRecord,
)
from features.redis_store import RedisStore
from streaming.clients import feature_store
from streaming.logs import get_logger
from streaming.runtime import faust_bulk, feature_lag
from streaming.runtime import feature_forward as forward
from streaming.runtime.feature_batches import Inbox, batches, overlapped
from streaming.runtime.feature_forward import forwarded, repartition_topic
from streaming.runtime.feature_publisher import AsyncPublisher
from streaming.settings import Settings

__all__ = ["create_app", "stats_key", "tune_gc"]

log = get_logger("rivulet.features")
_DEBUG = logging.getLogger("rivulet.features")  # the same logger: is debug on (a batch's offsets cost a loop)
# the youngest generation's collection threshold in a worker (tune_gc; Python's default: 700)
GC_YOUNG = 50_000

EVENTS = Counter("rivulet_features_events_total", "Feature records produced", ["view"])
DEAD = Counter("rivulet_features_dead_letters_total", "Records sent to dead letters", ["reason"])
SKIPPED = Counter("rivulet_features_redelivered_total", "Redelivered records recognised and skipped")
RESETS = Counter("rivulet_features_state_resets_total", "Entities whose corrupt stored state was reset")
STALE = Counter(
    "rivulet_features_stale_commits_total",
    "Entity commits refused because the stored position was further along (a zombie, or tampering)",
)
DROPPED = Counter(
    "rivulet_features_dropped_total",
    "Records taken in a batch before a rebalance and dropped unprocessed (read again after it)",
)
BATCH = Histogram("rivulet_features_batch_seconds", "Time to process one batch, publish and commit")


def stats_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}stats:features"


def create_app(
    settings: Settings, views: Sequence[FeatureView], *, app_id: str | None = None
) -> faust_bulk.App:
    """The feature processor app. Workers started with the same ``app_id`` form one consumer group."""
    app_id = app_id or f"{settings.topic_prefix}features"
    app = _faust_app(settings, app_id)
    worker = _Worker(settings, app)
    app.on_partitions_revoked.connect(worker.on_rebalance)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(worker.on_rebalance)  # type: ignore[arg-type]
    events = settings.topics.events
    direct = [v for v in views if not v.rekeyed]
    forwards = []
    for view in (v for v in views if v.rekeyed):  # each re-keyed view: its repartition topic and agent
        name = repartition_topic(app_id, events, view)
        forwards.append((view, name))
        _agent(app, name, f"features-{view.name}", worker, [view], sourced=True, internal=True)
    _agent(app, events, "features", worker, direct, forwards=forwards)
    return app


def _agent(
    app: faust_bulk.App,
    topic: str,
    name: str,
    worker: _Worker,
    views: Sequence[FeatureView],
    *,
    sourced: bool = False,
    internal: bool = False,
    forwards: Sequence[tuple[FeatureView, str]] = (),
) -> None:
    """An agent of ``topic`` that reads its records from the topic's inbox (:mod:`faust_bulk`: the Faust
    stream it is given is only its subscription, and never receives a record)."""
    s = worker.settings
    channel = app.topic(
        topic,
        key_type=bytes,
        value_type=bytes,
        internal=internal,
        partitions=s.partitions if internal else None,
    )
    inbox = app.inbox(topic, 2 * s.features_batch_size)

    async def agent(stream: StreamT) -> None:
        await worker.run(inbox, views, report_invalid=not sourced, sourced=sourced, forwards=forwards)

    agent.__name__ = name.replace("-", "_")
    app.agent(channel, name=name, concurrency=1)(agent)


def tune_gc(settings: Settings) -> None:
    """Once the worker is built (imports, Faust, views): freeze what exists (it lives as long as the process),
    collect the youngest generation every :data:`GC_YOUNG` allocations instead of 700, and the full one
    only every ``features_gc_full_every`` middle ones. A full pass walks every cached state (about 250 ms
    with 1,000 ``customer`` entities: at Python's default it made the freshness p99). A batch allocates
    hundreds of thousands of containers that reference counting frees: at 700 the young and middle passes
    took 15.6 us an event of ``customer``, 2.2 us at 50,000 (BENCHMARKS.md), as replays do
    (streaming.replay.collect). The states hold no cycles. Not in :func:`create_app`: freezing belongs to
    the worker's process, not to whoever builds an app."""
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, settings.features_gc_full_every)


def _faust_app(settings: Settings, app_id: str) -> faust_bulk.App:
    datadir = Path(settings.data_dir).resolve() / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    return faust_bulk.App(  # Faust's, handing records over in bulk, with a short fetch wait
        app_id,
        fetch_max_wait_ms=settings.features_fetch_wait_ms,
        broker=[f"kafka://{s}" for s in settings.bootstrap_servers],
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        store="memory://",
        web_enabled=False,
        datadir=str(datadir),
        topic_replication_factor=settings.replication_factor,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=settings.features_session_timeout_s,
        broker_heartbeat_interval=settings.features_session_timeout_s / 3,
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000,
        producer_max_request_size=max(settings.max_event_bytes * 2, 1_048_576),
        stream_wait_empty=False,
        # an agent that crashes ends the process (exit 1) for its supervisor (supervisord, Compose) to
        # restart: faust's default restarts the agent in place, and one that crashed inside its batching
        # after a rebalance was seen to come back consuming nothing while the process looked healthy;
        # a restart loses and double counts nothing (see the module docstring)
        agent_supervisor=mode.CrashingSupervisor,
    )


@dataclass(frozen=True, slots=True)
class _Computed:
    """A batch applied, not yet published: its result and when its computing started and ended."""

    result: BatchResult
    started: float
    computed: float


class _Worker:
    """What the agents of one process share: the Redis store and the publisher (made on first use, on the
    agents' event loop), and their pipelines (whose cached states a rebalance invalidates)."""

    def __init__(self, settings: Settings, app: faust_bulk.App) -> None:
        self.settings = settings
        self.app = app
        self.inboxes: list[Inbox] = []
        self._store: RedisStore | None = None
        self._publisher: AsyncPublisher | None = None
        self.pipelines: list[FeaturePipeline] = []
        self.rebalances = 0  # signals of a rebalance seen (on_rebalance): a batch knows its own
        # per topic-partition, the highest offset processed since the last rebalance: a batch that starts
        # further on skipped records (offset_gaps: a transaction's markers or aborted records, else a
        # record never processed; the kill drills expect none)
        self.read: dict[tuple[str, int], int] = {}

    def on_rebalance(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self.rebalances += 1
        self.read.clear()  # Faust seeks to the committed offsets: the next records may be any
        for p in self.pipelines:  # another worker may own these entities now: Redis is the truth again
            p.invalidate()
        for inbox in self.inboxes:  # Faust seeks back to the committed offsets: read again from there
            inbox.clear()

    async def _taken(self, inbox: Inbox) -> AsyncIterator[tuple[int, list[Any]]]:
        """The inbox's batches, each with the rebalances seen when it was taken (no await between)."""
        s = self.settings
        async for batch in batches(inbox, s.features_batch_size, s.features_batch_wait_ms / 1000):
            yield self.rebalances, batch

    async def run(
        self,
        inbox: Inbox,
        views: Sequence[FeatureView],
        *,
        report_invalid: bool = True,
        sourced: bool = False,
        forwards: Sequence[tuple[FeatureView, str]] = (),
    ) -> None:
        """Process the inbox's records in batches, forever (the publisher is stopped on the way out).
        ``sourced``: a repartition topic's records, which carry their source position (``rivulet-src``);
        ``forwards``: the re-keyed views and their repartition topics, where each batch is forwarded."""
        s = self.settings
        if self._store is None:
            self._store = feature_store(s)
        pipeline = FeaturePipeline(
            views,
            self._store,
            report_invalid=report_invalid,
            cache_entities=s.features_cache_entities,
            cache_bytes=MAX_CACHE_BYTES,
            max_record_bytes=s.max_event_bytes,
            max_state_bytes=MAX_STATE_BYTES,
            max_ahead_ms=s.features_max_ahead_ms,
            native=s.features_native,
        )
        log.info("feature_engine", path=pipeline.engines[0].path if pipeline.engines else None)
        self.pipelines.append(pipeline)
        self.inboxes.append(inbox)
        store = self._store

        async def compute(taken: tuple[int, list[Any]]) -> _Computed | None:
            return await self._compute(taken, pipeline, sourced, forwards)

        async def finish(taken: tuple[int, list[Any]], computed: _Computed | None) -> None:
            if computed is not None:
                await self._finish(taken[1], computed, pipeline, store)

        try:  # a batch is computed while the previous one is published, committed and acknowledged
            await overlapped(self._taken(inbox), compute, finish)
        finally:
            if self._publisher is not None:
                await self._publisher.stop()

    async def _compute(
        self,
        taken: tuple[int, Sequence[Any]],
        pipeline: FeaturePipeline,
        sourced: bool,
        forwards: Sequence[tuple[FeatureView, str]],
    ) -> _Computed | None:
        """Forward the batch to the re-keyed views' topics (acknowledged by Kafka before the batch is) and
        apply it: the records and states to publish and commit.

        None: the batch was taken before a rebalance (``taken``: the rebalances seen then, and the batch)
        and is dropped unacknowledged, as the inbox's records are: Faust reads its records again from the
        committed offsets. Applied after the rebalance, it would read states from Redis, where the batch
        before it, not yet committed, may still be missing (the pipeline pins that batch's states for the
        batches of its own epoch only: ``FeaturePipeline.invalidate``), and its commit would store a state
        without that batch's events further along. A batch whose pipeline epoch began before the rebalance
        ends as it began (its forwarded records, if it is dropped after them, are duplicates)."""
        seen, batch = taken
        started = time.perf_counter()
        try:
            if forwards and seen == self.rebalances:
                publisher = self._publisher_()
                for view, topic in forwards:
                    await publisher.send(topic, forwarded(view, batch))
            if seen != self.rebalances:  # no await from here to the pipeline's epoch (process begins)
                DROPPED.inc(len(batch))
                log.info("batch taken before a rebalance dropped", size=len(batch))
                return None
            gaps = self._gaps(batch)  # before the first await: the offsets read since this epoch began
            result = await pipeline.process([_raw(m, sourced) for m in batch])
            result.gaps = gaps
        except BaseException:
            pipeline.invalidate()  # cached states may hold effects that were never committed
            raise
        return _Computed(result, started, time.perf_counter())

    def _gaps(self, batch: Sequence[Any]) -> int:
        """How many offsets the batch skipped past the offsets processed before it since the rebalance, or,
        for a partition's first record since the rebalance, past the offset Faust last committed for it
        (where the seek after the rebalance starts it). Issue 15, run d8: a worker went on 992 records past
        where it should have started, and nothing counted or logged it (that partition had no committed
        offset, which this does not check: its start is the log's, see streaming/runtime/faust_fetch.py)."""
        read, gaps = self.read, 0
        committed: dict[tuple[str, int], int] | None = None
        for m in batch:
            key = (m.topic, m.partition)
            last = read.get(key)
            if last is None:
                committed = self._committed() if committed is None else committed
                start = committed.get(key)
                if start is not None and m.offset > start:
                    gaps += m.offset - start
                    log.warning(
                        "records skipped at an epoch's start: the first read is past the committed offset",
                        topic=m.topic,
                        partition=m.partition,
                        committed=start,
                        at=m.offset,
                        rebalances=self.rebalances,
                    )
            if last is None or m.offset > last:
                if last is not None and m.offset > last + 1:
                    gaps += m.offset - last - 1
                    log.debug(
                        "offsets skipped", topic=m.topic, partition=m.partition, after=last, at=m.offset
                    )
                read[key] = m.offset
        return gaps

    def _committed(self) -> dict[tuple[str, int], int]:
        """The offsets Faust's consumer last committed or sought to, per topic-partition (none known: {})."""
        offsets = getattr(getattr(self.app, "consumer", None), "_committed_offset", None) or {}
        try:
            return {(tp[0], tp[1]): o for tp, o in offsets.items() if isinstance(o, int)}
        except Exception:  # Faust's private bookkeeping changed shape: a diagnostic, not worth a crash
            return {}

    async def _finish(
        self, batch: Sequence[Any], computed: _Computed, pipeline: FeaturePipeline, store: RedisStore
    ) -> None:
        """Publish and commit a computed batch, then acknowledge its records (never after a failure)."""
        begun = time.perf_counter()
        try:
            await self._publish_and_commit(computed.result, store)
        except BaseException:
            pipeline.invalidate()
            raise
        ack = self.app.consumer.ack  # committed: Faust's committer may commit these offsets
        for message in batch:
            ack(message)
        try:  # issue 18: lag per partition; a metric never stops the worker
            feature_lag.observe(self.app.consumer, batch, computed.result)
        except Exception as exc:
            log.debug("lag not observed", error=repr(exc))
        done = time.perf_counter()
        BATCH.observe(done - computed.started)
        if _DEBUG.isEnabledFor(logging.DEBUG):  # which worker committed which offsets, in which epoch
            log.debug(
                "batch",
                size=len(batch),
                compute_ms=round((computed.computed - computed.started) * 1000, 1),
                publish_commit_ms=round((done - begun) * 1000, 1),
                epoch=computed.result._epoch,
                offsets=_ranges(batch),
            )

    def _publisher_(self) -> AsyncPublisher:
        if self._publisher is None:
            self._publisher = AsyncPublisher(self.settings)
        return self._publisher

    async def _publish_and_commit(self, result: BatchResult, store: RedisStore) -> None:
        s = self.settings
        publisher = self._publisher_()
        # acknowledged by Kafka before the state moves on
        await publisher.publish(s.topics.features, _feature_records(result))
        await publisher.publish(
            s.topics.dead_letters, [d.encode(s.max_event_bytes) for d in result.dead_letters]
        )
        refused = await result.commit(store)
        counts = _count(result, refused)
        if counts:
            await store.add_counts(stats_key(s), counts)


def _count(result: BatchResult, refused: int) -> dict[str, int]:
    """A batch's outcome into the metrics and the log; returns the counts for the stats hash."""
    counts: Tally[str] = Tally(f"records:{r.view}" for r in result.records)
    for view in {r.view for r in result.records}:
        EVENTS.labels(view).inc(counts[f"records:{view}"])
    for d in result.dead_letters:
        DEAD.labels(d.reason).inc()
        counts[f"dead_letters:{d.reason}"] += 1
        if d.reason not in ("invalid", "late"):  # not the producer's mistake: worth a log line
            src = d.record
            log.warning(
                "dead letter",
                reason=d.reason,
                view=d.view,
                topic=src.topic,
                partition=src.partition,
                offset=src.offset,
                error=d.error[:300],
            )
    if refused:  # another worker is further along, or a stored position was tampered with
        STALE.inc(refused)
        counts["stale_commits"] = refused
        log.warning("commits refused: stored position ahead", entities=refused)
    for metric, key, n in (
        (RESETS, "state_resets", result.resets),
        (SKIPPED, "redelivered_skipped", result.skipped),
        (None, "missing_key", result.missing_key),
        (None, "offset_gaps", result.gaps),
    ):
        if n:
            counts[key] = n
            if metric is not None:
                metric.inc(n)
    return dict(counts)


def _ranges(batch: Sequence[Any]) -> dict[str, list[int]]:
    """The first and last offset of each topic-partition in a batch (``topic/partition``: [first, last])."""
    out: dict[str, list[int]] = {}
    for m in batch:
        span = out.setdefault(f"{m.topic}/{m.partition}", [m.offset, m.offset])
        span[0], span[1] = min(span[0], m.offset), max(span[1], m.offset)
    return out


def _feature_records(result: BatchResult) -> list[tuple[bytes | None, bytes]]:
    """The feature records as (key, value); one that cannot be serialised becomes a dead letter."""
    out: list[tuple[bytes | None, bytes]] = []
    kept = []
    for r in result.records:
        try:
            out.append((r.entity.encode("utf-8", "surrogatepass"), r.to_json()))
        except Exception as exc:
            raw = r.source if r.source is not None else RawRecord(None, "", -1, -1)
            error = f"feature record not serialisable: {type(exc).__name__}: {exc}"
            result.dead_letters.append(DeadLetter("error", error[:1000], raw, r.view))
            continue
        kept.append(r)
    result.records = kept
    return out


def _raw(m: Any, sourced: bool = False) -> RawRecord:
    """A Faust consumer message as the pipeline's record."""
    timestamp = round(m.timestamp * 1000) if m.timestamp else None  # faust: seconds
    source = forward.source(m.headers) if sourced else None  # the events topic's headers are the producer's
    return RawRecord(m.value, m.topic, m.partition, m.offset, m.key, timestamp, source)
