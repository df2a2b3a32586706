"""The learner core: for each record predict, remember the prediction until its label is known, then update
the metrics and learn. Pure: no I/O, no clock (times are event times; the adapter passes wall time in only
to decide when to checkpoint).

Per model, in this order, exactly as River's ``evaluate.progressive_val_score`` does:

1. predict on the record's features (``predict_proba_one`` for metrics that take probabilities,
   ``predict_one`` for metrics that take labels);
2. when the label is known (inline on the event, or later by ``event_id`` / ``prediction_id``): update
   every metric with the prediction made in 1 (unless the model could not predict yet: ``None`` or no
   probabilities), then ``learn_one`` on the features as they were in 1.

Pending predictions are bounded in count, in the feature values they hold, and in age (event time, as told
by a clock that one record stamped far in the future cannot move: :mod:`streaming.learning.clock`); expired
ones, duplicate labels and labels for unknown ids are counted, not errors. A label can also come *before*
its record (the feature worker lags behind the labels topic): it is held, bounded the same way, and joined
when the record comes, which then predicts and learns at once; a held label whose record never comes is
counted as unknown when it expires.

Fault isolation: the core is the last line of defence (the router validates records before they get here,
see :mod:`streaming.learning.router`). A model that raises while predicting on a record has that record
rejected for it (reason ``model_error``, counted in ``ModelState.rejected`` and told to ``on_reject``); a
regression prediction that is not a finite number is rejected the same way. A model that raises in
``learn_one`` (or while its metrics take the label) is *quarantined*: its status says why, it no longer
predicts or learns, and the adapter stops checkpointing it, so its last good version keeps serving; the
other models go on. Quarantine rather than rollback: River's ``learn_one`` is not transactional (a failure
half-way leaves a half-updated model), and undoing it would need a deep copy of every model before every
record; a failure inside ``learn_one`` on a validated record is a defect of the model or its spec, which
retrying from a copy would only meet again. A restart resumes from the last good checkpoint and meets the
same record again, deterministically, so no version is ever written from the failing state.

Drift detectors (ADWIN by default) watch each model's loss (0/1
error, or absolute error for regression) and chosen input features; a drift is recorded with its time and
position and, if the spec says so, starts a fresh challenger model from that point.

>>> from river import linear_model, metrics
>>> from streaming.learning.spec import ModelSpec
>>> spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
>>> core = LearnerCore([spec])
>>> _ = core.on_record("e1", 1_000, {"x": 1.0}, label=True)
>>> _ = core.on_record("e2", 2_000, {"x": 0.5})
>>> core.on_label("e2", True, 3_000)
'learned'
>>> core.models["lr"].n_learned, core.models["lr"].counters["pending"]
(2, 0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from math import isfinite
from typing import Any

import cython

from streaming.learning import drifts
from streaming.learning.controls import Control, ControlRefused, checked_for
from streaming.learning.errors import Reason
from streaming.learning.evidence import Decision, Evidence, PromotionPolicy, paired_loss
from streaming.learning.spec import ModelSpec
from streaming.learning.state import (
    MAX_CLASSES,
    MAX_FEATURES,
    STRING,
    DriftEvent,
    ModelState,
    Pending,
    Prediction,
    Recent,
    cost,
    finite,
    kind_of,
    new_state,
    predict,
    probabilities,
    score,
    select_inputs,
)

__all__ = [
    "MAX_CLASSES",
    "MAX_DECISIONS",
    "MAX_FEATURES",
    "Decision",
    "DriftEvent",
    "LearnerCore",
    "ModelState",
    "Prediction",
    "predict",
    "select_inputs",
]

# the C types of ModelState, Recent and Evidence for the hot path's typed locals where this module is
# compiled (cimported in core.pxd: reading a field is reading a struct member); the classes where it is not
if not cython.compiled:
    CState, CRecent, CEvidence = ModelState, Recent, Evidence
    c_score, c_loss_drifted = score, drifts.loss_drifted  # C calls where compiled (core.pxd)
# snapshots pickled before the per-model state moved to streaming.learning.state name these classes here
_Pending, _Recent = Pending, Recent
MAX_DECISIONS = 1_000  # the lifecycle decisions the core keeps (each model keeps its own latest too)
CONTROLS_KEPT = 1_000  # the ids of hand controls each model of a spec remembers (applied once)


class LearnerCore:
    """Learns one or more models (a champion and challengers) side by side on one stream of records."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        *,
        max_pending: int = 100_000,
        max_pending_age_ms: int = 86_400_000,
        max_pending_values: int = 10_000_000,
    ) -> None:
        self.specs = {s.name: s for s in specs}
        self.on_drift: Callable[[DriftEvent], None] | None = None  # told of every drift as it is detected
        # told of every record rejected for a model (model, reason, detail), and of every quarantine
        self.on_reject: Callable[[str, Reason, str], None] | None = None
        self.on_quarantine: Callable[[str, str], None] | None = None
        self.max_pending = max_pending
        self.max_pending_age_ms = max_pending_age_ms
        # the pending predictions' feature values, at most (about a gigabyte): 100,000 of them holding the
        # 10,000 features a model may take would be some 100 GB
        self.max_pending_values = max_pending_values
        self.models: dict[str, ModelState] = {s.name: self.new_state(s, s.name) for s in specs}
        # the champion/challenger lifecycle (module docstring): every decision, the latest MAX_DECISIONS,
        # and who is told of each as it is taken
        self.decisions: deque[Decision] = deque(maxlen=MAX_DECISIONS)
        # names of retired models that are not in ``models`` (a restart does not load them, retention drops
        # them): never given to a new challenger, as by a core that kept them
        self.gone: set[str] = set()
        self.on_decision: Callable[[Decision], None] | None = None
        # this call's models that learned (or gave no prediction): name -> (state, label, prediction)
        self._round: dict[str, tuple[ModelState, Any, Any]] = {}

    def new_state(self, spec: ModelSpec, name: str) -> ModelState:
        return new_state(spec, name)

    # ------------------------------------------------------------------ records and labels

    @cython.locals(state=CState, seen=CRecent, seen_keys=set, counters=dict)
    def on_record(
        self,
        key: str,
        ts: int,
        features: Mapping[str, Any],
        label: Any = None,
        position: Any = None,
        only: Sequence[str] | None = None,
        predictions: bool = True,
    ) -> list[Prediction]:
        """Predict for every model (or those named in ``only``); learn at once if ``label`` is given, else
        keep the prediction pending. Returns the predictions (none with ``predictions=False``: the router
        has no use for them, and they cost an object per model and record)."""
        if self._round:  # left by a call that raised half-way (the router quarantines its models)
            self._round = {}
        out: list[Prediction] = []
        max_pending = self.max_pending
        shared: dict[str, Any] | None = None  # the inputs of the models without declared features (all alike)
        for state in self._selected(only):
            seen = state.seen
            if (
                seen is None
            ):  # read as a C struct below where compiled (state.pxd): None would crash the process
                raise TypeError(f"model {state.name!r}: its seen is a Recent, not None")
            seen_keys = seen.keys
            if key in seen_keys:
                state.counters["duplicate_records"] += 1  # e.g. re-emitted by a feature worker after a crash
                continue
            names = state.features
            if names is None:
                if shared is None:
                    shared = select_inputs(features, None)
                x = shared
            else:
                x = select_inputs(features, names)
            # checked once per model and record (:meth:`_takes`); the model learns the record below (a label
            # given, or held) before its kinds can change, so learning needs no second check
            known = state.kinds.keys() >= x.keys()
            if not ((names is None and known) or self._inputs(state, x)):
                continue
            if state.classifier and state.label_from_proba:  # _predict's common case, inline
                try:
                    proba = state.model.predict_proba_one(x)  # type: ignore[attr-defined]
                    label_pred = max(proba, key=proba.get) if proba else None
                except Exception as exc:  # River raised on this record: rejected for this model only
                    self.reject(state, Reason.MODEL_ERROR, f"{type(exc).__name__} in predict: {exc}")
                    self._abstained(state, key, label)
                    continue
                if proba:  # probabilities(), inline
                    try:
                        bad = not isfinite(sum(proba.values()))
                    except TypeError:
                        bad = True
                    if bad:
                        self.reject(
                            state, Reason.MODEL_ERROR, f"the model predicted probabilities {proba!r:.200}"
                        )
                        self._abstained(state, key, label)
                        continue
            else:
                predicted = self._predict(state, x)
                if predicted is None:
                    self._abstained(state, key, label)
                    continue
                label_pred, proba = predicted
            order = seen.order  # Recent.add, inline
            order.append(key)
            seen_keys.add(key)
            if len(order) > max_pending:
                seen_keys.discard(order.popleft())
            counters = state.counters
            counters["predicted"] += 1
            if predictions:
                out.append(Prediction(state.name, key, label_pred, proba))
            if state.feature_detectors:
                for detector in drifts.drifted_features(state, x):
                    self._drift(state, detector, ts, position)
            if label is not None and not state.early:  # the common case of _settle: learn now
                if state.task != "multiclass" or self.admits(state, label):
                    self._learn(state, key, x, label, label_pred, proba, ts, position, False, known)
                else:  # the label is rejected, the record waits for one the model can take
                    self._settle(state, key, x, None, label_pred, proba, ts, position, known)
            else:
                self._settle(state, key, x, label, label_pred, proba, ts, position, known)
        if self._round:
            self._pair(ts, position)
        return out

    @cython.locals(state=CState)
    def _abstained(self, state: ModelState, key: str, label: Any) -> None:
        """A model of a spec with a promotion policy that gave no prediction on a record (it raised, or
        predicted what the metrics cannot take): the paired evidence counts it as a record without a
        prediction (the larger loss) when the label is known, now or later; left out, a challenger that
        fails on every record it would lose was compared on the others only, and promoted."""
        if state is None:  # read as a C struct below where compiled (state.pxd): None would crash the process
            raise TypeError("a ModelState, not None")
        if self.specs[state.spec].promotion is None or state.role not in (
            "champion",
            "challenger",
            "probation",
        ):
            return
        if label is not None:
            self._round.setdefault(state.name, (state, label, None))
            return
        abstained = state.abstained
        abstained[key] = None
        while len(abstained) > self.max_pending:
            del abstained[next(iter(abstained))]

    @cython.locals(state=CState)
    def _predict(self, state: ModelState, x: dict[str, Any]) -> tuple[Any, dict[Any, float] | None] | None:
        """The model's prediction on ``x`` (:func:`~streaming.learning.state.predict`), or ``None`` when it
        raised or predicted what the metrics cannot take: the record is rejected for this model only."""
        if state is None:  # read as a C struct below where compiled (state.pxd): None would crash the process
            raise TypeError("a ModelState, not None")
        try:
            label_pred, proba = predict(state, x)
        except Exception as exc:  # River raised on this record: rejected for this model only
            self.reject(state, Reason.MODEL_ERROR, f"{type(exc).__name__} in predict: {exc}")
            return None
        if state.classifier:
            if proba and not probabilities(proba):
                self.reject(state, Reason.MODEL_ERROR, f"the model predicted probabilities {proba!r:.200}")
                return None
        elif not finite(label_pred):
            self.reject(state, Reason.MODEL_ERROR, f"the model predicted {label_pred!r}")
            return None
        return label_pred, proba

    @cython.locals(state=CState)
    def _settle(
        self,
        state: ModelState,
        key: str,
        x: dict[str, Any],
        label: Any,
        label_pred: Any,
        proba: dict[Any, float] | None,
        ts: int,
        position: Any,
        known: bool | None = None,
    ) -> None:
        """After a prediction: learn at once if the label is known (given, or held for this record), else
        keep the prediction pending; then bound what is pending and held. ``known``: the record's inputs
        were checked (:meth:`_takes`) and are all features the model has learned (or not)."""
        if state is None:  # read as a C struct below where compiled (state.pxd): None would crash the process
            raise TypeError("a ModelState, not None")
        y, learn_ts = label, ts
        early = state.early
        if y is None and early:
            held = early.pop(key, None)
            if held is not None:  # its label came first
                y, learn_ts = held[0], max(ts, held[1])
                state.counters["early_labels"] = len(early)
        if y is not None and not self.admits(state, y):
            y = None  # the label is rejected, the record waits for one the model can take
        # the time that ages what is pending: taken only when something is (a record learned at once with its
        # label costs nothing more)
        now = None
        if y is not None:
            self._learn(state, key, x, y, label_pred, proba, learn_ts, position, known=known)
        else:
            now = state.clock.observe(ts, self.max_pending_age_ms)
            declared = state.features is not None
            old = state.pending.pop(key, None)  # a record redelivered after its key left ``seen``
            if old is not None:
                state.pending_values -= cost(old.x, declared)
            state.pending[key] = Pending(x, label_pred, proba, ts)
            state.pending_values += cost(x, declared)
            state.expire(now, self.max_pending, self.max_pending_age_ms, self.max_pending_values)
            state.counters["pending"] = len(state.pending)
        if early:
            if now is None:
                now = state.clock.observe(ts, self.max_pending_age_ms)
            state.expire_early(now, self.max_pending, self.max_pending_age_ms)

    def _selected(self, only: Sequence[str] | None) -> list[ModelState]:
        models = self.models
        if only is None:
            return [st for st in models.values() if st.status == "learning"]
        return [st for name in only if (st := models.get(name)) is not None and st.status == "learning"]

    @cython.locals(state=CState)
    def reject(self, state: ModelState, reason: Reason, detail: str) -> None:
        """Count a record rejected for ``state``'s model and tell ``on_reject``."""
        if state is None:  # read as a C struct below where compiled (state.pxd): None would crash the process
            raise TypeError("a ModelState, not None")
        rejected = state.rejected
        rejected[reason.value] = rejected.get(reason.value, 0) + 1
        if self.on_reject is not None:
            self.on_reject(state.name, reason, detail)

    @cython.locals(state=CState)
    def admits(self, state: ModelState, label: Any) -> bool:
        """Can the model learn ``label`` (already checked against its task) without changing what it is?
        A multiclass model without declared classes learns classes of one type (the first label's: River
        sorts classes in places, and a string among ints made every later prediction raise), and at most
        :data:`MAX_CLASSES` of them (each costs memory in the model). Otherwise rejected (``label_type``,
        ``label_class``) and ``False``. Only checks: a label is a class of the model once
        :meth:`_learn` has learned it (it can still refuse the record, or learn_one raise)."""
        if state is None:  # read as a C struct below where compiled (state.pxd): None would crash the process
            raise TypeError("a ModelState, not None")
        if state.task != "multiclass" or self.specs[state.spec].classes:
            return True
        classes = state.classes
        if classes:
            first = type(next(iter(classes)))
            if type(label) is not first:
                self.reject(
                    state, Reason.LABEL_TYPE, f"the model learns {first.__name__} classes, got {label!r:.200}"
                )
                return False
            if label in classes:
                return True
            if len(classes) >= MAX_CLASSES:
                self.reject(
                    state, Reason.LABEL_CLASS, f"{label!r:.200} would be class {MAX_CLASSES + 1} of the model"
                )
                return False
        return True  # checks only: the class is registered once learn_one took it (see _learn)

    def _takes(self, state: ModelState, x: dict[str, Any]) -> bool:
        """:meth:`_inputs`, with a fast path: a model without declared features takes a vector of features
        it has all learned (the common case) without a look at each."""
        return (state.features is None and state.kinds.keys() >= x.keys()) or self._inputs(state, x)

    @cython.locals(state=CState)
    def _inputs(self, state: ModelState, x: dict[str, Any]) -> bool:
        """Does the record keep what the model takes as inputs? At most :data:`MAX_FEATURES` distinct
        features learned (a model without declared features takes every number of the vector: a producer
        writing fresh names into each record grew a linear model by as many weights, without bound), and
        each declared feature of the kind the model has learned for it (:meth:`_kind_changed`). Otherwise
        the record is rejected (``malformed_features``, ``feature_type``) before the model sees it, and
        again when a late label comes. Only learning counts (``ModelState.kinds``): a record predicted on
        but never labelled takes no room."""
        if state is None:  # read as a C struct below where compiled (state.pxd): None would crash the process
            raise TypeError("a ModelState, not None")
        kinds = state.kinds
        if state.features is not None and self._kind_changed(state, x):
            return False
        new = sum(1 for name in x if name not in kinds)
        if new and len(kinds) + new > MAX_FEATURES:
            self.reject(
                state,
                Reason.MALFORMED_FEATURES,
                f"{new} features the model has not learned would make more than {MAX_FEATURES}",
            )
            return False
        return True

    @cython.locals(state=CState)
    def _kind_changed(self, state: ModelState, x: dict[str, Any]) -> bool:
        """A declared feature whose value is a string where the model has learned numbers for it, or the
        other way: rejected (``feature_type``), when predicted and again when learned (a late label). A
        Hoeffding tree that took numbers for a feature raises inside ``learn_one`` on a string (a
        quarantine), and each new leaf picks its splitter by the first value it learns, so a feature keeps
        one kind. Only learning decides it (a record predicted but never labelled locks nothing); the
        first labelled record of a new model does (declare the feature's kind upstream, in the view)."""
        if state is None:  # read as a C struct below where compiled (state.pxd): None would crash the process
            raise TypeError("a ModelState, not None")
        kinds = state.kinds
        for name, value in x.items():
            kind = kinds.get(name)
            if kind and kind != kind_of(value):
                want = "strings" if kind == STRING else "numbers"
                self.reject(
                    state, Reason.FEATURE_TYPE, f"{name}: {value!r:.100} where the model learned {want}"
                )
                return True
        return False

    def quarantine(self, state: ModelState, why: str) -> None:
        """Stop ``state``'s model: it no longer predicts or learns (see the module docstring)."""
        state.status, state.quarantine = "quarantined", why
        if self.on_quarantine is not None:
            self.on_quarantine(state.name, why)

    def on_label(
        self, key: str, label: Any, ts: int, position: Any = None, only: Sequence[str] | None = None
    ) -> str:
        """Join a late label to its pending prediction. Returns ``learned``, ``duplicate``, ``unknown`` (its
        record came but its prediction expired), ``held`` (its record has not come yet) or ``rejected``
        (the model cannot take it: :meth:`admits`; the prediction waits on), for the first model; all
        models see the same ids."""
        outcome = "unknown"
        if self._round:  # left by a call that raised half-way
            self._round = {}
        for i, state in enumerate(self._selected(only)):
            p = state.pending.get(key)
            if p is not None and not self.admits(state, label):
                result = "rejected"  # the prediction waits for a label the model can take
            elif p is not None:
                del state.pending[key]
                state.pending_values -= cost(p.x, state.features is not None)
                self._learn(state, key, p.x, label, p.label, p.proba, max(ts, p.ts), position, late=True)
                result = "learned"
            elif key in state.abstained:  # no prediction on its record: paired as such (_abstained)
                del state.abstained[key]
                self._round.setdefault(state.name, (state, label, None))
                result = "rejected"
            elif key in state.learned:
                result = "duplicate"
                state.counters["duplicate_labels"] += 1
            elif key in state.seen:  # its record came and its prediction expired
                result = "unknown"
                state.counters["unknown_labels"] += 1
            else:  # its record has not come yet: hold the label for it
                result = "held"
                if key in state.early:
                    state.counters["duplicate_labels"] += 1
                state.early[key] = (label, ts)
                state.expire_early(
                    state.clock.observe(ts, self.max_pending_age_ms),
                    self.max_pending,
                    self.max_pending_age_ms,
                )
            state.counters["pending"] = len(state.pending)
            if i == 0:
                outcome = result
        if self._round:
            self._pair(ts, position)
        return outcome

    # ------------------------------------------------------------------ internals

    @cython.locals(state=CState, kinds=dict)
    def _learn(
        self,
        state: ModelState,
        key: str,
        x: dict[str, Any],
        y: Any,
        label_pred: Any,
        proba: Any,
        ts: int,
        position: Any,
        late: bool = False,
        known: bool | None = None,
    ) -> None:
        """Score the prediction, learn the record, and what follows (drift, the lifecycle). ``known``: the
        inputs were checked just before (:meth:`_takes`: a record learned as it is predicted) and are all
        features the model has learned, or not; ``None``: checked here (a late label: the model may have
        learned other records since)."""
        if state is None:  # read as a C struct below where compiled (state.pxd): None would crash the process
            raise TypeError("a ModelState, not None")
        kinds = state.kinds
        if known is None:
            if not self._takes(state, x):
                return
            known = kinds.keys() >= x.keys()
        try:
            c_score(state.scoring, y, label_pred, proba)
            state.model.learn_one(x, y)  # type: ignore[attr-defined]
        except Exception as exc:  # the state may be half-updated: stop the model (see the docstring)
            self.quarantine(state, f"{type(exc).__name__} in learn_one on {key!r} at {position}: {exc}")
            self.reject(state, Reason.LEARN_ERROR, f"{type(exc).__name__} in learn_one: {exc}")
            if state.role == "champion":
                self._champion_lost(state, ts, position)
            return
        state.counters["learned"] += 1
        policy = self.specs[state.spec].promotion
        if policy is not None:  # paired with its spec's others (_pair)
            self._round[state.name] = (state, y, label_pred)
        if state.task == "multiclass":  # a class counts (its type, the budget) once it is learned
            state.classes[y] = None  # a dict as an ordered set: a class already there keeps its place
        if not known:
            for name, value in x.items():
                if name not in kinds:  # its first value learned: a declared feature keeps this kind
                    kinds[name] = kind_of(value)
        if late:
            state.learned.add(key, self.max_pending)
        last = state.last_ts
        state.last_ts = ts if last is None or ts > last else last
        if c_loss_drifted(state, y, label_pred):
            self._drift(state, "loss", ts, position)
        if policy is not None and state.role == "champion":
            if policy.warm_records or policy.warm_ms:  # policy.warm, without its call on every record
                warm = policy.warm
                recent = state.recent_xy
                if recent is None or recent.maxlen != warm:
                    recent = state.recent_xy = deque(recent or (), maxlen=warm)
                recent.append((x, y, ts))
                if policy.warm_ms:  # only the last T of event time (the records come in event-time order)
                    while recent and recent[0][2] < ts - policy.warm_ms:
                        recent.popleft()
            if policy.every_records or policy.every_ms:  # a schedule (_scheduled does nothing without)
                self._scheduled(state, policy, ts, position)

    def _drift(self, state: ModelState, detector: str, ts: int, position: Any) -> None:
        """Record a drift, tell ``on_drift``, and if the spec says so start a challenger: on a loss drift of
        any of its models; with a promotion policy, on a drift of the champion only, of its loss or a
        watched feature (the worst challenger retires to make room)."""
        event = drifts.record(state, detector, ts, position)
        if self.on_drift is not None:
            self.on_drift(event)
        spec = self.specs[state.spec]
        if spec.drift.reaction != "challenger":
            return
        if spec.promotion is None:
            if detector != "loss":
                return
            name = f"{spec.name}~{ts}"
            # at most max_challengers beside the champion: labels that flip back and forth (anyone who may
            # send labels can) made a drift, so a new model predicting on every record, every few hundred
            challengers = sum(
                1 for st in self.models.values() if st.spec == spec.name and st.name != spec.name
            )
            if name not in self.models and challengers < spec.drift.max_challengers:
                self.models[name] = self.new_state(spec, name)
            return
        if state.role == "champion":
            self.challenge(spec.name, ts, position, f"drift:{detector}")

    # ------------------------------------------------------------------ champion and challengers

    @cython.locals(st=CState)
    def champion(self, spec: str) -> ModelState | None:
        """The model of ``spec`` that serves: the one whose role is ``champion``."""
        for st in self.models.values():
            if (
                st is None
            ):  # read as a C struct below where compiled (state.pxd): None would crash the process
                raise TypeError("a ModelState, not None")
            if st.spec == spec and st.role == "champion":
                return st
        return None

    def challengers(self, spec: str) -> list[ModelState]:
        return [
            st
            for st in self.models.values()
            if st.spec == spec and st.role == "challenger" and st.status == "learning"
        ]

    def challenge(
        self,
        spec_name: str,
        ts: int,
        position: Any = None,
        why: str = "by hand",
        *,
        model: Callable[[], Any] | None = None,
        warm: int | None = None,
    ) -> str | None:
        """Start a challenger of ``spec_name`` (a spec with a promotion policy) named ``<spec>~<ts>``: fresh,
        or retrained on the champion's last records (``warm_records``; ``warm``: at most this many of them).
        ``model``: its model (default: the policy's ``challenger``, or the spec's own). At
        ``max_challengers``, the oldest of the others retires first (it had the longest to prove itself, and
        a newer one started on later evidence). Its name, or None (none allowed, or the name taken)."""
        spec = self.specs[spec_name]
        limit = spec.drift.max_challengers
        name = f"{spec.name}~{ts}"
        champion = self.champion(spec.name)
        if limit < 1 or name in self.models or name in self.gone or champion is None:
            return None
        running = self.challengers(spec.name)
        if len(running) >= limit:
            self._retire(running[0], champion, ts, position, f"made room for {name}")
        policy = spec.promotion
        if model is None and policy is not None:
            model = policy.challenger
        built = spec if model is None else replace(spec, model=model)
        state = self.new_state(built, name)
        state.role = "challenger"
        state.evidence = Evidence(since={"champion": champion.name})
        warm = self._warm(state, champion, warm)
        self.models[name] = state
        why = f"{why}, warm {warm}" if warm else why
        self._decide(Decision("challenger", spec.name, champion.name, name, ts, position, why), state)
        return name

    def _warm(self, state: ModelState, champion: ModelState, most: int | None = None) -> int:
        """A retrained challenger: ``state``'s model learns the champion's last records (their inputs and
        labels, in order; the last ``most`` of them) before it predicts; its metrics and evidence start
        with the next record. Returns the records learned (a model that raises on one stops there: it
        starts from what it learned)."""
        recent = champion.recent_xy
        if not recent or most == 0:
            return 0
        model: Any = state.model
        kinds = state.kinds
        n = 0
        records = list(recent)
        for x, y, *_ in records if most is None else records[-most:]:
            try:
                model.learn_one(x, y)
            except Exception:  # a fresh model and records the champion took: not expected; not fatal
                break
            n += 1
            for key, value in x.items():
                if key not in kinds:
                    kinds[key] = kind_of(value)
            if state.task == "multiclass":
                state.classes[y] = None
        return n

    def promote(self, name: str, ts: int, position: Any = None, why: str = "by hand") -> Decision:
        """Make the challenger ``name`` its spec's champion now, whatever its evidence (``rivulet models
        promote``): the former champion shadows it on probation, and the policy's test rolls it back if it
        does worse. KeyError: no such model; ValueError: not a running challenger of a spec with a
        promotion policy."""
        st = self.models[name]
        policy = self.specs[st.spec].promotion
        champion = self.champion(st.spec)
        if policy is None or champion is None or st.role != "challenger" or st.status != "learning":
            raise ValueError(f"{name!r} is not a running challenger of a spec with a promotion policy")
        if st.evidence is None:
            st.evidence = Evidence(since={"champion": champion.name})
        return self._promote(policy, champion, st, ts, position, why)

    def retire(self, name: str, ts: int, position: Any = None, why: str = "by hand") -> Decision:
        """Retire the running challenger ``name`` now (it stops learning; its last version stays in the
        registry). KeyError: no such model; ValueError: not a running challenger with a champion."""
        st = self.models[name]
        champion = self.champion(st.spec)
        if champion is None or st.role != "challenger" or st.status != "learning":
            raise ValueError(f"{name!r} is not a running challenger")
        self._retire(st, champion, ts, position, why)
        return self.decisions[-1]

    def apply_control(self, ctl: Control, position: Any = None) -> Decision:
        """A hand control (:mod:`streaming.learning.controls`, its signature checked by the router): a
        challenger started, promoted or retired at this record, as by :meth:`challenge`, :meth:`promote`
        or :meth:`retire`. Each control id is applied once (the spec's models remember the last
        :data:`CONTROLS_KEPT`). ControlRefused: why nothing was done."""
        spec = self.specs.get(ctl.spec)
        if spec is None:
            raise ControlRefused(f"no spec {ctl.spec!r} with a promotion policy in this learner")
        mine = [st for st in self.models.values() if st.spec == ctl.spec]
        if any(ctl.id in st.controls for st in mine):
            raise ControlRefused(f"control {ctl.id!r} was applied already")
        # the ids kept are the latest CONTROLS_KEPT: a control older than all of them may be one of those
        # forgotten (a copy of it at a later offset was applied again after a thousand others)
        kept = max(mine, key=lambda st: len(st.controls), default=None)
        if kept is not None and len(kept.controls) >= CONTROLS_KEPT and ctl.ts <= min(kept.controls.values()):
            raise ControlRefused(f"control {ctl.id!r} is older than every control remembered: maybe applied")
        why = f"by hand (control {ctl.id})"
        # the stream's time where the control sits (the champion's latest event time), not the wall clock it
        # was issued at: decisions are ordered by event time, and a replay of history takes the same ones
        champion = self.champion(spec.name)
        at = champion.last_ts if champion is not None and champion.last_ts is not None else ctl.ts
        model = checked_for(spec, ctl)
        if ctl.action == "challenge":
            taken = self.models.keys() | self.gone
            while f"{spec.name}~{at}" in taken:  # a model of that name exists or existed
                at += 1
            name = self.challenge(spec.name, at, position, why, model=model, warm=ctl.warm)
            if name is None:
                raise ControlRefused("no challenger started (max_challengers is 0)")
            decision = self.decisions[-1]
        else:
            assert ctl.model is not None  # the control checked it
            if ctl.model not in self.models:
                raise ControlRefused(f"no model {ctl.model!r}")
            try:
                if ctl.action == "promote":
                    decision = self.promote(ctl.model, at, position, why)
                else:
                    decision = self.retire(ctl.model, at, position, why)
            except ValueError as exc:
                raise ControlRefused(str(exc)) from None
        for st in self.models.values():
            if st.spec == ctl.spec:
                st.controls[ctl.id] = ctl.ts
                while len(st.controls) > CONTROLS_KEPT:
                    del st.controls[next(iter(st.controls))]
        return decision

    def _scheduled(self, champion: ModelState, policy: PromotionPolicy, ts: int, position: Any) -> None:
        """A challenger on the policy's schedule: every ``every_records`` records the champion learned, or
        once ``every_ms`` of event time passed since the last scheduled one (or the champion's first)."""
        due = bool(policy.every_records) and champion.n_learned % policy.every_records == 0  # type: ignore[operator]
        if policy.every_ms:
            if champion.scheduled_at is None:
                champion.scheduled_at = ts  # the schedule starts with the champion's first record
            elif ts - champion.scheduled_at >= policy.every_ms:
                due = True
        if due:
            champion.scheduled_at = ts
            self.challenge(champion.spec, ts, position, "schedule")

    @cython.locals(st=CState, champion=CState, evidence=CEvidence)
    def _pair(self, ts: int, position: Any) -> None:
        """The paired losses of this call's record (``_round``): each challenger of a spec with a promotion
        policy against its champion, and a former champion on probation against its successor; a
        decision when the evidence is enough (at most one per spec and record)."""
        learned, self._round = self._round, {}
        for spec_name in {st.spec: None for st, _, _ in learned.values()}:
            spec = self.specs.get(spec_name)
            policy = spec.promotion if spec is not None else None
            if policy is None:
                continue
            champion = self.champion(spec_name)
            if champion is None or champion.name not in learned:
                continue
            _, y, champion_pred = learned[champion.name]
            min_labelled, margin = policy.min_labelled, policy.margin
            for st, label, pred in learned.values():
                if st is champion or st.spec != spec_name or st.role not in ("challenger", "probation"):
                    continue
                if label != y:  # not the same label: nothing to compare
                    continue
                evidence = st.evidence
                if evidence is None:  # a challenger from before the lifecycle
                    evidence = st.evidence = Evidence(since={"champion": champion.name})
                if st.task != "regression":  # paired_loss and Evidence.add, inline: the 0/1 errors
                    evidence.n += 1
                    if champion_pred != y:
                        evidence.incumbent_loss += 1.0
                    if pred != y:
                        evidence.candidate_loss += 1.0
                    if evidence.first is None:
                        evidence.first = position
                    evidence.last = position
                else:
                    evidence.add(*paired_loss(st.task, y, champion_pred, pred), position)
                n = evidence.n
                # Evidence.decided, inline (no decision before min_labelled; the bound only once the statistic
                # is positive)
                if (
                    n >= min_labelled
                    and (stat := evidence.incumbent_loss - evidence.candidate_loss - margin * n) > 0.0
                    and stat >= policy.bound(n)
                ):
                    if st.role == "challenger":
                        self._promote(policy, champion, st, ts, position)
                    else:
                        self._roll_back(policy, champion, st, ts, position)
                    break
                if st.role == "probation" and evidence.n >= policy.probation:
                    self._retire(st, champion, ts, position, "its probation passed")

    def _promote(
        self,
        policy: PromotionPolicy,
        champion: ModelState,
        st: ModelState,
        ts: int,
        position: Any,
        why: str = "evidence",
    ) -> Decision:
        """``st`` replaces ``champion``, which shadows it on probation (or retires: no probation); the other
        challengers' evidence starts again against the new champion."""
        assert st.evidence is not None
        decision = Decision(
            "promotion", st.spec, champion.name, st.name, ts, position, why, st.evidence.summary(policy)
        )
        for other in self.models.values():
            if other.spec == st.spec and other.role == "probation":
                self._retire(other, champion, ts, position, f"{st.name} was promoted")
        st.role, st.evidence = "champion", None
        st.recent_xy, champion.recent_xy = champion.recent_xy, None  # the same records: both learned them
        if policy.probation > 0:
            champion.role = "probation"
            champion.evidence = Evidence(since={"champion": st.name})
        else:
            champion.role, champion.status, champion.evidence = "retired", "retired", None
        for other in self.challengers(st.spec):
            other.evidence = Evidence(since={"champion": st.name})
        self._decide(decision, st, champion)
        return decision

    def _roll_back(
        self, policy: PromotionPolicy, champion: ModelState, former: ModelState, ts: int, position: Any
    ) -> None:
        """The former champion ``former`` did better on probation: it serves again, ``champion`` retires."""
        assert former.evidence is not None
        decision = Decision(
            "rollback", former.spec, champion.name, former.name, ts, position, "evidence",
            former.evidence.summary(policy),
        )  # fmt: skip
        former.role, former.evidence = "champion", None
        former.recent_xy, champion.recent_xy = champion.recent_xy, None
        champion.role, champion.status, champion.evidence = "retired", "retired", None
        for other in self.challengers(former.spec):
            other.evidence = Evidence(since={"champion": former.name})
        self._decide(decision, former, champion)

    def _champion_lost(self, champion: ModelState, ts: int, position: Any) -> None:
        """The champion was quarantined: the former champion on probation serves again (a rollback; without
        one, the quarantined champion's last good version serves until a challenger is promoted by hand).
        Every pairing waits for the champion to learn the record: left in place, a quarantined champion
        was never rolled back and no challenger was ever compared again."""
        policy = self.specs[champion.spec].promotion
        if policy is None:
            return
        former = next(
            (
                st
                for st in self.models.values()
                if st.spec == champion.spec and st.role == "probation" and st.status == "learning"
            ),
            None,
        )
        if former is None:
            return
        decision = Decision(
            "rollback", former.spec, champion.name, former.name, ts, position, "the champion was quarantined",
            former.evidence.summary(policy) if former.evidence is not None else None,
        )  # fmt: skip
        former.role, former.evidence = "champion", None
        former.recent_xy, champion.recent_xy = champion.recent_xy, None
        champion.role, champion.evidence = "retired", None  # its status stays "quarantined"
        for other in self.challengers(former.spec):
            other.evidence = Evidence(since={"champion": former.name})
        self._decide(decision, former, champion)

    def reconcile(self) -> list[Decision]:
        """After a restore: one champion per spec with a promotion policy. A checkpoint writes the models
        one by one, so a crash between two of them can leave the former champion's new version (on
        probation) beside the promoted challenger's previous one (still a challenger: no champion at all),
        or a rolled-back model's previous version still a champion (two). No champion: the challenger the
        probation model's evidence names is promoted again (else the probation model serves again). Two or
        more: the one with the latest promotion or rollback serves, the others retire. Returns the
        decisions taken."""
        taken: list[Decision] = []
        for spec in self.specs.values():
            policy = spec.promotion
            if policy is None:
                continue
            mine = [st for st in self.models.values() if st.spec == spec.name]
            ts = max((st.last_ts for st in mine if st.last_ts is not None), default=0)
            champions = [st for st in mine if st.role == "champion"]
            if not champions:
                former = next((st for st in mine if st.role == "probation" and st.status == "learning"), None)
                if former is None:
                    continue
                since = former.evidence.since.get("champion") if former.evidence is not None else None
                st = self.models.get(since) if isinstance(since, str) else None
                if (
                    st is not None
                    and st.spec == spec.name
                    and st.role == "challenger"
                    and st.status == "learning"
                ):
                    st.evidence = st.evidence or Evidence(since={"champion": former.name})
                    former.role = "champion"  # the champion that st replaces (and not a probation to retire)
                    self._promote(policy, former, st, ts, None, "restored: promoted before a crash")
                    taken.append(self.decisions[-1])
                    continue
                former.role, former.evidence = "champion", None
                champions = [former]
            if len(champions) > 1:

                def latest(st: ModelState) -> int:
                    won = [
                        d.ts
                        for d in st.decisions
                        if d.model == st.name and d.kind in ("promotion", "rollback")
                    ]
                    return max(won, default=-(2**63))

                keep = max(champions, key=latest)
                for st in champions:
                    if st is not keep:
                        self._retire(st, keep, ts, None, "restored: a later champion serves")
                        taken.append(self.decisions[-1])
        return taken

    def _retire(self, st: ModelState, champion: ModelState, ts: int, position: Any, why: str) -> None:
        st.role, st.status = "retired", "retired"
        self._decide(Decision("retirement", st.spec, champion.name, st.name, ts, position, why), st)

    def _decide(self, decision: Decision, *states: ModelState) -> None:
        self.decisions.append(decision)
        for st in states:
            st.decisions.append(decision)
            del st.decisions[: -drifts.KEPT]
        if self.on_decision is not None:
            self.on_decision(decision)
