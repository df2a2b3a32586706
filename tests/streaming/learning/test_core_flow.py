"""The learner core's record flow, one rule per test, on tiny deterministic models so every count is exact:
duplicates, the drift reactions (``alert`` never starts a challenger; only a loss drift for the worse
does), the bounds on what is pending and held, each outcome of a late label, the per-model state helpers
(:mod:`streaming.learning.state`) and the drift detection (:mod:`streaming.learning.drifts`)."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest
from river import base, linear_model, metrics

from streaming.learning import drifts
from streaming.learning.core import LearnerCore, ModelState
from streaming.learning.errors import Reason
from streaming.learning.spec import DriftPolicy, ModelSpec
from streaming.learning.state import (
    NUMBER,
    STRING,
    Pending,
    Recent,
    cost,
    finite,
    kind_of,
    new_state,
    predict,
    probabilities,
    select_inputs,
)

pytestmark = pytest.mark.unit


class Fixed(base.Classifier):
    """Predicts True at 0.75; keeps what it learned."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any], Any]] = []

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        self.seen.append((dict(x), y))

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        return {True: 0.75, False: 0.25}


class Detector:
    """A drift detector whose answer the test sets: drifts on every update, for the worse or not."""

    def __init__(self, estimation: float = 2.0, drifting: bool = True) -> None:
        self.estimation = estimation
        self.drift_detected = drifting
        self.values: list[float] = []

    def update(self, x: float) -> None:
        self.values.append(x)


def spec(name: str = "m", **kw: Any) -> ModelSpec:
    return ModelSpec(name, "binary", "v", Fixed, metrics=(metrics.Accuracy, metrics.LogLoss), **kw)


def learned(core: LearnerCore, name: str) -> list[tuple[dict[str, Any], Any]]:
    return core.models[name].model.seen  # type: ignore[attr-defined,no-any-return]


# ---------------------------------------------------------------- duplicates and selection


def test_a_duplicate_record_for_one_model_does_not_stop_the_others() -> None:
    core = LearnerCore([spec("a"), spec("b"), spec("c")])
    core.on_record("k", 1, {"x": 1.0}, only=["b"])
    out = core.on_record("k", 2, {"x": 2.0}, label=True)
    assert [p.model for p in out] == ["a", "c"]
    assert {m: st.counters["duplicate_records"] for m, st in core.models.items()} == {"a": 0, "b": 1, "c": 0}
    assert learned(core, "a") == learned(core, "c") == [({"x": 2.0}, True)] and learned(core, "b") == []
    assert core.models["b"].counters["pending"] == 1  # its first prediction still waits for its label


def test_only_selects_models_and_skips_unknown_and_quarantined_ones() -> None:
    core = LearnerCore([spec("a"), spec("b"), spec("c")])
    core.quarantine(core.models["c"], "test")
    assert [p.model for p in core.on_record("k", 1, {"x": 1.0}, only=["c", "zz", "b"])] == ["b"]
    assert [p.model for p in core.on_record("k2", 1, {"x": 1.0})] == ["a", "b"]


def test_a_prediction_carries_the_models_label_and_probabilities() -> None:
    core = LearnerCore([spec("a")])
    (p,) = core.on_record("k", 1, {"x": 1.0})
    assert (p.model, p.key, p.label, p.proba) == ("a", "k", True, {True: 0.75, False: 0.25})


# ---------------------------------------------------------------- drifts


def test_an_alert_records_the_drift_and_starts_no_challenger() -> None:
    core = LearnerCore([spec(drift=DriftPolicy(Detector, reaction="alert"))])
    seen = []
    core.on_drift = seen.append
    core.on_record("k1", 10, {"x": 1.0}, label=False, position=("f", 0, 1))
    assert list(core.models) == ["m"]
    assert [(d.model, d.detector, d.ts, d.n_learned, d.position) for d in seen] == [
        ("m", "loss", 10, 1, ("f", 0, 1))
    ]
    assert core.models["m"].drifts == seen and core.models["m"].counters["drifts"] == 1


