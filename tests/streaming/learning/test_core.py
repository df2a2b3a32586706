"""The learner core against River's own progressive validation, late labels, drift, and spec checks."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from river import compose, datasets, evaluate, linear_model, metrics, preprocessing, stream, tree
from river.datasets import synth

from streaming.learning.clock import WINDOW
from streaming.learning.core import LearnerCore
from streaming.learning.spec import DriftPolicy, ModelSpec, SpecError

pytestmark = pytest.mark.unit


def scaled_lr() -> compose.Pipeline:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def spec_with(metric: type, name: str = "lr") -> ModelSpec:
    return ModelSpec(name, "binary", "v", scaled_lr, metrics=(metric,))


@pytest.mark.parametrize("metric", [metrics.Accuracy, metrics.LogLoss, metrics.ROCAUC])
@pytest.mark.parametrize("delay", [None, 1, 25])
def test_metric_equals_progressive_val_score(metric: type, delay: int | None) -> None:
    data = list(datasets.Phishing())
    expected = evaluate.progressive_val_score(data, scaled_lr(), metric(), delay=delay)
    core = LearnerCore([spec_with(metric)])
    if delay is None:  # labels inline
        for i, (x, y) in enumerate(data):
            core.on_record(str(i), i, x, label=y)
    else:  # labels arrive `delay` records later, in River's own question/answer order
        for i, x, y in stream.simulate_qa(data, moment=None, delay=delay):
            if y is None:
                core.on_record(str(i), i, x)
            else:
                assert core.on_label(str(i), y, i) == "learned"
    state = core.models["lr"]
    assert state.metrics[0].get() == pytest.approx(expected.get(), rel=1e-12)
    assert state.n_learned == len(data) and state.counters["pending"] == 0


def test_regression_mae_equals_progressive_val_score() -> None:
    data = list(itertools.islice(datasets.TrumpApproval(), 600))

    def model() -> preprocessing.StandardScaler:
        return preprocessing.StandardScaler() | linear_model.LinearRegression()

    expected = evaluate.progressive_val_score(data, model(), metrics.MAE(), delay=10)
    core = LearnerCore([ModelSpec("reg", "regression", "v", model, metrics=(metrics.MAE,))])
    for i, x, y in stream.simulate_qa(data, moment=None, delay=10):
        core.on_record(str(i), i, x) if y is None else core.on_label(str(i), y, i)
    assert core.models["reg"].metrics[0].get() == pytest.approx(expected.get(), rel=1e-12)


def test_late_labels_shuffled_missing_duplicated_and_unknown_are_counted() -> None:
    rng = random.Random(3)
    data = list(itertools.islice(datasets.Phishing(), 400))
    core = LearnerCore([spec_with(metrics.Accuracy)], max_pending=10_000, max_pending_age_ms=10**9)
    for i, (x, _) in enumerate(data):
        core.on_record(f"e{i}", i, x)
    labelled = [i for i in range(len(data)) if i % 10 != 0]  # every tenth label never arrives
    rng.shuffle(labelled)
    outcomes = [core.on_label(f"e{i}", data[i][1], 1_000) for i in labelled]
    outcomes += [core.on_label(f"e{i}", data[i][1], 1_001) for i in labelled[:30]]  # duplicates
    outcomes += [core.on_label(f"nope{i}", True, 1_002) for i in range(7)]  # ids never seen: held
    state = core.models["lr"]
    assert outcomes.count("learned") == 360 and outcomes.count("duplicate") == 30
    assert outcomes.count("held") == 7
    c = state.counters
    assert (c["learned"], c["pending"], c["duplicate_labels"], c["early_labels"]) == (360, 40, 30, 7)
    # their records never came: expired, counted unknown, once the stream has moved on past the age limit
    # (one record does not move the clock: it may be a hostile one stamped far in the future)
    for k in range(WINDOW // 2 + 1):
        core.on_record(f"later{k}", 10**9 + 2_000 + k, {})
    assert (c["early_labels"], c["unknown_labels"]) == (0, 7)
    # a redelivered record is not predicted twice
    core.on_record("e5", 5, data[5][0])
    assert c["predicted"] == 451 and c["duplicate_records"] == 1  # 400 and "later*"


def test_a_label_before_its_record_is_held_and_learned_when_the_record_comes() -> None:
    data = list(itertools.islice(datasets.Phishing(), 300))
    early = LearnerCore([spec_with(metrics.Accuracy)])
    for i, (_, y) in enumerate(data[:100]):  # the labels of the first 100 come before their records
        assert early.on_label(f"e{i}", y, i) == "held"
    for i, (x, y) in enumerate(data):
        early.on_record(f"e{i}", i, x, label=y if i >= 100 else None)
    inline = LearnerCore([spec_with(metrics.Accuracy)])
    for i, (x, y) in enumerate(data):
        inline.on_record(f"e{i}", i, x, label=y)
    a, b = early.models["lr"], inline.models["lr"]
    assert a.counters["learned"] == 300 and a.counters["early_labels"] == 0 and a.counters["pending"] == 0
    assert a.metrics[0].get() == b.metrics[0].get()  # the same as labels that rode along


def test_pending_predictions_are_bounded_by_count_and_age() -> None:
    core = LearnerCore([spec_with(metrics.Accuracy)], max_pending=60, max_pending_age_ms=1_000)
    for i in range(120):
        core.on_record(f"e{i}", i, {"x": float(i)})
    c = core.models["lr"].counters
    assert (c["pending"], c["expired"]) == (60, 60)
    # later records: once the stream has moved on (the median of the last 101 record times is past the
    # age limit), everything older than 1 s expires; one record, or fifty, far ahead do not move the clock
    # (they may be hostile ones stamped far in the future), only the count bound evicts
    core.on_record("late0", 5_000, {"x": 1.0})
    assert (c["pending"], c["expired"]) == (60, 61)
    for k in range(1, 50):
        core.on_record(f"late{k}", 5_000 + k, {"x": 1.0})
    assert (c["pending"], c["expired"]) == (60, 110)
    core.on_record("late50", 5_050, {"x": 1.0})
    assert (c["pending"], c["expired"]) == (51, 120)
    assert core.on_label("e115", True, 5_051) == "unknown"  # its record came; its prediction expired


def test_loss_drift_fires_after_a_known_drift_and_not_before() -> None:
    position, width = 5_000, 200
    data = synth.ConceptDriftStream(
        stream=synth.Agrawal(classification_function=0, seed=1),
        drift_stream=synth.Agrawal(classification_function=3, seed=1),
        position=position,
        width=width,
        seed=1,
    )
    spec = ModelSpec(
        "tree",
        "binary",
        "v",
        tree.HoeffdingTreeClassifier,
        metrics=(metrics.Accuracy,),
        drift=DriftPolicy(reaction="challenger"),
    )
    core = LearnerCore([spec])
    for i, (x, y) in enumerate(itertools.islice(data, 9_000)):
        core.on_record(str(i), i, x, label=y, position=("events", 0, i))
    drifts = core.models["tree"].drifts
    assert drifts, "no drift detected"
    assert all(d.ts >= position - width for d in drifts), [d.ts for d in drifts]
    assert drifts[0].ts < position + 2_000 and drifts[0].position == ("events", 0, drifts[0].ts)
    assert any(name.startswith("tree~") for name in core.models)  # a challenger started at the drift


def test_specs_are_checked() -> None:
    def bad_pipeline() -> preprocessing.StandardScaler:
        return compose.FuncTransformer(lambda x: x) | linear_model.LogisticRegression()

    with pytest.raises(SpecError, match="cannot be pickled"):
        ModelSpec("p", "binary", "v", bad_pipeline).check()
    with pytest.raises(SpecError, match="MAE does not fit"):
        ModelSpec("m", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.MAE,)).check()
    with pytest.raises(SpecError, match=r"unknown features \['nope'\]"):
        ModelSpec("f", "binary", "v", linear_model.LogisticRegression, features=("a", "nope")).check(
            {"a", "b"}
        )
    with pytest.raises(SpecError, match="needs a regressor"):
        ModelSpec("r", "regression", "v", linear_model.LogisticRegression).check()


def test_yaml_specs_build_the_same_pipeline(tmp_path: Path) -> None:
    from streaming.learning.spec import load_specs

    (spec,) = load_specs(str(Path(__file__).resolve().parents[3] / "streaming/learning/examples.yaml"))
    spec.check()
    model = spec.new_model()
    assert [type(s).__name__ for s in model.steps.values()] == ["StandardScaler", "LogisticRegression"]
    assert model["LogisticRegression"].l2 == 0.001
    assert [type(m).__name__ for m in spec.new_metrics()] == ["Accuracy", "LogLoss", "ROCAUC"]
    assert spec.checkpoint.every_records == 2000 and spec.drift.features == ("salary",)
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: x\n    task: binary\n    view: v\n    model: [linear_model.Nope]\n")
    with pytest.raises(SpecError, match=r"no River class 'linear_model\.Nope'"):
        load_specs(str(bad))


def test_a_multiclass_model_takes_its_classes_only_from_labels_it_learned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """admits() recorded the class before _learn, which can still refuse the record: a label never learned
    took a place in the model's class budget (and could fix its class type)."""
    from streaming.learning import core as core_module

    monkeypatch.setattr(core_module, "MAX_CLASSES", 2)
    spec = ModelSpec(
        "m", "multiclass", "v", tree.HoeffdingTreeClassifier, features=("a",), metrics=(metrics.Accuracy,)
    )
    core = LearnerCore([spec])
    state = core.models["m"]
    core.on_record("r0", 0, {"a": "s"})  # predicted while the model has learned no kind for "a": pending
    core.on_record("r1", 1, {"a": 1.0}, label=1)  # learned: "a" is a number now
    core.on_label("r0", 2, 2)  # admitted, then refused by _learn (feature_type)
    assert state.rejected == {"feature_type": 1} and state.n_learned == 1
    assert list(state.classes) == [1]  # before: [1, 2], 2 never learned
    core.on_record("r2", 3, {"a": 3.0}, label=3)  # before: label_class, "class 3 of the model"
    assert state.rejected == {"feature_type": 1} and state.n_learned == 2
    assert list(state.classes) == [1, 3]


@pytest.mark.parametrize(
    "value", [0, -(2**63), 2**63 - 1, 2**63, -(2**63) - 1, 1.5, 1e150, -1e150, 1e151, 1e308, float("nan")]
)
def test_the_model_domain_is_the_numeric_domain_with_the_model_bound(value: float) -> None:
    """One numeric domain: the learner's is features.numeric's (int64, finite floats) and |x| <= 1e150."""
    from features import numeric
    from streaming.learning import domain

    assert (domain.INT64_MIN, domain.INT64_MAX) == (numeric.INT64_MIN, numeric.INT64_MAX)
    bounded = not isinstance(value, float) or abs(value) <= domain.MAX_MAGNITUDE
    assert domain.in_domain(value) == (numeric.in_domain(value) and bounded)
