"""One model's learning state and how it predicts: what a checkpoint pickles (:class:`ModelState`), and the
pure helpers the learner core, serving and replay share (:func:`predict`, :func:`select_inputs`).

The record flow that drives these states lives in :mod:`streaming.learning.core`, which re-exports every
public name here (``from streaming.learning.core import ModelState`` keeps working).

>>> from river import linear_model, metrics
>>> from streaming.learning.spec import ModelSpec
>>> spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
>>> state = new_state(spec, "lr")
>>> state.classifier, state.wants_proba, state.wants_label, state.n_learned
(True, False, True, 0)
>>> predict(state, select_inputs({"x": 1.0, "s": "text"}, None))
(False, {False: 0.5, True: 0.5})
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from river import base, compose, drift, metrics, utils

from streaming.learning.clock import MedianClock
from streaming.learning.domain import in_domain
from streaming.learning.evidence import Decision, Evidence
from streaming.learning.spec import ModelSpec

__all__ = [
    "MAX_CLASSES",
    "MAX_FEATURES",
    "NUMBER",
    "STRING",
    "DriftEvent",
    "ModelState",
    "Pending",
    "Prediction",
    "Recent",
    "cost",
    "finite",
    "kind_of",
    "new_state",
    "predict",
    "probabilities",
    "score",
    "select_inputs",
]


@dataclass(slots=True)
class Prediction:
    model: str
    key: str
    label: Any
    proba: dict[Any, float] | None


@dataclass(frozen=True, slots=True)
class DriftEvent:
    model: str
    detector: str  # "loss" or "feature:<name>"
    ts: int
    n_learned: int
    position: Any = None  # the adapter's source position (topic, partition, offset) of the record


@dataclass
class Pending:
    x: dict[str, Any]
    label: Any
    proba: dict[Any, float] | None
    ts: int


@dataclass
class Recent:
    """The most recent keys, bounded: membership test plus insertion order for eviction."""

    order: deque[str] = field(default_factory=deque)
    keys: set[str] = field(default_factory=set)

    def add(self, key: str, bound: int) -> None:
        order = self.order
        order.append(key)
        self.keys.add(key)
        if len(order) > bound:
            self.keys.discard(order.popleft())

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    # the set is derived from the order: pickling only the order keeps snapshots independent of the set's
    # hash-table layout (which differs between processes and between a set built and one unpickled)
    def __getstate__(self) -> dict[str, Any]:
        return {"order": list(self.order)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.order = deque(state["order"])
        self.keys = set(self.order)


@dataclass
class ModelState:
    """Everything that defines one model's learning so far; picklable, so it is what a checkpoint holds."""

    name: str
    spec: str
    task: str
    model: base.Estimator
    metrics: list[metrics.base.Metric]
    rolling: list[utils.Rolling]
    loss_detector: Any
    feature_detectors: dict[str, Any]
    features: tuple[str, ...] | None
    classifier: bool = True
    wants_proba: bool = True  # some metric takes probabilities
    wants_label: bool = True  # some metric takes labels
    label_from_proba: bool = False  # predict_one is River's default (argmax of predict_proba_one): derive it
    last_ts: int | None = None  # event time of the latest record learned
    loss_sum: float = 0.0  # loss since the last drift (to tell a worse model from a better one)
    loss_n: int = 0
    scoring: list[tuple[Any, bool]] = field(default_factory=list)  # (metric, takes probabilities)
    pending: dict[str, Pending] = field(default_factory=dict)
    pending_values: int = 0  # what the pending predictions hold, in values (see ``_cost``)
    early: dict[str, tuple[Any, int]] = field(
        default_factory=dict
    )  # labels held for their record: (label, ts)
    seen: Recent = field(default_factory=lambda: Recent())  # records already predicted
    learned: Recent = field(default_factory=lambda: Recent())  # keys already learned
    drifts: list[DriftEvent] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> records rejected for this model
    # or "quarantined": it raised in learn_one and stopped (see ``quarantine``); or "retired" (``role``)
    status: str = "learning"
    # what the model has taken so far, so that a record cannot change it (see ``LearnerCore.admits``): the
    # classes learned by a multiclass model without declared classes (in the order learned; the first fixes
    # their type), and the features it has taken (whether each was a string; see ``LearnerCore._inputs``)
    classes: dict[Any, None] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)  # feature learned -> the kind it was learned as
    clock: MedianClock = field(default_factory=lambda: MedianClock())  # the time that ages pending entries
    quarantine: str | None = None  # why it was quarantined
    # the champion/challenger lifecycle of a spec with a promotion policy (streaming.learning.core): the
    # model's role ("champion", "challenger", "probation": a former champion shadowing the one that replaced
    # it, "retired": no longer learning), the paired evidence of a challenger against the champion (or of a
    # former champion against its successor), and the decisions it took part in (the latest KEPT)
    role: str = "champion"
    evidence: Evidence | None = None
    decisions: list[Decision] = field(default_factory=list)
    scheduled_at: int | None = None  # a champion: the event time its last scheduled challenger started
    # records it gave no prediction on, their label to come: paired as such (LearnerCore._abstained)
    abstained: dict[str, None] = field(default_factory=dict)
    # a champion of a policy with warm_records or warm_ms: the last records it learned, (inputs, label,
    # event time), oldest first
    recent_xy: deque[tuple[dict[str, Any], Any, int]] | None = None
    # the hand controls applied to its spec: id -> the stream time it applied at (the latest CONTROLS_KEPT)
    controls: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "predicted",
                "learned",
                "pending",
                "expired",
                "duplicate_records",
                "duplicate_labels",
                "unknown_labels",
                "early_labels",
                "drifts",
            ),
            0,
        )
    )

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("early", {})  # snapshots written before labels could be held
        self.__dict__.setdefault("rejected", {})  # ... and before records were rejected
        self.__dict__.setdefault("status", "learning")
        self.__dict__.setdefault("quarantine")
        self.__dict__.setdefault("classes", {})  # ... and before classes and feature kinds were tracked
        self.__dict__.setdefault("kinds", {})
        self.__dict__.setdefault("clock", MedianClock())
        # ... and before the champion/challenger lifecycle (a challenger was named <spec>~<ts>: any model that
        # is not the spec's own)
        if "role" not in self.__dict__:
            name, spec = self.__dict__.get("name", ""), self.__dict__.get("spec")
            self.role = "champion" if name == spec or (spec is None and "~" not in name) else "challenger"
        self.__dict__.setdefault("evidence", None)
        self.__dict__.setdefault("decisions", [])
        self.__dict__.setdefault("scheduled_at", None)
        self.__dict__.setdefault("abstained", {})
        self.__dict__.setdefault("recent_xy", None)
        self.__dict__.setdefault("controls", {})
        self.__dict__.setdefault(
            "pending_values", sum(cost(p.x, self.features is not None) for p in self.pending.values())
        )
        self.counters.setdefault("early_labels", 0)

    @property
    def n_learned(self) -> int:
        return self.counters["learned"]

    @property
    def quarantined(self) -> bool:
        return self.status == "quarantined"

    def expire(self, now: int, max_count: int, max_age_ms: int, max_values: int) -> None:
        """Drop the oldest pending predictions while they are more than ``max_count``, hold more than
        ``max_values`` values (:func:`cost`) or the oldest is older than ``max_age_ms`` before ``now``
        (each counted ``expired``)."""
        pending = self.pending
        horizon = now - max_age_ms
        while pending:
            oldest = next(iter(pending))
            if (
                len(pending) <= max_count
                and self.pending_values <= max_values
                and pending[oldest].ts >= horizon
            ):
                return
            self.pending_values -= cost(pending.pop(oldest).x, self.features is not None)
            self.counters["expired"] += 1

    def expire_early(self, now: int, max_count: int, max_age_ms: int) -> None:
        """Drop the oldest held labels the same way (their record never came: counted ``unknown_labels``)."""
        early = self.early
        horizon = now - max_age_ms
        while early:
            oldest = next(iter(early))
            if len(early) <= max_count and early[oldest][1] >= horizon:
                break
            del early[oldest]
            self.counters["unknown_labels"] += 1
        self.counters["early_labels"] = len(early)

    def metric_values(self) -> dict[str, float]:
        out = {type(m).__name__: float(m.get()) for m in self.metrics}
        out.update({f"rolling_{type(r.obj).__name__}": float(r.obj.get()) for r in self.rolling})
        return out