def test_a_loss_drift_for_the_worse_starts_challengers_up_to_the_bound() -> None:
    core = LearnerCore([spec(drift=DriftPolicy(Detector, reaction="challenger", max_challengers=2))])
    core.on_record("k1", 10, {"x": 1.0}, label=False)
    assert list(core.models) == ["m", "m~10"]
    fresh = core.models["m~10"]
    assert (fresh.name, fresh.spec, fresh.n_learned, fresh.counters["predicted"]) == ("m~10", "m", 0, 0)
    core.on_record("k2", 20, {"x": 1.0}, label=False)  # m and m~10 drift: one more challenger, then none
    core.on_record("k3", 30, {"x": 1.0}, label=False)
    assert list(core.models) == ["m", "m~10", "m~20"]
    assert core.models["m"].counters["drifts"] == 3


def test_a_drift_for_the_better_is_not_a_drift() -> None:
    better = DriftPolicy(lambda: Detector(estimation=0.0), reaction="challenger")
    core = LearnerCore([spec(drift=better)])
    core.on_record("k1", 10, {"x": 1.0}, label=False)  # loss 1: the window's mean 0 is better
    state = core.models["m"]
    assert state.drifts == [] and list(core.models) == ["m"]
    assert (state.loss_sum, state.loss_n) == (0.0, 0)  # reset at the change all the same


def test_no_change_in_the_loss_keeps_counting_it() -> None:
    core = LearnerCore([spec(drift=DriftPolicy(lambda: Detector(drifting=False)))])
    core.on_record("k1", 10, {"x": 1.0}, label=False)
    core.on_record("k2", 11, {"x": 1.0}, label=True)
    state = core.models["m"]
    assert (state.loss_sum, state.loss_n, state.loss_detector.values) == (1.0, 2, [1.0, 0.0])


def test_a_feature_drift_is_recorded_but_starts_no_challenger() -> None:
    policy = DriftPolicy(lambda: Detector(drifting=True), features=("x", "s"), reaction="challenger")
    core = LearnerCore([spec(drift=policy)])
    core.models["m"].loss_detector = Detector(drifting=False)
    core.on_record("k1", 10, {"x": 3.0, "s": "text"}, position=("f", 0, 4))
    state = core.models["m"]
    assert [(d.detector, d.ts, d.position) for d in state.drifts] == [("feature:x", 10, ("f", 0, 4))]
    assert state.feature_detectors["x"].values == [3.0] and state.feature_detectors["s"].values == []
    assert list(core.models) == ["m"]


def test_the_latest_hundred_drifts_are_kept() -> None:
    core = LearnerCore([spec(drift=DriftPolicy(Detector, reaction="alert"))])
    for i in range(drifts.KEPT + 5):
        core.on_record(f"k{i}", i, {"x": 1.0}, label=True)
    state = core.models["m"]
    assert len(state.drifts) == drifts.KEPT and state.counters["drifts"] == drifts.KEPT + 5
    assert state.drifts[0].ts == 5 and state.drifts[-1].ts == drifts.KEPT + 4


@pytest.mark.parametrize(
    ("task", "y", "pred", "loss"),
    [
        ("binary", True, True, 0.0),
        ("binary", True, False, 1.0),
        ("regression", 3.0, 1.0, 2.0),
        ("regression", 1.0, 3.0, 2.0),
        ("regression", 3.0, None, 0.0),
    ],
)
def test_the_loss_the_detector_watches(task: str, y: Any, pred: Any, loss: float) -> None:
    model = Fixed if task == "binary" else linear_model.LinearRegression
    state = new_state(ModelSpec("m", task, "v", model), "m")  # type: ignore[arg-type]
    assert drifts.loss(state, y, pred) == loss


# ---------------------------------------------------------------- pending and held, bounded


def test_pending_predictions_expire_oldest_first_by_count() -> None:
    core = LearnerCore([spec()], max_pending=3)
    for i in range(5):
        core.on_record(f"k{i}", i, {"x": 1.0})
    state = core.models["m"]
    assert list(state.pending) == ["k2", "k3", "k4"] and state.counters["expired"] == 2
    assert state.pending_values == 3 * 2  # one per value, one per entry
    # k0 also left the memory of seen records (bounded alike): its label is held for it
    assert core.on_label("k0", True, 9) == "held" and core.on_label("k3", True, 9) == "learned"
    assert state.pending_values == 2 * 2 and state.counters["pending"] == 2


