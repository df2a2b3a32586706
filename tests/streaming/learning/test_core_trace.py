"""The learner core's observable behaviour on one busy stream, pinned: every prediction (model, label,
probabilities), every ``on_label`` outcome, every rejection, drift, quarantine and lifecycle decision as the
callbacks tell them, and each model's final counters, metrics (overall and rolling), evidence, pending and
held entries. A change that only makes the core faster must leave all of it exactly as it was (issue 14's
throughput work): the trace's digest below was taken with the core before that work (c8eab27, the same at
4a782da).

The stream mixes what the core's bookkeeping handles: labels inline, late (three records on), early (before
their record) and never; re-sent records and labels; labels for unknown ids; pending predictions expiring
by count; a string feature that turns into a number (``feature_type``) and labels of the wrong type
(``label_type``) for a multiclass model without declared classes; a model that raises in predict
(``model_error``, abstentions in the paired evidence) and one that raises in ``learn_one`` (quarantine); a
concept change at record 2,000 (loss drifts, feature drifts, challengers started by drift, by hand and on
a schedule, warm starts, promotions, probation); and ``only`` naming a subset of the models.

When the digest changes on purpose (the core's behaviour was meant to change), print :func:`trace` of the
old and the new code and compare them line by line before taking the new digest.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
from river import base, linear_model, metrics, preprocessing, tree

from streaming.learning.core import LearnerCore
from streaming.learning.evidence import PromotionPolicy
from streaming.learning.spec import DriftPolicy, ModelSpec
from tests.support.drifting import agrawal_drift

pytestmark = pytest.mark.unit

N = 4_000
DIGEST = "329c81db809e06139fffcafafaf183c15ff3fa778bce58bc21a15e874267b3ff"


def scaled_lr() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def scaled_linear() -> Any:
    return preprocessing.StandardScaler() | linear_model.LinearRegression()


class Brittle(base.Classifier):
    """Predicts the classes' frequencies; raises in predict on every 37th record it is shown and in
    ``learn_one`` once it has learned ``learn_fails_after`` records (never if 0)."""

    def __init__(self, learn_fails_after: int = 0) -> None:
        self.learn_fails_after = learn_fails_after
        self.counts: dict[Any, int] = {}
        self.shown = 0

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        if self.learn_fails_after and sum(self.counts.values()) >= self.learn_fails_after:
            raise ValueError("cannot learn any more")
        self.counts[y] = self.counts.get(y, 0) + 1

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        self.shown += 1
        if self.shown % 37 == 0:
            raise OverflowError("cannot predict this one")
        total = sum(self.counts.values())
        return {c: n / total for c, n in self.counts.items()} if total else {}


def brittle() -> Brittle:
    return Brittle()


def brittle_learner() -> Brittle:
    return Brittle(learn_fails_after=1_500)


BINARY = ("tree", "lr", "brittle")
SPECS = [
    ModelSpec(
        "tree",
        "binary",
        "v",
        tree.HoeffdingTreeClassifier,
        metrics=(metrics.Accuracy, metrics.LogLoss),
        rolling_window=200,
        drift=DriftPolicy(reaction="challenger", features=("salary",), max_challengers=2),
        promotion=PromotionPolicy(
            min_labelled=100, confidence=0.95, horizon=500, probation=300, warm_records=150, every_records=900
        ),
    ),
    ModelSpec("lr", "binary", "v", scaled_lr, drift=DriftPolicy(reaction="challenger", max_challengers=2)),
    ModelSpec(
        "brittle",
        "binary",
        "v",
        brittle_learner,
        metrics=(metrics.Accuracy,),
        drift=DriftPolicy(reaction="alert"),
        promotion=PromotionPolicy(min_labelled=50, probation=100, challenger=brittle),
    ),
    ModelSpec(
        "mc",
        "multiclass",
        "v",
        tree.HoeffdingTreeClassifier,
        metrics=(metrics.Accuracy,),
        features=("age", "elevel", "car", "city"),
        rolling_window=50,
    ),
    ModelSpec(
        "reg",
        "regression",
        "v",
        scaled_linear,
        metrics=(metrics.MAE, metrics.RMSE),
        promotion=PromotionPolicy(min_labelled=50, warm_ms=3_000),
    ),
]
CITIES = ("Oslo", "Bergen", "Tromsø", "Bodø")


def _labels(i: int, x: dict[str, Any], y: bool) -> dict[str, Any]:
    """The record's label for each task (the multiclass one of the wrong type now and then)."""
    mc: Any = f"e{x['elevel']}" if i % 53 != 26 else int(x["elevel"])
    return {"binary": y, "multiclass": mc, "regression": round(x["salary"] / 1_000 + x["age"] / 10, 3)}