_NUMBERS = (int, float)
MAX_CLASSES = 1_000  # classes a multiclass model without declared classes may learn
MAX_FEATURES = 10_000  # distinct features a model may take
NUMBER, STRING = 1, 2  # ModelState.kinds: a feature learned as a number or as a string


def kind_of(value: Any) -> int:
    """The kind a feature's value is learned as (:data:`STRING` or :data:`NUMBER`).

    >>> kind_of("a") == STRING, kind_of(1.5) == NUMBER
    (True, True)
    """
    return STRING if type(value) is str else NUMBER


def cost(x: dict[str, Any], declared: bool = True) -> int:
    """What a pending prediction holds, counted in values: one for the entry, one per value, and one more
    per 64 characters of a string (a declared text feature of 900 kB held 100,000 times is 90 GB; a model
    without declared features takes numbers only)."""
    n = len(x) + 1
    if declared:
        for v in x.values():
            if type(v) is str:
                n += len(v) >> 6
    return n


def probabilities(proba: Mapping[Any, Any]) -> bool:
    """Probabilities the metrics can take: finite numbers (a model whose weights overflowed gives NaN)."""
    try:
        return math.isfinite(sum(proba.values()))
    except TypeError:
        return False


def finite(v: Any) -> bool:
    """A regression prediction the metrics can take: a number in the numeric domain (None: no prediction
    yet). Beyond it, the square of its error in ``MSE`` (or a drift detector) overflows."""
    return v is None or (_number(v) and in_domain(v))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)  # numpy scalars and other subclasses