def test_pending_predictions_expire_by_the_values_they_hold() -> None:
    core = LearnerCore([spec()], max_pending_values=7)
    for i in range(3):
        core.on_record(f"k{i}", i, {"x": 1.0, "y": 2.0})  # three values each
    state = core.models["m"]
    assert list(state.pending) == ["k1", "k2"] and state.pending_values == 6
    assert state.counters["expired"] == 1


def test_pending_predictions_expire_by_age_exactly_at_the_limit() -> None:
    core = LearnerCore([spec()], max_pending_age_ms=100)
    core.on_record("old", 0, {"x": 1.0})
    core.on_record("edge", 50, {"x": 1.0})
    core.on_record("now", 150, {"x": 1.0})  # the median (50) is the clock: old is 50 past the horizon
    state = core.models["m"]
    assert list(state.pending) == ["edge", "now"] and state.counters["expired"] == 1


def test_a_redelivered_record_replaces_its_pending_entry_without_counting_it_twice() -> None:
    core = LearnerCore([spec()], max_pending=1)
    core.on_record("k", 1, {"x": 1.0})
    state = core.models["m"]
    state.seen = Recent()  # as if its key had left the bounded memory of seen records
    core.on_record("k", 2, {"x": 1.0, "y": 1.0})
    assert list(state.pending) == ["k"] and state.pending_values == 3 and state.counters["expired"] == 0


def test_held_labels_expire_by_count_and_age_as_unknown() -> None:
    core = LearnerCore([spec()], max_pending=2, max_pending_age_ms=100)
    for i in range(3):
        assert core.on_label(f"k{i}", True, i) == "held"
    state = core.models["m"]
    assert list(state.early) == ["k1", "k2"] and state.counters["unknown_labels"] == 1
    assert state.counters["early_labels"] == 2
    core.on_record("k1", 1, {"x": 1.0})  # its label was held: learned at once
    assert learned(core, "m") == [({"x": 1.0}, True)] and state.counters["early_labels"] == 1
    assert core.on_label("k2", False, 3) == "held" and state.counters["duplicate_labels"] == 1
    assert state.early["k2"] == (False, 3)  # the later label replaces it


def test_a_held_label_is_learned_at_the_later_of_the_two_times() -> None:
    core = LearnerCore([spec()])
    core.on_label("k", True, 500)
    core.on_record("k", 100, {"x": 1.0})
    assert core.models["m"].last_ts == 500
    core.on_label("k2", True, 50)
    core.on_record("k2", 600, {"x": 1.0})
    assert core.models["m"].last_ts == 600
    core.on_record("k3", 200, {"x": 1.0}, label=True)  # learned later, at an earlier time
    assert core.models["m"].last_ts == 600


# ---------------------------------------------------------------- late labels


def test_each_outcome_of_a_late_label() -> None:
    core = LearnerCore([spec("a"), spec("b")])
    core.on_record("k", 1, {"x": 1.0})
    assert core.on_label("k", True, 2) == "learned"
    assert core.on_label("k", True, 3) == "duplicate"
    assert core.on_label("nope", True, 4) == "held"
    assert {m: st.counters["duplicate_labels"] for m, st in core.models.items()} == {"a": 1, "b": 1}
    assert core.models["a"].counters["learned"] == core.models["b"].counters["learned"] == 1
    assert learned(core, "b") == [({"x": 1.0}, True)]


def test_the_outcome_is_the_first_selected_models() -> None:
    core = LearnerCore([spec("a"), spec("b")])
    core.on_record("k", 1, {"x": 1.0}, only=["b"])
    assert core.on_label("k", True, 2) == "held"  # a never saw it
    assert core.on_label("k2", True, 2, only=["b"]) == "held"
    core.on_record("k3", 1, {"x": 1.0}, only=["b"])
    assert core.on_label("k3", True, 2, only=["b", "a"]) == "learned"


