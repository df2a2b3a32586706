"""The learner worker: features and labels topics in, signed checkpoints tied to offsets out.

One process is the single writer of its models. It assigns itself every partition of the features,
labels and predictions topics (no consumer group: offsets live in the checkpoints, not in Kafka), merges
them in a deterministic order (:mod:`streaming.learning.merge`) and hands each record to the pure
:class:`~streaming.learning.core.LearnerCore`.

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
(a signal, ``max_idle_s``), never while an exception propagates: the state may be the one that failed.

One writer per model (:mod:`streaming.learning.fencing`): the worker takes a lease per spec before it
restores anything (a standby waits while another learner holds it, then takes over from the registry as a
restart does) and renews it. A spec whose lease is lost (a renewal refused, or a write refused with
:class:`~streaming.learning.fencing.Fenced`) is stopped: nothing more of it is written; when the learner
holds no spec any more it stops with :class:`~streaming.learning.fencing.LeaseLost` (exit 1), writing no
checkpoint.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from features.definitions import load_views
from features.errors import FeaturesError
from streaming.clients import kafka_consumer, registry_writer, sync_redis
from streaming.errors import MissingKey
from streaming.learning.core import LearnerCore, ModelState
from streaming.learning.deadletters import DeadLetterSink, KafkaSink, MemorySink
from streaming.learning.evidence import Decision, decision_record
from streaming.learning.fencing import Fenced, LeaseLost, spec_of
from streaming.learning.header import Base, CheckpointHeader, HeaderDrift
from streaming.learning.labels import taken_by_any
from streaming.learning.leases import Leases, RedisLeases
from streaming.learning.loop import MergeLoop, RecordLog
from streaming.learning.merge import Positioned
from streaming.learning.registry import NoValidVersion, Registry
from streaming.learning.router import Offsets, Router, TopicRoles
from streaming.learning.spec import ModelSpec
from streaming.logs import get_logger
from streaming.runtime.lease_keeper import LeaseKeeper
from streaming.settings import Settings

__all__ = ["KafkaTail", "Learner", "LearnerWorker", "offsets_of"]

log = get_logger("rivulet.learn")


class Learner:
    """The learner without its transport: models restored from the registry, records routed to the core,
    checkpoints (with offsets, order journal and a monitoring sample) written to the registry. The Kafka
    worker below and the embedded demo both drive one."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        registry: Registry,
        roles: TopicRoles,
        *,
        fingerprints: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sink: DeadLetterSink | None = None,
    ) -> None:
        self.specs = list(specs)
        self.core = LearnerCore(self.specs)
        self.core.on_quarantine = self._quarantined
        self.core.on_decision = self._decided
        self._decisions: list[Decision] = []  # taken since the last checkpoint (written with it)
        self.registry = registry
        self.clock = clock
        self.sink: DeadLetterSink = sink if sink is not None else MemorySink()
        self.router = Router(self.core, roles, sink=self.sink, keyring=registry.keyring)  # controls: its keys
        self.fingerprints = fingerprints or {}
        self._since_checkpoint = 0
        self._last_checkpoint = clock()
        self._last_sample: dict[str, tuple[float, int, int]] = {}  # model -> (time, learned, drifts)
        self.rejected: list[str] = []
        self._retired: set[str] = set()  # retired models whose last version is written
        self.lost: dict[str, str] = {}  # spec -> why: another learner owns it, nothing more of it is written

    @property
    def offsets(self) -> dict[str, Offsets]:
        return self.router.offsets

    def merge_loop(self, log: RecordLog) -> MergeLoop:
        """``log``'s records in the learner's order (:mod:`streaming.learning.loop`): at equal times a label
        goes first (as in River's simulate_qa, answers due by now are revealed before the next question is
        asked), then features, then predictions; a label no model's task takes is merged at once."""
        roles = self.router.roles
        ranks = {roles.labels: 0, roles.features: 1, roles.predictions: 2}
        return MergeLoop(log, ranks, label_ok=taken_by_any(self.specs))

    # ------------------------------------------------------------------ recovery

    def restore(self) -> None:
        """Each model from its newest valid checkpoint (refused ones are logged and skipped)."""
        names = {s.name for s in self.specs}
        challengers = [n for n in self.registry.names() if n.split("~")[0] in names and n not in names]
        # in the order they started, as in the core that never stopped (the registry sorts names as strings:
        # 'm~1000' before 'm~900'); the core retires the first as the oldest and pairs in this order
        challengers.sort(key=started)
        for name in [*[s.name for s in self.specs], *challengers]:
            if name not in names and self._retired_version(name):  # a retired challenger: nothing to do
                self._retired.add(name)  # (but its retention: see _forget_retired)
                self.core.gone.add(name)  # its name is never reused
                continue
            try:
                opened, rejected = self.registry.load_latest(name)
            except NoValidVersion as exc:
                if exc.rejected:
                    self.rejected += exc.rejected
                    log.error("no valid checkpoint", model=name, refused=exc.rejected)
                continue
            self.rejected += rejected
            for reason in rejected:
                log.error("checkpoint refused, using an older one", model=name, reason=reason)
            state: ModelState = opened.state
            self.core.models[name] = state
            if state.status == "retired":
                self._retired.add(name)
            header = CheckpointHeader.of(opened.header).require("offsets")  # positions are never guessed
            self.router.start(name, header.offsets, header.version)
            # the next monitoring sample counts from here: the restored drifts were reported already
            self._last_sample[name] = (time.time(), state.n_learned, state.counters["drifts"])
        for decision in self.core.reconcile():  # a crash between two models' versions of one checkpoint
            log.error("lifecycle reconciled after a restart", spec=decision.spec, model=decision.model)

    def _retired_version(self, name: str) -> bool:
        """Whether the current version of ``name`` (its verified header, not its snapshot) is of a retired
        model: a challenger that retired learns nothing more, so a restart does not load it (they add up,
        one per drift or schedule)."""
        current = next((v for v in self.registry.versions(name) if v.current), None)
        return current is not None and CheckpointHeader.of(current.header).status == "retired"

    def process(self, rec: Positioned) -> None:
        self._since_checkpoint += 1
        self.router.process(rec)
        if self._since_checkpoint >= self.specs[0].checkpoint.every_records:  # every N records exactly
            self.checkpoint()

    def due(self, now: float) -> bool:
        """A checkpoint is due by time (records are counted in :meth:`process`)."""
        return (
            self._since_checkpoint > 0
            and now - self._last_checkpoint >= self.specs[0].checkpoint.every_seconds
        )

    # ------------------------------------------------------------------ checkpoints

    def _quarantined(self, name: str, why: str) -> None:
        """Said once: an error in the log, and a monitoring sample with the status (no metrics: a gap in
        the curves) in the model's history, where the dashboard and the API read it."""
        log.error(
            "model quarantined: it stops learning, its last good version keeps serving", model=name, why=why
        )
        if spec_of(name) in self.lost:
            return
        sample: dict[str, Any] = {
            "t": time.time(),
            "version": self.registry.current_version(name),
            "metrics": {},
        }
        try:
            self.registry.record(name, {**sample, "status": "quarantined", "quarantine": why[:500]})
        except Fenced as exc:
            self.lose(spec_of(name), str(exc))

    def lose(self, spec: str, why: str) -> None:
        """Another learner owns ``spec`` now: nothing more of its models is written (the core still computes
        them, unsaved). Said once, as an error."""
        if spec in self.lost:
            return
        self.lost[spec] = why
        self.registry.release(spec)
        log.error(
            "lease lost: another learner owns this spec now; this learner writes nothing more of it",
            spec=spec,
            why=why,
        )

    def _decided(self, decision: Decision) -> None:
        log.info(
            f"lifecycle: {decision.kind}",
            spec=decision.spec,
            model=decision.model,
            champion=decision.champion,
            why=decision.why,
            position=decision.position,
        )
        self._decisions.append(decision)

    def _record_decisions(self) -> None:
        """Before the models' versions: the decisions taken since the last checkpoint. A crash after this
        point and before the versions takes the same decisions again on the same records after the restart
        (the restored states are those of before them), and recording one again replaces it (by its id). A
        crash between the versions and the decisions, the other order, lost them for good (the restored
        states were those after them): the crash drill caught it."""
        now = time.time()
        for d in self._decisions:
            if d.spec in self.lost:
                continue
            try:
                self.registry.record_decision(d.spec, {**decision_record(d), "saved_at": now})
            except Fenced as exc:
                self.lose(d.spec, str(exc))
        self._decisions.clear()

    def _publish_lifecycle(self) -> None:
        """After the models' versions: each spec's champion pointer where it moved (serving follows it once
        the champion's version is there)."""
        for spec in self.specs:
            if spec.promotion is None or spec.name in self.lost:
                continue
            champion = self.core.champion(spec.name)
            if champion is not None and self.registry.champion(spec.name) != champion.name:
                try:
                    self.registry.set_champion(spec.name, champion.name)
                except Fenced as exc:
                    self.lose(spec.name, str(exc))

    def checkpoint(self) -> dict[str, int]:
        """Save every model that moved since the last checkpoint (a quarantined one is not saved: its last
        good version stays current); returns the new version numbers. Dead letters are flushed first."""
        saved: dict[str, int] = {}
        if self._since_checkpoint == 0:
            return saved
        self.sink.flush()  # the letters of every rejected record are durable before the positions move on
        self._record_decisions()
        saved_at = time.time()
        # the champions last: a crash between two models' versions then leaves no challenger older than its
        # champion. A champion restored from an older version meets its records again alone, and a
        # challenger it started there exists already; the other way round, a challenger started since the
        # champion's last version (its decision written) was lost, and never started again
        for name, state in sorted(self.core.models.items(), key=lambda item: item[1].role == "champion"):
            spec = self.core.specs[state.spec]
            if state.quarantined or name in self._retired or spec.name in self.lost:
                continue
            base = self.router.bases.get(name, {"version": None, "offsets": {}})
            header = CheckpointHeader(
                offsets=self.offsets.get(name, {}),
                # how to rebuild this version: from the base (a version, or a fresh model) at these
                # positions, the records in this order
                base=Base(base["version"], base["offsets"]),
                journal=self.router.journals[name].to_header() if name in self.router.journals else None,
                metrics=state.metric_values(),
                counters=state.counters,
                rejected=state.rejected,  # reason -> records rejected for this model (dead letters)
                n_learned=state.n_learned,
                last_learned_ts=state.last_ts,
                saved_at=saved_at,
                spec=spec.name,
                view=spec.view,
                feature_hash=self.fingerprints.get(spec.view),
                drifts=tuple(
                    HeaderDrift(d.detector, d.ts, d.n_learned, d.position) for d in state.drifts[-10:]
                ),
                classes=spec.classes,  # the API checks labels against them
                status=state.status if state.status == "retired" else None,
                role=state.role if spec.promotion is not None else None,
            )
            try:
                saved[name] = self.registry.save(name, state, header.to_dict(), keep=spec.checkpoint.keep)
                self.router.rebase(name, saved[name])
                self.registry.record(name, self._sample(name, state, saved[name], saved_at))
            except Fenced as exc:
                self.lose(spec.name, str(exc))
                continue
            if state.status == "retired":  # its last version says so; it learns nothing more
                self._retired.add(name)
        self._publish_lifecycle()
        self._forget_retired()
        self._since_checkpoint = 0
        self._last_checkpoint = self.clock()
        log.info("checkpoint", versions=saved)
        return saved

    def _forget_retired(self) -> None:
        """Retention: each spec keeps the versions of its newest ``keep_retired`` retired challengers; older
        ones leave the registry (their last version is written, their decisions stay with the spec's) and
        the learner's memory. One retires per drift or schedule: without this they added up for ever."""
        for spec in self.specs:
            policy = spec.promotion
            if policy is None or spec.name in self.lost:
                continue
            mine = sorted(
                (n for n in self._retired if n.partition("~")[0] == spec.name and "~" in n), key=started
            )
            for name in mine[: max(0, len(mine) - policy.keep_retired)]:
                try:
                    self.registry.delete(name)
                except Fenced as exc:
                    self.lose(spec.name, str(exc))
                    break
                self._retired.discard(name)
                self.core.models.pop(name, None)
                self.core.gone.add(name)
                self.router.forget(name)
                log.info(
                    "retired challenger deleted (retention)", model=name, keep_retired=policy.keep_retired
                )

    def _sample(self, name: str, state: ModelState, version: int, now: float) -> dict[str, Any]:
        """What the dashboard plots: metrics, learning rate, freshness (how old the newest learned event
        is when its checkpoint is written) and the drifts since the previous sample."""
        learned, drifts = state.n_learned, state.counters["drifts"]
        then, learned_then, drifts_then = self._last_sample.get(name, (now, learned, 0))
        self._last_sample[name] = (now, learned, drifts)
        return {
            "t": now,
            "version": version,
            "learned": learned,
            "rate": (learned - learned_then) / (now - then) if now > then else None,
            "metrics": state.metric_values() if learned else {},  # none yet: a gap in the curves
            "freshness_ms": int(now * 1000) - state.last_ts if state.last_ts is not None else None,
            "pending": state.counters["pending"],
            "drifts": _drift_list(state, min(drifts - drifts_then, 100)),
        }


