"""The learner worker: features and labels topics in, signed checkpoints tied to offsets out.

One process is the single writer of the models it holds the leases of. It assigns itself every partition
of the features, labels and predictions topics (no consumer group: offsets live in the checkpoints, not in
Kafka), merges them in a deterministic order (:mod:`streaming.learning.merge`) and hands each record to a
:class:`~streaming.runtime.learner_session.Learner` (the pure :class:`~streaming.learning.core.LearnerCore`
behind a router, restore and checkpoints).

Exactly-once effect on the models: a checkpoint stores each model's state together with the position after
the last record it processed, for every partition. On start each model is restored from its newest valid
checkpoint and the consumer seeks to those positions; records after them are processed again from the
restored state, in the same order, so nothing is learned twice or skipped, and replaying a topic up to a
checkpoint's offsets rebuilds that version.

Fault isolation: a bad record is rejected by the router (counted per model and reason, the counts written
into each checkpoint header as ``rejected``) and sent to the dead-letter topic through a
:class:`~streaming.learning.deadletters.DeadLetterSink`, which is flushed before every checkpoint. A model
that raises in ``learn_one`` is quarantined (see :mod:`streaming.learning.core`): it is no longer
checkpointed, so its last good version keeps serving. A checkpoint is written only on a clean stop
(a signal, ``max_idle_s``) or a change of the specs held, never while an exception propagates: the state
may be the one that failed.

One writer per model (:mod:`streaming.learning.fencing`), and several learners sharing specs
(:mod:`streaming.runtime.lease_keeper`, :mod:`streaming.learning.shards`): the worker runs a *session* of
the specs it holds the leases of, and a new one whenever that set changes, as a restart would:

- a spec lost (its renewal refused, or a write refused with :class:`~streaming.learning.fencing.Fenced`)
  is written no more at once, then dropped: the session checkpoints the others and ends, and the next one
  runs without it (its state freed, the records no longer routed to it);
- a spec taken (its own, or an orphan taken as a standby): the session checkpoints and ends, and the next
  one restores it from the registry at its offsets (its fences raised before), the others from the versions
  just written;
- a spec held as a standby that its own learner wants back: checkpointed, then its lease given back.

A learner that holds nothing waits as a standby. One configured without standby (``standby=False``,
``RIVULET_LEARNER_STANDBY=false``) stops with :class:`~streaming.learning.fencing.LeaseLost` (exit 1),
writing no checkpoint, once it lost every spec it held.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from features.definitions import load_views
from features.errors import FeaturesError
from streaming.clients import kafka_consumer, registry_redis, registry_writer
from streaming.errors import MissingKey
from streaming.learning.core import LearnerCore
from streaming.learning.deadletters import DeadLetterSink, KafkaSink
from streaming.learning.fencing import LeaseLost
from streaming.learning.leases import Leases, RedisLeases
from streaming.learning.registry import Registry
from streaming.learning.router import Offsets, TopicRoles
from streaming.learning.shards import Shard
from streaming.learning.spec import ModelSpec
from streaming.logs import get_logger
from streaming.runtime.learner_metrics import LearnerMetrics
from streaming.runtime.learner_session import Learner, offsets_of, started
from streaming.runtime.lease_keeper import LeaseKeeper, Turn
from streaming.settings import Settings
from streaming.tracking import Tracker, TrackerStats, tracker_for

__all__ = ["KafkaTail", "Learner", "LearnerWorker", "offsets_of", "started"]

log = get_logger("rivulet.learn")


class KafkaTail:
    """The live learner's log (a :class:`~streaming.learning.loop.RecordLog`): every partition of
    ``topics``, each from ``start(topic, partition)`` (the position its models' checkpoints name), tailed:
    a partition is exhausted while it is read to its high watermark, and the log never finishes."""

    def __init__(
        self, consumer: KafkaConsumer, topics: Sequence[str], start: Callable[[str, int], int]
    ) -> None:
        self.consumer = consumer
        self._ends: dict[TopicPartition, int] | None = None
        self.tps = [
            TopicPartition(x, p) for x in topics for p in sorted(consumer.partitions_for_topic(x) or [])
        ]
        consumer.assign(self.tps)
        for tp in self.tps:
            consumer.seek(tp, start(tp.topic, tp.partition))

    def assigned(self) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in self.tps]

    def poll(self) -> list[Any]:
        self._ends = None  # what the broker holds now is asked again after each poll (see exhausted)
        return [r for records in self.consumer.poll(timeout_ms=100).values() for r in records]

    def exhausted(self, key: tuple[str, int]) -> bool:
        """Read to the end the broker held *after* the last poll. The consumer's high watermark alone is
        that of the partition's last fetch: a partition whose records were buffered was left out of the
        consumer's next fetches while the others' went on, so its watermark could be older than records
        just fetched from the others; read to it, it counted as exhausted while the broker held earlier
        records for it, and the merge let the others' later records go first: an order no clean run has
        (models that differed from one after a takeover, or under load)."""
        tp = TopicPartition(*key)
        high = self.consumer.highwater(tp)
        position = self.consumer.position(tp)
        if high is None or position < high:
            return False
        if self._ends is None:  # once per poll: every partition's end, asked after the records held
            try:  # briefly: the loop must turn for the leases
                self._ends = self.consumer.end_offsets(self.tps, timeout_ms=1_000)
            except KafkaError as exc:  # a broker failing over: the partition may still deliver, wait
                log.warning("end offsets not known: the merge waits", error=str(exc))
                self._ends = {}
        end = self._ends.get(tp)
        return end is not None and position >= end

    def finished(self) -> bool:
        return False  # a tail: more may come

    def throttle(self, sizes: Mapping[tuple[str, int], int]) -> None:
        pass  # the live learner keeps up with its log


class LearnerWorker:
    """The learner on Kafka: one process, the single writer of the models it holds. See the module
    docstring. ``shard``: the specs that are its own (default ``settings.learner_shard``, else all);
    ``standby``: take orphans and stay after losing every spec (default ``settings.learner_standby``)."""

    def __init__(
        self,
        settings: Settings,
        specs: Sequence[ModelSpec],
        *,
        registry: Registry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sink: DeadLetterSink | None = None,
        leases: Leases | None = None,
        shard: Shard | None = None,
        standby: bool | None = None,
        tracker: Tracker | None = None,
        metrics: LearnerMetrics | None = None,
    ) -> None:
        registry = registry or registry_writer(settings)
        if registry.signer_id is None:
            raise MissingKey("RIVULET_SIGNING_KEY", "the learner signs every snapshot it writes with it")
        self.settings, self.registry, self.clock = settings, registry, clock
        self.specs = list(specs)
        # model versions to MLflow, off the learning path (None: RIVULET_MLFLOW_TRACKING_URI unset)
        self.tracker = tracker if tracker is not None else tracker_for(settings, registry, self.specs)
        self.roles = TopicRoles(settings.topics.features, settings.topics.labels, settings.topics.predictions)
        self.fingerprints = _fingerprints(settings)
        self.sink: DeadLetterSink = sink if sink is not None else _kafka_sink(settings)
        self.metrics = metrics  # Prometheus (learner_metrics), when served
        if metrics is not None:
            self.sink = metrics.sink(self.sink)
        shard = shard if shard is not None else settings.shard()
        self.standby = settings.learner_standby if standby is None else standby
        leases = leases or RedisLeases(
            registry_redis(settings), settings.redis_prefix, settings.learner_lease_ms
        )
        names = [s.name for s in self.specs]
        own = shard.mine(names) if shard is not None else None
        self.leases = LeaseKeeper(leases, registry, names, own=own, standby=self.standby, clock=clock)
        # the current session (before run: every spec, fresh, restored by nobody)
        self.session = self._session(self.specs)
        self._stop = False
        self._changes = Turn()  # what ends the current session
        self.lost: dict[str, str] = {}  # spec -> why, every spec this worker lost (for LeaseLost)

    # what tests and tools read of the current session
    @property
    def core(self) -> LearnerCore:
        return self.session.core

    @property
    def offsets(self) -> dict[str, Offsets]:
        return self.session.offsets

    @property
    def rejected(self) -> list[str]:
        return self.session.rejected

    def checkpoint(self) -> dict[str, int]:
        return self.session.checkpoint()

    def mlflow_stats(self) -> TrackerStats | None:
        """What the MLflow tracker logged and could not (None: not tracking)."""
        return self.tracker.stats() if self.tracker is not None else None

    def _session(self, specs: Sequence[ModelSpec]) -> Learner:
        session = Learner(
            specs,
            self.registry,
            self.roles,
            fingerprints=self.fingerprints,
            clock=self.clock,
            sink=self.sink,
            listener=self.tracker,
        )
        session.on_lost = self._lost
        if self.metrics is not None:
            self.metrics.watch(session)
        return session

    def _lost(self, spec: str, why: str) -> None:
        """A write of ``spec`` was refused in the session: its lease goes, the session ends."""
        self.leases.release(spec)
        self._changes.lost[spec] = why

    def _start_offset(self, topic: str, partition: int) -> int:
        return min(
            (self.offsets.get(m, {}).get(topic, {}).get(partition, 0) for m in self.core.models), default=0
        )

    # ------------------------------------------------------------------ the loop

    def run(
        self, *, max_idle_s: float | None = None, install_signals: bool = True, heartbeat: Path | None = None
    ) -> None:
        """Consume until stopped (SIGTERM/SIGINT), or until ``max_idle_s`` passes without records.
        ``heartbeat``: a file touched every few seconds while the loop turns (for health checks)."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        clean = False
        if self.tracker is not None:
            self.tracker.start()
        try:
            self._serve(max_idle_s, heartbeat)
            clean = True
        finally:
            try:
                self.leases.release_all()  # only those still ours: a standby takes over at once
            finally:
                try:
                    self._close_sink(clean)
                finally:
                    if self.tracker is not None:
                        self.tracker.close(self.settings.mlflow_flush_s)
                        log.info("mlflow", **self.tracker.stats().as_dict())

    def _serve(self, max_idle_s: float | None, heartbeat: Path | None) -> None:
        """Sessions, one per set of specs held; standing by while none is."""
        beat = self.clock() - 10.0
        while not self._stop:
            now = self.clock()
            self._apply(self.leases.turn(now))
            if self.leases.held:
                held = [s for s in self.specs if s.name in self.leases.held]
                if self._run(held, max_idle_s, heartbeat):
                    return  # idle past max_idle_s
                continue
            if heartbeat is not None and now - beat >= 2.0:
                heartbeat.touch()
                beat = now
            self.leases.sleep(self.leases.poll_s)

    def _apply(self, turn: Turn) -> None:
        """A turn outside a session: what was lost is already dropped; nothing to give back but leases."""
        for spec, why in turn.lost.items():
            self.lost[spec] = why
        for spec in turn.give_back:
            self.leases.release(spec)  # held between sessions: nothing learned of it since its restore
        self._fail_if_gone()

    def _fail_if_gone(self) -> None:
        if not self.standby and self.lost and not self.leases.held:
            raise LeaseLost(sorted(self.lost), "; ".join(self.lost[s] for s in sorted(self.lost)))

    def _run(self, specs: list[ModelSpec], max_idle_s: float | None, heartbeat: Path | None) -> bool:
        """One session of ``specs``: restored, consumed until stopped, idle (True) or the specs held change;
        then checkpointed (never while an exception propagates) and, if so, leases given back."""
        self.session = self._session(specs)
        self._changes = Turn()
        log.info("learning", specs=[s.name for s in specs])
        self.session.restore()
        self._check_leases(self.clock())  # a long restore must not let the leases lapse
        consumer = kafka_consumer(self.settings, client_id="rivulet-learner")
        clean = idle = False
        try:
            t = self.settings.topics
            tail = KafkaTail(consumer, [t.features, t.labels, t.predictions], self._start_offset)
            self._check_leases(self.clock())
            idle = self._consume(tail, max_idle_s, heartbeat)
            clean = True
        finally:
            try:
                if clean:  # stopped or regrouping, not failed: an exception leaves the last checkpoint
                    self.session.checkpoint()
            finally:
                consumer.close()
        for spec in self._changes.give_back:
            if spec not in self.session.lost:
                self.leases.release(spec)
                log.info("lease given back to the learner whose own spec it is", spec=spec)
        return idle

    def _consume(self, tail: KafkaTail, max_idle_s: float | None, heartbeat: Path | None) -> bool:
        merge = self.session.merge_loop(tail)
        last_record = self.clock()
        beat = last_record - 10.0
        metrics = self.metrics
        if metrics is not None:
            metrics.start(tail)
        while not self._stop:
            progressed = False
            began = time.perf_counter()
            done = []
            for rec in merge.round():
                self.session.process(rec)
                done.append(rec)
                progressed = True
            if metrics is not None:
                metrics.processed(done, time.perf_counter() - began)
                metrics.observe(self.session, tail)
            now = self.clock()
            if heartbeat is not None and now - beat >= 2.0:
                heartbeat.touch()
                beat = now
            if progressed:
                last_record = now
            self._check_leases(now)
            if self.session.due(now) and not self._changes:
                self.session.checkpoint()
                self._check_leases(now)
            if self._changes:
                return False  # a new session, for the specs now held
            if max_idle_s is not None and now - last_record > max_idle_s and not merge.buffered():
                return True
        return False

    def _check_leases(self, now: float) -> None:
        """Renew when due. A spec lost is written no more at once; none left (not a standby):
        :class:`LeaseLost`, no checkpoint."""
        turn = self.leases.tick(now)
        for spec, why in turn.lost.items():
            self.session.lose(spec, why)  # tells _lost: recorded in _changes
        self._changes.taken += turn.taken
        self._changes.give_back += turn.give_back
        self.lost.update(self._changes.lost)
        self._fail_if_gone()

    def _close_sink(self, clean: bool) -> None:
        close = getattr(self.sink, "close", None)
        if close is None:
            return
        try:
            close()
        except Exception:
            if clean:
                raise
            log.exception("dead letters not all delivered while stopping on an error")

    def stop(self) -> None:
        self._stop = True


def _kafka_sink(settings: Settings) -> KafkaSink:
    from streaming.ingest.producer import Producer

    # the producer's max_request_size, less room for the record's own framing
    limit = max(settings.max_event_bytes + 4096, 1_048_576) - 1_024
    return KafkaSink(Producer(settings), settings.topics.dead_letters, limit)


def _fingerprints(settings: Settings) -> dict[str, str]:
    try:
        return {v.name: v.fingerprint() for v in load_views(settings.features_module)}
    except FeaturesError:
        return {}