def select_inputs(features: Mapping[str, Any], names: tuple[str, ...] | None) -> dict[str, Any]:
    """The model's inputs: the named features (or every number), without nulls. A vector of numbers only is
    returned as it is, not copied: River models do not modify their inputs."""
    if names is None:
        numbers = _NUMBERS
        for v in features.values():
            if type(v) not in numbers:
                return {k: v for k, v in features.items() if type(v) in numbers or _number(v)}
        return features if type(features) is dict else dict(features)  # all numbers: as it is
    return {k: features[k] for k in names if features.get(k) is not None}


# the update of River's classification metrics kept in a confusion matrix (Accuracy, F1...): the matrix's own,
# one call less; and its undoing, which River's Rolling calls when the window is full
_CM_UPDATE = metrics.base.ClassificationMetric.update
_CM_REVERT = metrics.base.ClassificationMetric.revert
_Rolling = utils.Rolling


def score(scoring: list[tuple[Any, bool]], y: Any, label_pred: Any, proba: Any) -> None:
    """Update each metric of ``scoring`` (:attr:`ModelState.scoring`: overall and rolling) with one
    prediction, as River's progressive validation does: the probabilities for a metric that takes them,
    else the label; no prediction (``None``, or no probabilities), no score. Exactly ``metric.update(y,
    prediction)``, with River's calls unrolled where they only pass the arguments on: a metric kept in a
    confusion matrix updates the matrix, and a rolling metric (River's ``Rolling``) reverts the window's
    oldest pair and appends the new one itself, as ``Rolling.update`` does.

    >>> from river import metrics, utils
    >>> overall, rolling = metrics.Accuracy(), utils.Rolling(metrics.Accuracy, window_size=2)
    >>> for y, p in [(True, True), (True, False), (False, False)]:
    ...     score([(overall, False), (rolling, False)], y, p, None)
    >>> overall.get(), rolling.get(), list(rolling.window)
    (0.6666666666666666, 0.5, [((True, False), {}), ((False, False), {})])
    """
    has_proba = bool(proba)
    has_label = label_pred is not None
    for m, wants_proba in scoring:
        if wants_proba:
            if not has_proba:
                continue
            value = proba
        elif has_label:
            value = label_pred
        else:
            continue
        kind = type(m)
        if kind is _Rolling:
            window, obj = m.window, m.obj
            cls = type(obj)
            target = obj.cm if cls.update is _CM_UPDATE and cls.revert is _CM_REVERT else obj
            if len(window) == m._window_size:
                old = window[0]
                target.revert(*old[0], **old[1])
            target.update(y, value)
            window.append(((y, value), {}))
        elif kind.update is _CM_UPDATE:
            m.cm.update(y, value)
        else:
            m.update(y, value)


def _label_from_proba(model: Any) -> bool:
    """The model's label is the argmax of its probabilities, exactly as its ``predict_one`` computes it
    (River's default ``Classifier.predict_one``; a pipeline transforms the same way for both calls unless
    it learns during prediction), so one ``predict_proba_one`` call gives both."""
    final = model
    if isinstance(model, compose.Pipeline):
        if compose.Pipeline._LEARN_UNSUPERVISED_DURING_PREDICT:
            return False
        final = list(model.steps.values())[-1]
    return isinstance(final, base.Classifier) and type(final).predict_one is base.Classifier.predict_one


def _wants_proba(metric: Any) -> bool:
    return not getattr(metric, "requires_labels", True)


def predict(
    state: ModelState, x: dict[str, Any], *, serving: bool = False
) -> tuple[Any, dict[Any, float] | None]:
    """What the metrics need, from the model's own methods, as River's progressive validation calls them:
    ``predict_one`` when a metric takes labels, ``predict_proba_one`` when one takes probabilities (then the
    label for the drift detector's 0/1 loss is the most probable class). ``serving``: both, always."""
    model: Any = state.model
    if not state.classifier:
        return model.predict_one(x), None
    if state.label_from_proba:
        proba = model.predict_proba_one(x)
        return (max(proba, key=proba.get) if proba else None), proba
    proba = model.predict_proba_one(x) if state.wants_proba or serving else None
    if state.wants_label or serving:
        return model.predict_one(x), proba
    return (max(proba, key=proba.get) if proba else None), proba


def new_state(spec: ModelSpec, name: str) -> ModelState:
    """A fresh state for ``spec``'s model under ``name`` (the spec's own name, or a challenger's)."""
    ms = spec.new_metrics()
    detector = spec.drift.detector or drift.ADWIN
    model = spec.new_model()
    rolling = [utils.Rolling(m, window_size=spec.rolling_window) for m in spec.metric_factories()]
    return ModelState(
        name=name,
        spec=spec.name,
        task=spec.task,
        model=model,
        metrics=ms,
        rolling=rolling,
        loss_detector=detector(),
        feature_detectors={f: detector() for f in spec.drift.features},
        features=spec.features,
        classifier=isinstance(model, base.Classifier),
        wants_proba=any(_wants_proba(m) for m in ms),
        wants_label=any(not _wants_proba(m) for m in ms),
        label_from_proba=_label_from_proba(model),
        scoring=[(m, _wants_proba(m)) for m in ms] + [(r, _wants_proba(r.obj)) for r in rolling],
    )