class KafkaTail:
    """The live learner's log (a :class:`~streaming.learning.loop.RecordLog`): every partition of
    ``topics``, each from ``start(topic, partition)`` (the position its models' checkpoints name), tailed:
    a partition is exhausted while it is read to its high watermark, and the log never finishes."""

    def __init__(
        self, consumer: KafkaConsumer, topics: Sequence[str], start: Callable[[str, int], int]
    ) -> None:
        self.consumer = consumer
        self.tps = [
            TopicPartition(x, p) for x in topics for p in sorted(consumer.partitions_for_topic(x) or [])
        ]
        consumer.assign(self.tps)
        for tp in self.tps:
            consumer.seek(tp, start(tp.topic, tp.partition))

    def assigned(self) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in self.tps]

    def poll(self) -> list[Any]:
        return [r for records in self.consumer.poll(timeout_ms=100).values() for r in records]

    def exhausted(self, key: tuple[str, int]) -> bool:
        tp = TopicPartition(*key)
        high = self.consumer.highwater(tp)
        return high is not None and self.consumer.position(tp) >= high

    def finished(self) -> bool:
        return False  # a tail: more may come

    def throttle(self, sizes: Mapping[tuple[str, int], int]) -> None:
        pass  # the live learner keeps up with its log


class LearnerWorker(Learner):
    """The learner on Kafka: one process, the single writer of its models. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        specs: Sequence[ModelSpec],
        *,
        registry: Registry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sink: DeadLetterSink | None = None,
        leases: Leases | None = None,
    ) -> None:
        registry = registry or registry_writer(settings)
        if registry.signer_id is None:
            raise MissingKey("RIVULET_SIGNING_KEY", "the learner signs every snapshot it writes with it")
        self.settings = settings
        super().__init__(
            specs,
            registry,
            TopicRoles(settings.topics.features, settings.topics.labels, settings.topics.predictions),
            fingerprints=_fingerprints(settings),
            clock=clock,
            sink=sink if sink is not None else _kafka_sink(settings),
        )
        self._stop = False
        leases = leases or RedisLeases(sync_redis(settings), settings.redis_prefix, settings.learner_lease_ms)
        self.leases = LeaseKeeper(leases, registry, [s.name for s in self.specs], clock=clock)

    def lose(self, spec: str, why: str) -> None:
        super().lose(spec, why)
        self.leases.release(spec)

    def _check_leases(self, now: float) -> None:
        """Renew when due; a spec whose lease is lost stops; none left: :class:`LeaseLost`."""
        for spec in self.leases.tick(now):
            holder = self.leases.leases.holder(spec)
            self.lose(spec, f"its renewal was refused, the lease is {holder or 'free'}")
        if self.lost and all(s.name in self.lost for s in self.specs):
            raise LeaseLost(sorted(self.lost), "; ".join(self.lost[s] for s in sorted(self.lost)))

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
        if not self.leases.acquire(lambda: self._stop):
            self._close_sink(True)
            return  # stopped while standing by: nothing was written
        try:
            self._run(max_idle_s, heartbeat)
        finally:
            self.leases.release_all()  # only those still ours: a standby takes over at once

    def _run(self, max_idle_s: float | None, heartbeat: Path | None) -> None:
        self.restore()
        consumer = kafka_consumer(self.settings, client_id="rivulet-learner")
        clean = False
        try:
            t = self.settings.topics
            tail = KafkaTail(consumer, [t.features, t.labels, t.predictions], self._start_offset)
            self._consume(tail, max_idle_s, heartbeat)
            clean = True
        finally:
            try:
                if clean:  # stopped, not failed: an exception leaves the last checkpoint as it is
                    self.checkpoint()
            finally:
                consumer.close()
                self._close_sink(clean)

    def _consume(self, tail: KafkaTail, max_idle_s: float | None, heartbeat: Path | None) -> None:
        merge = self.merge_loop(tail)
        last_record = self.clock()
        beat = last_record - 10.0
        while not self._stop:
            progressed = False
            for rec in merge.round():
                self.process(rec)
                progressed = True
            now = self.clock()
            if heartbeat is not None and now - beat >= 2.0:
                heartbeat.touch()
                beat = now
            if progressed:
                last_record = now
            self._check_leases(now)
            if self.due(now):
                self.checkpoint()
                self._check_leases(now)
            if max_idle_s is not None and now - last_record > max_idle_s and not merge.buffered():
                return

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


def _drift_list(state: ModelState, n: int) -> list[list[Any]]:
    return [[d.detector, d.ts, d.n_learned, list(d.position or ())] for d in state.drifts[-n:]] if n else []


def offsets_of(header: dict[str, Any]) -> Offsets:
    """A checkpoint header's positions with integer partitions (JSON keys are strings); HeaderError if they
    are not positions (see :class:`~streaming.learning.header.CheckpointHeader`)."""
    return CheckpointHeader.of(header).require("offsets").offsets


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


def started(name: str) -> tuple[int, str, int]:
    """A challenger's place among its spec's: by the event time in its name ``<spec>~<ts>`` (a name without
    one last, as a string)."""
    spec, _, ts = name.rpartition("~")
    try:
        return (0, spec, int(ts))
    except ValueError:
        return (1, name, 0)