def test_a_late_label_the_model_cannot_take_leaves_its_prediction_waiting() -> None:
    multi = ModelSpec("m", "multiclass", "v", Fixed)
    core = LearnerCore([multi])
    core.on_record("k0", 0, {"x": 1.0}, label="a")  # the first class fixes the type: str
    core.on_record("k1", 1, {"x": 1.0})
    assert core.on_label("k1", 7, 2) == "rejected"
    state = core.models["m"]
    assert state.rejected == {"label_type": 1} and list(state.pending) == ["k1"]
    assert core.on_label("k1", "b", 3) == "learned" and list(state.classes) == ["a", "b"]


def test_a_late_label_learns_the_features_and_prediction_as_they_were() -> None:
    core = LearnerCore(
        [ModelSpec("lr", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.LogLoss,))]
    )
    core.on_record("k", 1, {"x": 2.0})
    state = core.models["lr"]
    proba = state.pending["k"].proba
    assert proba == {False: 0.5, True: 0.5}
    core.on_label("k", True, 2)
    assert state.metrics[0].get() == pytest.approx(math.log(2))
    assert state.learned.keys == {"k"} and state.counters["learned"] == 1


# ---------------------------------------------------------------- faults


class Raising(Fixed):
    def __init__(self, where: str = "learn", proba: Any = None) -> None:
        super().__init__()
        self.where = where
        self.proba = proba

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        if self.where == "learn":
            raise ValueError("no")
        super().learn_one(x, y)

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        if self.where == "predict":
            raise OverflowError("no")
        return self.proba if self.proba is not None else super().predict_proba_one(x)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (lambda: Raising("predict"), "model_error"),
        (lambda: Raising("none", proba={True: float("nan"), False: 0.5}), "model_error"),
        (lambda: Raising("none", proba={True: "x"}), "model_error"),
    ],
)
def test_a_prediction_the_metrics_cannot_take_rejects_the_record_for_that_model(
    model: Any, reason: str
) -> None:
    core = LearnerCore([ModelSpec("bad", "binary", "v", model), spec("ok")])
    told: list[tuple[str, Reason, str]] = []
    core.on_reject = lambda *a: told.append(a)
    out = core.on_record("k", 1, {"x": 1.0}, label=True)
    assert [p.model for p in out] == ["ok"]
    assert core.models["bad"].rejected == {reason: 1} and core.models["bad"].status == "learning"
    assert [(m, r.value) for m, r, _ in told] == [("bad", reason)]
    assert told[0][2] in (
        "OverflowError in predict: no",
        "the model predicted probabilities " + repr(model().proba),
    )
    assert "k" not in core.models["bad"].seen  # it may come again


def test_an_empty_probability_dict_is_a_prediction_not_yet_made() -> None:
    core = LearnerCore(
        [ModelSpec("m", "binary", "v", lambda: Raising("none", proba={}), metrics=(metrics.LogLoss,))]
    )
    (p,) = core.on_record("k", 1, {"x": 1.0}, label=True)
    assert (p.label, p.proba) == (None, {}) and core.models["m"].n_learned == 1
    # no probabilities: no score, as River's progressive validation (LogLoss of {} would be some 34.5)
    assert core.models["m"].metric_values()["LogLoss"] == 0.0


def test_a_model_raising_in_learn_one_is_quarantined_and_told() -> None:
    core = LearnerCore([ModelSpec("bad", "binary", "v", Raising), spec("ok")])
    told: list[tuple[str, str]] = []
    core.on_quarantine = lambda m, why: told.append((m, why))
    rejected: list[tuple[str, Reason, str]] = []
    core.on_reject = lambda *a: rejected.append(a)
    core.on_record("k", 1, {"x": 1.0}, label=True, position=("f", 0, 9))
    bad = core.models["bad"]
    assert bad.quarantined and bad.status == "quarantined" and bad.rejected == {"learn_error": 1}
    assert (
        told == [("bad", "ValueError in learn_one on 'k' at ('f', 0, 9): no")]
        and bad.quarantine == told[0][1]
    )
    assert rejected == [("bad", Reason.LEARN_ERROR, "ValueError in learn_one: no")]
    assert bad.n_learned == 0 and core.models["ok"].n_learned == 1
    assert [p.model for p in core.on_record("k2", 2, {"x": 1.0})] == ["ok"]  # it no longer predicts


# ---------------------------------------------------------------- the state helpers