def trace() -> list[str]:
    """The core's observable behaviour on the stream, one line per event (module docstring)."""
    out: list[str] = []
    core = LearnerCore(SPECS, max_pending=60, max_pending_age_ms=5_000)
    core.on_reject = lambda model, reason, detail: out.append(f"reject {model} {reason.value} {detail}")
    core.on_drift = lambda d: out.append(f"drift {d}")
    core.on_quarantine = lambda model, why: out.append(f"quarantine {model} {why}")
    core.on_decision = lambda d: out.append(f"decision {d}")
    rng = random.Random(14)
    data = []
    for i, (x, y) in enumerate(agrawal_drift(seed=3, position=2_000)):
        if i == N:
            break
        x = dict(x)
        x["city"] = CITIES[i % 4] if i % 211 != 105 else 17.0
        if i >= 2_500:  # a feature's drift
            x["salary"] *= 3
        data.append((x, y))

    def groups() -> dict[str, list[str]]:
        tasks = {s.name: s.task for s in SPECS}
        by: dict[str, list[str]] = {}
        for name, st in core.models.items():
            by.setdefault(tasks[st.spec], []).append(name)
        return by

    def record(key: str, ts: int, x: dict[str, Any], labels: dict[str, Any] | None, only: Any = None) -> None:
        for task, names in groups().items():
            chosen = names if only is None else [n for n in names if n in only]
            label = None if labels is None else labels[task]
            for p in core.on_record(key, ts, x, label, ("f", 0, ts), only=chosen):
                proba = sorted(p.proba.items(), key=repr) if p.proba is not None else None
                out.append(f"predict {p.model} {p.key} {p.label!r} {proba!r}")

    def label(key: str, labels: dict[str, Any], ts: int) -> None:
        for task, names in groups().items():
            outcome = core.on_label(key, labels[task], ts, ("l", 0, ts), only=names)
            out.append(f"label {key} {task} {outcome}")

    later: list[tuple[int, str, dict[str, Any]]] = []
    for i, (x, y) in enumerate(data):
        key, ts = f"e{i}", 10 * i + rng.randrange(0, 15)
        labels = _labels(i, x, y)
        mode = i % 10
        while later and later[0][0] <= i:
            _, k, ls = later.pop(0)
            label(k, ls, ts)
        if mode == 8:  # its label first
            label(key, labels, ts)
        if mode < 5:
            record(key, ts, x, labels, only=("tree", "lr", "mc", "reg") if i % 7 == 0 else None)
        else:
            record(key, ts, x, None)
        if mode in (5, 6, 7):
            later.append((i + 3, key, labels))
        if i % 97 == 0 and i:  # a record sent again (inline label, or none)
            j = i - rng.randrange(1, 80)
            record(f"e{j}", ts, data[j][0], _labels(j, *data[j]) if j % 10 < 5 else None)
        if i % 89 == 0 and i:  # a label sent again, and one for an id never seen
            j = i - rng.randrange(1, 40)
            label(f"e{j}", _labels(j, *data[j]), ts)
            label(f"nobody{i}", labels, ts)
        if i == 600:
            out.append(f"by hand {core.challenge('reg', ts, ('f', 0, ts))}")
            out.append(f"by hand {core.challenge('brittle', ts, ('f', 0, ts))}")
    for name, st in core.models.items():
        evidence = st.evidence.summary(core.specs[st.spec].promotion) if st.evidence is not None else None
        out.append(
            f"model {name} {st.status} {st.role} {st.quarantine} {st.counters} {st.rejected} "
            f"{st.metric_values()} {evidence} {st.last_ts} {st.loss_sum!r} {st.loss_n} {st.kinds} "
            f"{list(st.classes)} {list(st.pending)} {st.pending_values} {st.early} {list(st.abstained)} "
            f"{list(st.seen.order)} {list(st.learned.order)} {len(st.recent_xy or ())} {st.scheduled_at}"
        )
    out.append(f"decisions {list(core.decisions)}")
    return out


def test_the_core_behaves_exactly_as_it_did_on_a_busy_stream() -> None:
    lines = trace()
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    # the stream reaches what it is meant to (module docstring)
    text = "\n".join(lines)
    for what in (
        "reject mc feature_type",
        "reject mc label_type",
        "reject brittle~",
        "quarantine brittle",
        "decision Decision(kind='promotion'",
        "decision Decision(kind='challenger', spec='tree'",
        "drift DriftEvent(model='tree', detector='feature:salary'",
        "drift DriftEvent(model='lr', detector='loss'",
        "label e",
    ):
        assert what in text, what
    for outcome in ("learned", "duplicate", "unknown", "held", "rejected"):
        assert f" {outcome}\n" in text, outcome
    finals = [line for line in lines if line.startswith("model ")]
    assert any("'expired': 0" not in line for line in finals)
    assert any("'duplicate_records': 0" not in line for line in finals)
    assert digest == DIGEST, digest
