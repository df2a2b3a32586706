"""The learner without its transport: one run of a fixed set of specs (a *session*), from their restore
out of the registry to their last checkpoint.

:class:`Learner` restores each model of its specs from its newest valid checkpoint, hands each record to the
router and the pure :class:`~streaming.learning.core.LearnerCore`, and writes checkpoints (each model's state,
offsets, order journal, metrics, and a monitoring sample) to the registry. The live Kafka worker
(:mod:`streaming.runtime.learner`) runs one session per set of specs it holds the leases of, a new one
whenever that set changes; the embedded demo runs one for its whole life.

A spec this session may no longer write (another learner holds it: :meth:`Learner.lose`) is written no
more; ``on_lost`` tells the session's owner, which drops the spec from its next session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from streaming.learning.core import LearnerCore, ModelState
from streaming.learning.deadletters import DeadLetterSink, MemorySink
from streaming.learning.evidence import Decision, decision_record
from streaming.learning.fencing import Fenced, spec_of
from streaming.learning.header import Base, CheckpointHeader, HeaderDrift
from streaming.learning.labels import taken_by_any
from streaming.learning.loop import MergeLoop, RecordLog
from streaming.learning.merge import Positioned
from streaming.learning.registry import NoValidVersion, Registry
from streaming.learning.router import Offsets, Router, TopicRoles
from streaming.learning.spec import ModelSpec
from streaming.logs import get_logger

__all__ = ["Learner", "VersionsListener", "offsets_of", "started"]

log = get_logger("rivulet.learn")


class VersionsListener(Protocol):
    """Told the versions each checkpoint wrote (model -> version), after the champion pointers moved; it
    must not block (:class:`streaming.tracking.Tracker`: a bounded queue to a thread)."""

    def notify(self, saved: dict[str, int]) -> None: ...


class Learner:
    """The learner without its transport: models restored from the registry, records routed to the core,
    checkpoints (with offsets, order journal and a monitoring sample) written to the registry. The Kafka
    worker (:class:`~streaming.runtime.learner.LearnerWorker`) and the embedded demo both drive one."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        registry: Registry,
        roles: TopicRoles,
        *,
        fingerprints: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sink: DeadLetterSink | None = None,
        listener: VersionsListener | None = None,
    ) -> None:
        self.specs = list(specs)
        self.listener = listener
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
        self.on_lost: Callable[[str, str], None] | None = None  # told once per spec lost (spec, why)
        self.on_saved: Callable[[str, dict[str, Any]], None] | None = None  # (model, monitoring sample)

    @property
    def offsets(self) -> dict[str, Offsets]:
        return self.router.offsets

    @property
    def last_checkpoint(self) -> float:
        """When the last checkpoint was written (the session's start before one), on ``clock``."""
        return self._last_checkpoint

    @property
    def since_checkpoint(self) -> int:
        return self._since_checkpoint

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
                opened, rejected = self.registry.load_latest(name, kind=ModelState)
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
        """Another learner owns ``spec`` now: nothing more of its models is written by this session (the
        worker drops them from its next one: ``on_lost``). Said once, as an error."""
        if spec in self.lost:
            return
        self.lost[spec] = why
        self.registry.release(spec)
        log.error(
            "lease lost: another learner owns this spec now; this learner writes nothing more of it",
            spec=spec,
            why=why,
        )
        if self.on_lost is not None:
            self.on_lost(spec, why)

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
                sample = self._sample(name, state, saved[name], saved_at)
                self.registry.record(name, sample)
                if self.on_saved is not None:
                    self.on_saved(name, sample)
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
        if self.listener is not None and saved:
            self.listener.notify(saved)
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


def _drift_list(state: ModelState, n: int) -> list[list[Any]]:
    return [[d.detector, d.ts, d.n_learned, list(d.position or ())] for d in state.drifts[-n:]] if n else []


def offsets_of(header: dict[str, Any]) -> Offsets:
    """A checkpoint header's positions with integer partitions (JSON keys are strings); HeaderError if they
    are not positions (see :class:`~streaming.learning.header.CheckpointHeader`)."""
    return CheckpointHeader.of(header).require("offsets").offsets


def started(name: str) -> tuple[int, str, int]:
    """A challenger's place among its spec's: by the event time in its name ``<spec>~<ts>`` (a name without
    one last, as a string)."""
    spec, _, ts = name.rpartition("~")
    try:
        return (0, spec, int(ts))
    except ValueError:
        return (1, name, 0)