@pytest.mark.parametrize(
    ("learned", "then", "detail"),
    [
        (1.0, "x", "s: 'x' where the model learned numbers"),
        ("x", 2.0, "s: 2.0 where the model learned strings"),
    ],
)
def test_a_declared_feature_keeps_the_kind_it_was_learned_as(learned: Any, then: Any, detail: str) -> None:
    core = LearnerCore([spec(features=("s",))])
    told: list[tuple[str, Reason, str]] = []
    core.on_reject = lambda *a: told.append(a)
    core.on_record("k1", 1, {"s": learned}, label=True)
    assert core.on_record("k2", 2, {"s": then}, label=True) == []
    assert told == [("m", Reason.FEATURE_TYPE, detail)]
    assert core.models["m"].kinds == {"s": kind_of(learned)} and core.models["m"].n_learned == 1


def test_held_labels_expire_by_age_exactly_past_the_limit() -> None:
    core = LearnerCore([spec()], max_pending_age_ms=100)
    core.on_label("old", True, 0)
    core.on_label("edge", True, 1)
    # its own time (within 100 of the median, 1): the horizon 1 drops "old" and keeps "edge", exactly at it
    core.on_label("now", True, 101)
    core.on_label("later", True, 202)  # more than 100 past the median (1): the clock stays, nothing expires
    state = core.models["m"]
    assert list(state.early) == ["edge", "now", "later"] and state.counters["unknown_labels"] == 1


def test_cost_counts_an_entry_its_values_and_long_strings() -> None:
    assert cost({}) == 1 and cost({"a": 1.0, "b": 2}) == 3
    assert cost({"s": "x" * 64}) == 3 and cost({"s": "x" * 63}) == 2 and cost({"s": "x" * 128}) == 4
    assert cost({"s": "x" * 640}, declared=False) == 2


def test_select_inputs_takes_numbers_or_the_declared_features_without_nulls() -> None:
    vector = {"a": 1.0, "b": 2, "t": True, "s": "x", "n": None}
    assert select_inputs(vector, None) == {"a": 1.0, "b": 2}
    numbers = {"a": 1.0, "b": 2}
    assert select_inputs(numbers, None) is numbers  # all numbers: not copied
    assert select_inputs(vector, ("s", "n", "a")) == {"s": "x", "a": 1.0}


def test_finite_and_probabilities() -> None:
    assert finite(None) and finite(1.5) and finite(3) and not finite(True) and not finite("1")
    assert not finite(1e200) and not finite(float("inf"))
    assert (
        probabilities({True: 0.5}) and not probabilities({True: float("nan")}) and not probabilities({1: "x"})
    )


def test_kinds() -> None:
    assert kind_of("a") == STRING and kind_of(1) == kind_of(1.5) == kind_of(None) == NUMBER != STRING


def test_predict_calls_what_the_metrics_take() -> None:
    class Both(Fixed):
        def predict_one(self, x: dict[str, Any], **kw: Any) -> Any:
            return "own"

    labels = new_state(ModelSpec("m", "binary", "v", Both, metrics=(metrics.Accuracy,)), "m")
    assert (labels.wants_label, labels.wants_proba, labels.label_from_proba) == (True, False, False)
    assert predict(labels, {}) == ("own", None)
    assert predict(labels, {}, serving=True) == ("own", {True: 0.75, False: 0.25})
    probas = new_state(ModelSpec("m", "binary", "v", Both, metrics=(metrics.LogLoss,)), "m")
    assert predict(probas, {}) == (True, {True: 0.75, False: 0.25})  # the most probable class
    derived = new_state(spec(), "m")
    assert derived.label_from_proba and predict(derived, {}) == (True, {True: 0.75, False: 0.25})
    reg = new_state(ModelSpec("r", "regression", "v", linear_model.LinearRegression), "r")
    assert not reg.classifier and predict(reg, {"x": 1.0}) == (0.0, None)


def test_a_state_pickles_and_an_old_one_gets_the_fields_added_since() -> None:
    core = LearnerCore([spec()])
    core.on_record("k", 1, {"x": 1.0, "s": "y" * 200})
    state = core.models["m"]
    back = pickle.loads(pickle.dumps(state))
    assert (
        back.pending.keys() == {"k"}
        and back.seen.keys == {"k"}
        and back.pending_values == state.pending_values
    )
    old = state.__getstate__()
    for name in ("early", "rejected", "status", "quarantine", "classes", "kinds", "clock", "pending_values"):
        del old[name]
    del old["counters"]["early_labels"]
    restored = ModelState.__new__(ModelState)
    restored.__setstate__(old)
    assert (restored.early, restored.rejected, restored.status, restored.quarantine) == (
        {},
        {},
        "learning",
        None,
    )
    assert (restored.classes, restored.kinds, restored.counters["early_labels"]) == ({}, {}, 0)
    assert (
        restored.pending_values == cost({"x": 1.0}, False)
        and restored.clock.order == type(state.clock)().order
    )
    assert isinstance(restored.pending["k"], Pending)
    # the same attributes as a state made now: re-pickled, it has the shape of a rebuilt one (verify's hash)
    assert list(restored.__getstate__()) == list(state.__getstate__())


def test_an_old_state_with_declared_features_counts_their_strings() -> None:
    core = LearnerCore([spec(features=("s",))])
    core.on_record("k", 1, {"s": "y" * 640})
    state = core.models["m"]
    old = state.__getstate__()
    del old["pending_values"]
    restored = ModelState.__new__(ModelState)
    restored.__setstate__(old)
    assert restored.pending_values == state.pending_values == 1 + 1 + 10


def test_recent_keeps_the_latest_keys_and_pickles_its_order_only() -> None:
    r = Recent()
    for k in "abcd":
        r.add(k, 3)
    assert list(r.order) == ["b", "c", "d"] and "a" not in r and "b" in r
    assert r.__getstate__() == {"order": ["b", "c", "d"]}
    back = pickle.loads(pickle.dumps(r))
    assert back.keys == {"b", "c", "d"} and list(back.order) == ["b", "c", "d"]


def test_metric_values_name_the_metrics_and_their_rolling_windows() -> None:
    core = LearnerCore([spec()])
    core.on_record("k", 1, {"x": 1.0}, label=True)
    assert core.models["m"].metric_values() == {
        "Accuracy": 1.0,
        "LogLoss": pytest.approx(0.2876820724517809),
        "rolling_Accuracy": 1.0,
        "rolling_LogLoss": pytest.approx(0.2876820724517809),
    }


def test_a_label_for_no_selected_model_is_unknown() -> None:
    core = LearnerCore([spec("a")])
    assert core.on_label("k", True, 1, only=[]) == "unknown"
    core.quarantine(core.models["a"], "test")
    assert core.on_label("k", True, 1) == "unknown"


def test_pending_values_count_declared_strings_in_and_out() -> None:
    core = LearnerCore([spec(features=("s",))], max_pending=2, max_pending_values=1_000)
    long = "y" * 640  # ten values more than its one
    for i in range(3):
        core.on_record(f"k{i}", i, {"s": long})
    state = core.models["m"]
    assert list(state.pending) == ["k1", "k2"] and state.pending_values == 2 * 12  # k0 expired: its 12 out
    core.on_label("k1", True, 5)
    assert state.pending_values == 12  # learned: its 12 out
    core.on_label("k2", True, 6)
    assert state.pending_values == 0


def test_pending_values_exactly_at_the_bound_expire_nothing() -> None:
    core = LearnerCore([spec()], max_pending_values=4)
    core.on_record("k0", 0, {"x": 1.0})
    core.on_record("k1", 1, {"x": 1.0})  # 2 + 2: at the bound
    state = core.models["m"]
    assert list(state.pending) == ["k0", "k1"] and state.counters["expired"] == 0


def test_a_late_label_tells_the_position_of_the_label() -> None:
    core = LearnerCore([ModelSpec("bad", "binary", "v", Raising)])
    core.on_record("k", 1, {"x": 1.0}, position=("f", 0, 1))
    core.on_label("k", True, 2, position=("l", 0, 7))
    assert core.models["bad"].quarantine == "ValueError in learn_one on 'k' at ('l', 0, 7): no"


# ---------------------------------------------------------------- what a model admits


def test_a_multiclass_model_admits_one_class_type_and_a_bounded_number_of_classes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streaming.learning import core as core_module

    monkeypatch.setattr(core_module, "MAX_CLASSES", 2)
    core = LearnerCore([ModelSpec("m", "multiclass", "v", Fixed)])
    told: list[tuple[str, Reason, str]] = []
    core.on_reject = lambda *a: told.append(a)
    state = core.models["m"]
    for i, y in enumerate(["a", 7, "b", "c", "a", "b"]):
        core.on_record(f"k{i}", i, {"x": 1.0}, label=y)
    assert [y for _, y in state.model.seen] == ["a", "b", "a", "b"]  # type: ignore[attr-defined]
    assert [(r.value, d) for _, r, d in told] == [
        ("label_type", "the model learns str classes, got 7"),
        ("label_class", "'c' would be class 3 of the model"),
    ]
    assert list(state.classes) == ["a", "b"]


def test_declared_classes_or_another_task_are_not_bounded_by_the_class_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streaming.learning import core as core_module

    monkeypatch.setattr(core_module, "MAX_CLASSES", 1)
    declared = ModelSpec("d", "multiclass", "v", Fixed, classes=("a", "b", "c"))
    core = LearnerCore([declared, spec("bin")])
    for i, y in enumerate(["a", "b", "c"]):
        core.on_record(f"k{i}", i, {"x": 1.0}, label=y, only=["d"])
    for i, flag in enumerate([True, False]):
        core.on_record(f"b{i}", i, {"x": 1.0}, label=flag, only=["bin"])
    assert core.models["d"].n_learned == 3 and core.models["bin"].n_learned == 2
    assert core.models["d"].rejected == core.models["bin"].rejected == {}


def test_the_feature_budget_is_checked_again_when_a_late_label_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    from streaming.learning import core as core_module

    monkeypatch.setattr(core_module, "MAX_FEATURES", 2)
    core = LearnerCore([spec()])
    core.on_record("k1", 1, {"a": 1.0})
    core.on_record("k2", 2, {"b": 1.0, "c": 1.0})  # nothing learned yet: two new features fit
    assert core.on_label("k1", True, 3) == "learned"
    core.on_label("k2", True, 4)  # a, b and c would be three
    state = core.models["m"]
    assert state.n_learned == 1 and state.rejected == {"malformed_features": 1} and set(state.kinds) == {"a"}


def test_a_label_for_a_record_learned_with_its_label_is_counted_unknown() -> None:
    """Only late labels are remembered as learned (a record learned at once takes no room there)."""
    core = LearnerCore([spec()])
    core.on_record("k", 1, {"x": 1.0}, label=True)
    assert core.on_label("k", True, 2) == "unknown"
    assert core.models["m"].learned.keys == set() and core.models["m"].counters["unknown_labels"] == 1


def test_every_duplicate_record_is_counted() -> None:
    core = LearnerCore([spec()])
    for _ in range(3):
        core.on_record("k", 1, {"x": 1.0})
    assert core.models["m"].counters["duplicate_records"] == 2 and core.models["m"].counters["predicted"] == 1


def test_a_loss_as_bad_as_before_is_not_a_drift_for_the_worse() -> None:
    state = new_state(spec(drift=DriftPolicy(lambda: Detector(estimation=1.0))), "m")
    assert not drifts.loss_drifted(state, True, False)  # loss 1, mean 1: the same, not worse
    state.loss_detector.estimation = 1.5
    assert drifts.loss_drifted(state, True, False)


def test_a_record_one_model_refuses_as_input_does_not_stop_the_models_after_it() -> None:
    core = LearnerCore([spec("d", features=("s",)), spec("a")])
    core.on_record("k1", 1, {"s": 1.0}, label=True)
    out = core.on_record("k2", 2, {"s": "text", "x": 1.0})
    assert [p.model for p in out] == ["a"] and core.models["d"].rejected == {"feature_type": 1}


def test_every_unknown_and_duplicate_label_is_counted() -> None:
    core = LearnerCore([spec()], max_pending_values=2)
    core.on_record("k1", 1, {"x": 1.0})
    core.on_record("k2", 2, {"x": 1.0})  # k1's prediction expires (the values bound); its record was seen
    state = core.models["m"]
    assert core.on_label("k1", True, 3) == "unknown" and core.on_label("k1", True, 4) == "unknown"
    assert state.counters["unknown_labels"] == 2
    for ts in (5, 6, 7):
        core.on_label("k9", True, ts)
    assert state.counters["duplicate_labels"] == 2 and state.early["k9"] == (True, 7)


# ---------------------------------------------------------------- more edges (mutation survivors)


class Echo(base.Classifier):
    """Probabilities and label read from the record itself."""

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        pass

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        return {} if x.get("p") is None else {True: x["p"], False: 1 - x["p"]}

    def predict_one(self, x: dict[str, Any], **kw: Any) -> Any:
        return x.get("label")


class Far(base.Regressor):
    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        pass

    def predict_one(self, x: dict[str, Any]) -> Any:
        return x["v"]


def test_predict_reads_the_record() -> None:
    probas = new_state(ModelSpec("m", "binary", "v", Echo, metrics=(metrics.LogLoss,)), "m")
    assert predict(probas, {"p": 0.2}) == (False, {True: 0.2, False: 0.8})
    assert predict(probas, {}) == (None, {})
    labels = new_state(ModelSpec("m", "binary", "v", Echo, metrics=(metrics.Accuracy,)), "m")
    assert predict(labels, {"label": "own", "p": 0.9}) == ("own", None)
    assert predict(labels, {"label": "own", "p": 0.9}, serving=True) == (
        "own",
        {True: 0.9, False: pytest.approx(0.1)},
    )


def test_a_regression_prediction_out_of_the_domain_is_rejected() -> None:
    core = LearnerCore([ModelSpec("r", "regression", "v", Far)])
    told: list[tuple[str, Reason, str]] = []
    core.on_reject = lambda *a: told.append(a)
    assert core.on_record("k1", 1, {"v": 1e200}) == []
    assert told == [("r", Reason.MODEL_ERROR, "the model predicted 1e+200")]
    assert [p.label for p in core.on_record("k2", 2, {"v": 5.0})] == [5.0]


def test_select_inputs_takes_number_subclasses_and_returns_a_dict() -> None:
    class F(float):
        pass

    from types import MappingProxyType

    assert select_inputs({"a": F(1.5), "b": "s"}, None) == {"a": 1.5}
    proxy = MappingProxyType({"a": 1.0})
    got = select_inputs(proxy, None)
    assert type(got) is dict and got == {"a": 1.0}


def test_the_label_comes_from_the_probabilities_only_when_predict_one_would_compute_it_so() -> None:
    from river import compose, preprocessing

    def piped() -> Any:
        return (
            preprocessing.StandardScaler() | preprocessing.MinMaxScaler() | linear_model.LogisticRegression()
        )

    assert new_state(ModelSpec("m", "binary", "v", piped), "m").label_from_proba
    assert not new_state(ModelSpec("m", "binary", "v", Echo), "m").label_from_proba  # its own predict_one
    with compose.learn_during_predict():
        assert not new_state(ModelSpec("m", "binary", "v", piped), "m").label_from_proba


def test_the_rolling_metrics_take_the_specs_window() -> None:
    state = new_state(spec(rolling_window=2), "m")
    assert [r.window_size for r in state.rolling] == [2, 2]


def test_the_feature_budget_is_inclusive_and_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from streaming.learning import core as core_module

    monkeypatch.setattr(core_module, "MAX_FEATURES", 2)
    core = LearnerCore([spec()])
    told: list[tuple[str, Reason, str]] = []
    core.on_reject = lambda *a: told.append(a)
    core.on_record("k1", 1, {"a": 1.0}, label=True)
    core.on_record("k2", 2, {"a": 1.0, "b": 1.0}, label=True)  # two: at the budget
    assert core.on_record("k3", 3, {"c": 1.0}, label=True) == []
    assert core.models["m"].n_learned == 2
    assert told == [
        ("m", Reason.MALFORMED_FEATURES, "1 features the model has not learned would make more than 2")
    ]


def test_an_inline_label_wins_over_a_held_one() -> None:
    core = LearnerCore([spec()])
    core.on_label("k", False, 1)
    core.on_record("k", 2, {"x": 1.0}, label=True)
    assert learned(core, "m") == [({"x": 1.0}, True)]
