"""The learner under a hostile producer: records and labels that the router's first checks let through but
that would break a model (a class of another type, a string where a tree took numbers, a prediction whose
squared error overflows), and ids or classes that would cost unbounded memory. Each is rejected for the
model it would harm, and the model goes on as if it had never been sent (compared with a plain River loop
over the good records)."""

from __future__ import annotations

import math
import pickle
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import base, linear_model, metrics, naive_bayes, preprocessing, tree

from streaming.learning.core import MAX_CLASSES, MAX_FEATURES, LearnerCore
from streaming.learning.deadletters import MemorySink
from streaming.learning.labels import check_label
from streaming.learning.merge import Merger, Positioned, decode, event_time
from streaming.learning.router import Router, TopicRoles
from streaming.learning.spec import DriftPolicy, ModelSpec, SpecError
from streaming.replay.runner import FEATURES, LABELS, LabelMode, Replay
from streaming.replay.verify import probes_differ
from tests.support.model_defs import scaled_lr as scaled_lr_model

pytestmark = pytest.mark.unit

ROLES = TopicRoles("f", "l", "p")


def feat(i: int, x: dict[str, Any], label: Any = None, ts: int | None = None) -> tuple[str, dict[str, Any]]:
    event = {"event_id": f"e{i}", "ts": 1_000 + i if ts is None else ts, "label": label}
    return ("f", {"view": "v", "event": event, "features": x})


def run(specs: list[ModelSpec], stream: list[tuple[str, Any]]) -> tuple[LearnerCore, MemorySink]:
    core = LearnerCore(specs)
    sink = MemorySink()
    router = Router(core, ROLES, sink=sink)
    offsets = {"f": 0, "l": 0, "p": 0}
    for topic, value in stream:
        router.process(Positioned(0, 0, 0, offsets[topic], topic, value))
        offsets[topic] += 1
    return core, sink


def oracle(model: Any, stream: list[tuple[str, Any]], metric: Any) -> tuple[float, int]:
    """River's progressive validation over inline-labelled features records."""
    m = metric()
    n = 0
    for _, value in stream:
        x, y = value["features"], value["event"]["label"]
        pred = model.predict_one(x)
        if pred is not None:
            m.update(y, pred)
        model.learn_one(x, y)
        n += 1
    return m.get(), n


def test_a_string_where_a_tree_took_numbers_is_rejected_not_a_quarantine() -> None:
    spec = ModelSpec(
        "ht", "binary", "v", tree.HoeffdingTreeClassifier, features=("a", "b"), metrics=(metrics.Accuracy,)
    )
    good = [feat(i, {"a": float(i % 7), "b": float(i % 3)}, label=i % 2 == 1) for i in range(300)]
    mixed = [*good[:100], feat(9_999, {"a": "abc", "b": 1.0}, label=True), *good[100:]]
    core, sink = run([spec], mixed)
    state = core.models["ht"]
    # before: the tree raised in learn_one (a str against its Gaussian splitter) and was quarantined
    assert state.status == "learning"
    assert state.rejected == {"feature_type": 1}
    want, n = oracle(tree.HoeffdingTreeClassifier(), good, metrics.Accuracy)
    assert state.n_learned == n and state.metric_values()["Accuracy"] == want
    assert [(d.reason, d.record.offset) for d in sink.letters] == [("feature_type", 100)]


def test_a_declared_string_feature_stays_a_string() -> None:
    spec = ModelSpec("ht", "binary", "v", tree.HoeffdingTreeClassifier, features=("city",))
    stream = [feat(i, {"city": ["oslo", "rome"][i % 2]}, label=i % 2 == 0) for i in range(20)]
    stream.insert(5, feat(99, {"city": 3.0}, label=True))
    core, _ = run([spec], stream)
    assert core.models["ht"].rejected == {"feature_type": 1} and core.models["ht"].n_learned == 20


def test_only_what_a_model_learns_fixes_a_feature_kind() -> None:
    spec = ModelSpec("ht", "binary", "v", tree.HoeffdingTreeClassifier, features=("a",))
    stream: list[tuple[str, Any]] = [feat(0, {"a": "x"})]  # predicted first, never labelled: locks nothing
    stream += [feat(i, {"a": float(i % 4)}, label=i % 2 == 0) for i in range(1, 40)]
    stream.append(("l", {"event_id": "e0", "label": True, "ts": 2_000}))  # its late label: refused now
    core, sink = run([spec], stream)
    state = core.models["ht"]
    assert state.status == "learning" and state.n_learned == 39
    assert state.rejected == {"feature_type": 1} and [d.record.offset for d in sink.letters] == [0]


def test_a_class_of_another_type_does_not_break_a_multiclass_tree() -> None:
    spec = ModelSpec("mc", "multiclass", "v", tree.HoeffdingTreeClassifier, metrics=(metrics.Accuracy,))
    good = [feat(i, {"a": float(i % 5)}, label=i % 3) for i in range(300)]
    bad = [feat(1_000, {"a": 1.0}, label="x"), feat(1_001, {"a": 2.0}, label=True)]
    mixed = [*good[:150], *bad, *good[150:]]
    core, sink = run([spec], mixed)
    state = core.models["mc"]
    # before: 'x' became a class, and every later prediction raised ('<' between str and int)
    assert state.rejected == {"label_type": 2}
    want, n = oracle(tree.HoeffdingTreeClassifier(), good, metrics.Accuracy)
    assert state.n_learned == n and state.metric_values()["Accuracy"] == want
    assert set(state.model.predict_proba_one({"a": 1.0})) == {0, 1, 2}
    assert [d.reason for d in sink.letters] == ["label_type", "label_type"]


def test_a_late_label_of_another_class_type_leaves_the_prediction_waiting() -> None:
    spec = ModelSpec("mc", "multiclass", "v", tree.HoeffdingTreeClassifier)
    stream: list[tuple[str, Any]] = [feat(0, {"a": 1.0}, label=1), feat(1, {"a": 2.0})]
    stream.append(("l", {"event_id": "e1", "label": "x", "ts": 2_000}))
    stream.append(("l", {"event_id": "e1", "label": 2, "ts": 2_001}))
    core, _ = run([spec], stream)
    state = core.models["mc"]
    assert state.rejected == {"label_type": 1}
    assert state.n_learned == 2 and list(state.classes) == [1, 2] and not state.pending


def test_a_multiclass_model_learns_at_most_max_classes() -> None:
    spec = ModelSpec("mc", "multiclass", "v", tree.HoeffdingTreeClassifier)
    stream = [feat(i, {"a": 1.0}, label=f"c{i}") for i in range(MAX_CLASSES + 5)]
    stream.append(feat(MAX_CLASSES + 10, {"a": 1.0}, label="c3"))  # a known class still learns
    core, _ = run([spec], stream)
    state = core.models["mc"]
    assert len(state.classes) == MAX_CLASSES
    assert state.rejected == {"label_class": 5}
    assert state.n_learned == MAX_CLASSES + 1


def test_declared_classes_with_a_class_that_is_a_declared_one_in_a_dict_are_refused() -> None:
    for classes in ((True, 1), (0, "x"), ("a", 1, 2)):
        task = "binary" if len(classes) == 2 else "multiclass"
        with pytest.raises(SpecError, match="all strings, all ints or all bools"):
            ModelSpec("m", task, "v", tree.HoeffdingTreeClassifier, classes=classes).check()  # type: ignore[arg-type]


def test_a_regression_prediction_beyond_the_domain_is_rejected_not_a_quarantine() -> None:
    spec = ModelSpec("reg", "regression", "v", linear_model.LinearRegression, metrics=(metrics.MSE,))
    stream = [feat(i, {"a": 1e150 if i % 2 else 1.0}, label=1e150 if i % 3 else -1e150) for i in range(30)]
    core, sink = run([spec], stream)
    state = core.models["reg"]
    # before: the prediction (about -1e160) was scored: MSE's square overflowed inside the metric
    # (OverflowError), and the model was quarantined
    assert state.status == "learning" and "learn_error" not in state.rejected
    assert state.rejected.get("model_error", 0) > 0
    assert all(math.isfinite(v) for v in state.metric_values().values())
    assert {d.reason for d in sink.letters} == {"model_error"}


class NaNClassifier(base.Classifier):
    """Probabilities that turn NaN after ``after`` records (as a model whose weights overflowed)."""

    def __init__(self, after: int = 3) -> None:
        self.after = after
        self.n = 0

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        self.n += 1

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        if self.n >= self.after and x.get("a") == 1.0:
            return {True: math.nan, False: math.nan}
        return {True: 0.75, False: 0.25}


def test_probabilities_that_are_not_numbers_are_rejected_before_the_metrics() -> None:
    spec = ModelSpec("nan", "binary", "v", NaNClassifier, metrics=(metrics.LogLoss, metrics.Accuracy))
    stream = [feat(i, {"a": float(i % 2)}, label=i % 3 == 0) for i in range(20)]
    core, _ = run([spec], stream)
    state = core.models["nan"]
    assert all(math.isfinite(v) for v in state.metric_values().values())  # before: LogLoss was NaN
    assert state.rejected == {"model_error": sum(1 for i in range(3, 20) if i % 2 == 1)}


def test_ids_longer_than_an_event_id_may_be_are_rejected() -> None:
    spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression)
    long = "e" * 10_000
    stream: list[tuple[str, Any]] = [
        ("l", {"event_id": long, "label": True, "ts": 5}),  # before: held as an early label
        ("l", {"prediction_id": long, "label": True, "ts": 6}),
        ("f", {"view": "v", "event": {"event_id": long, "ts": 7}, "features": {"a": 1.0}}),
        ("p", {"view": "v", "prediction_id": long, "ts": 8, "features": {"a": 1.0}}),
        ("l", {"event_id": "e" * 200, "label": True, "ts": 9}),  # at the limit: held
    ]
    core, _ = run([spec], stream)
    state = core.models["lr"]
    assert state.rejected == {"malformed_label": 2, "malformed_features": 1, "malformed_prediction": 1}
    assert list(state.early) == ["e" * 200] and not state.pending


def test_a_class_name_is_bounded() -> None:
    assert check_label("multiclass", "c" * 200) == "c" * 200
    with pytest.raises(Exception, match="label_class: a class name is at most 200"):
        check_label("multiclass", "c" * 201)


def flipping_labels(n: int) -> list[tuple[str, Any]]:
    """Labels that follow ``a`` and flip every 500 records: what anyone who may send labels can send."""
    rnd = random.Random(1)
    out = []
    for i in range(n):
        a = rnd.random()
        out.append(feat(i, {"a": a}, label=(a > 0.5) == ((i // 500) % 2 == 0)))
    return out


def test_flipping_labels_start_at_most_max_challengers() -> None:
    spec = ModelSpec(
        "ch", "binary", "v", linear_model.LogisticRegression, drift=DriftPolicy(reaction="challenger")
    )
    core, _ = run([spec], flipping_labels(20_000))
    # before: a new challenger at every drift (117 models after 20,000 records, each predicting on every
    # record and checkpointed)
    challengers = [m for m in core.models if m != "ch"]
    assert len(challengers) == 3
    assert core.models["ch"].counters["drifts"] > 3  # later drifts are still recorded


def test_max_challengers_zero_starts_none() -> None:
    spec = ModelSpec(
        "ch",
        "binary",
        "v",
        linear_model.LogisticRegression,
        drift=DriftPolicy(reaction="challenger", max_challengers=0),
    )
    spec.check()
    core, _ = run([spec], flipping_labels(5_000))
    assert list(core.models) == ["ch"] and core.models["ch"].counters["drifts"] > 0
    with pytest.raises(SpecError, match="max_challengers"):
        ModelSpec(
            "ch", "binary", "v", linear_model.LogisticRegression, drift=DriftPolicy(max_challengers=-1)
        ).check()


LAST_MS = 253_402_300_799_000  # 9999-12-31T23:59:59Z, the last event time the schema takes


def late_labelled(n: int) -> list[tuple[str, Any]]:
    """Features records of a good stream, each labelled on the labels topic 20 records later."""
    rnd = random.Random(7)
    xs = [rnd.random() for _ in range(n)]
    out: list[tuple[str, Any]] = []
    for i, a in enumerate(xs):
        out.append(feat(i, {"a": a}, ts=1_000 * i))
        j = i - 20
        if j >= 0:
            out.append(("l", {"event_id": f"e{j}", "label": xs[j] > 0.5, "ts": 1_000 * i + 1}))
    return out


def test_one_record_stamped_at_the_end_of_time_does_not_expire_the_pending_predictions() -> None:
    spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
    good = late_labelled(400)
    alone, _ = run([spec], good)
    bad: list[tuple[str, Any]] = [
        feat(10_000, {"a": 0.5}, ts=LAST_MS),  # a features record (any producer of events can send it)
        ("p", {"view": "v", "prediction_id": "q", "ts": LAST_MS, "features": {"a": 0.5}}),
        ("l", {"event_id": "nobody", "label": True, "ts": LAST_MS}),  # held: aged by the same clock
    ]
    for k, rec in enumerate(bad):
        mixed = [*good[: 200 + k], rec, *good[200 + k :]]
        core, _ = run([spec], mixed)
        state, want = core.models["lr"], alone.models["lr"]
        # before: the horizon moved to 9999 and every pending prediction expired (20 labels lost)
        assert state.counters["expired"] == 0 and state.counters["unknown_labels"] == 0
        assert state.n_learned == want.n_learned == 380
        assert state.metric_values() == want.metric_values()


def test_held_labels_are_not_expired_by_a_label_stamped_at_the_end_of_time() -> None:
    spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression)
    stream: list[tuple[str, Any]] = [("l", {"event_id": f"e{i}", "label": True, "ts": i}) for i in range(30)]
    stream.append(("l", {"event_id": "nobody", "label": True, "ts": LAST_MS}))
    stream += [feat(i, {"a": 1.0}, ts=100 + i) for i in range(30)]
    core, _ = run([spec], stream)
    state = core.models["lr"]
    assert state.n_learned == 30 and state.counters["unknown_labels"] == 0


def test_fresh_feature_names_in_every_record_do_not_grow_a_model_without_bound() -> None:
    spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression)
    good = [feat(i, {"a": float(i % 2), "b": 1.0}, label=i % 2 == 1) for i in range(300)]
    flood = [
        feat(10_000 + k, {f"junk{k}_{j}": 1.0 for j in range(1_000)}, label=True)
        for k in range(MAX_FEATURES // 500)
    ]
    mixed = [*good[:100], *flood, *good[100:]]
    core, _ = run([spec], mixed)
    state = core.models["lr"]
    weights = state.model.weights  # type: ignore[attr-defined]
    # before: 20,000 junk weights (and as many more with every such record)
    assert len(state.kinds) <= MAX_FEATURES and len(weights) <= MAX_FEATURES
    assert state.rejected == {"malformed_features": MAX_FEATURES // 500 - (MAX_FEATURES - 2) // 1_000}
    one = [feat(20_000, {f"j{j}": 1.0 for j in range(MAX_FEATURES + 1)}, label=True), *good]
    core, _ = run([spec], one)
    assert core.models["lr"].rejected == {"malformed_features": 1}
    assert core.models["lr"].n_learned == 300 and set(core.models["lr"].model.weights) == {"a", "b"}  # type: ignore[attr-defined]


def test_a_feature_name_is_bounded() -> None:
    spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression)
    core, _ = run([spec], [feat(0, {"a" * 201: 1.0}, label=True), feat(1, {"a" * 200: 1.0}, label=True)])
    assert core.models["lr"].rejected == {"value_domain": 1} and core.models["lr"].n_learned == 1


def replayed(mode: LabelMode, records: list[dict[str, Any]]) -> Replay:
    spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
    replay = Replay([spec], labels=mode)
    for i, value in enumerate(records):
        replay.feed(Positioned(0, 0, 0, i, FEATURES, value), FEATURES)
    return replay


def labelled(i: int, event_id: Any, ts: int) -> dict[str, Any]:
    event = {"event_id": event_id, "ts": ts, "label": i % 3 == 0}
    return {"view": "v", "event": event, "features": {"a": float(i % 2), "b": float(i % 3)}}


@pytest.mark.parametrize("mode", [LabelMode("records", 5), LabelMode("ms", 50)])
def test_a_replay_with_simulated_delays_rejects_an_event_id_that_is_not_a_string(mode: LabelMode) -> None:
    good = [labelled(i, f"e{i}", 1_000 + 10 * i) for i in range(60)]
    bad = [labelled(0, {"x": 1}, 1_301), labelled(0, ["l"], 1_302)]
    replay = replayed(mode, [*good[:30], *bad, *good[30:]])  # before: TypeError (unhashable) on reveal
    result = replay.finish("s", {}, "event-time")
    alone = replayed(mode, good).finish("s", {}, "event-time")
    assert replay.core.models["lr"].rejected == {"malformed_features": 2}
    assert result.models["lr"].metrics == alone.models["lr"].metrics
    assert replay.core.models["lr"].n_learned == 60


def test_a_record_far_in_the_future_does_not_hold_back_the_labels_behind_it() -> None:
    good = [labelled(i, f"e{i}", 1_000 + 10 * i) for i in range(60)]
    future = labelled(1, "far", LAST_MS)
    with_it = replayed(LabelMode("ms", 50), [*good[:10], future, *good[10:]])
    alone = replayed(LabelMode("ms", 50), good)
    # before: every label behind the far one waited for the end of the replay (11 learned instead of 55)
    assert with_it.core.models["lr"].n_learned == alone.core.models["lr"].n_learned == 55


def merged(stream: list[tuple[str, Any]], partitions: int = 3) -> list[Positioned]:
    """The stream as the learner's merge releases it: features records spread over ``partitions``
    partitions (by event index), labels on one, everything read to its end."""
    merger = Merger({"l": 0, "f": 1, "p": 2})
    offsets: dict[tuple[str, int], int] = {}
    for k, (topic, value) in enumerate(stream):
        partition = k % partitions if topic == "f" else 0
        tp = (topic, partition)
        offset = offsets[tp] = offsets.get(tp, -1) + 1
        merger.add(topic, partition, offset, event_time(value), value)
    return list(merger.ready(lambda tp: True))


def test_a_record_stamped_at_the_end_of_time_does_not_hold_back_its_partition() -> None:
    spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
    good = late_labelled(600)
    mixed = [*good[:300], feat(10_000, {"a": 0.5}, ts=LAST_MS), *good[300:]]
    results = []
    for stream in (good, mixed):
        core = LearnerCore([spec])
        router = Router(core, ROLES, sink=MemorySink())
        for rec in merged(stream):
            router.process(rec)
        results.append(core.models["lr"])
    alone, attacked = results
    # before: the rest of its partition came after every other record (its labels held, learned late)
    assert attacked.counters["early_labels"] == 0 and attacked.n_learned == alone.n_learned == 580
    assert attacked.metric_values() == alone.metric_values()
    assert attacked.model.weights == alone.model.weights  # type: ignore[attr-defined]


@pytest.mark.parametrize("form", [str, float, lambda t: datetime.fromtimestamp(t / 1_000, UTC).isoformat()])
def test_a_label_whose_time_is_a_string_or_a_float_is_merged_at_its_time(form: Any) -> None:
    spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
    good = [(t, {**v, "ts": v["ts"] - 1}) if t == "l" else (t, v) for t, v in late_labelled(300)]  # seconds
    written = [(t, {**v, "ts": form(v["ts"])}) if t == "l" else (t, v) for t, v in good]
    results = []
    for stream in (good, written):
        core = LearnerCore([spec])
        router = Router(core, ROLES, sink=MemorySink())
        for rec in merged(stream):
            router.process(rec)
        results.append(core.models["lr"])
    as_ints, as_written = results
    # before: merged as records without a time (at once), each label overtook its own record and was held
    assert as_written.counters["early_labels"] == 0 and as_written.rejected == {}
    assert as_written.n_learned == as_ints.n_learned == 280
    assert as_written.metric_values() == as_ints.metric_values()


def test_verify_compares_probes_a_model_raises_on_or_predicts_nan_for() -> None:
    spec = ModelSpec("lr", "binary", "v", scaled_lr_model, features=("a",))
    core = LearnerCore([spec])
    for i in range(20):
        core.on_record(f"e{i}", i, {"a": float(i)}, label=i % 2 == 0)
    state = core.models["lr"]
    copy = pickle.loads(pickle.dumps(state))
    # before: predicting on the string raised out of verify (TypeError in the scaler)
    assert probes_differ(state, copy, [{"a": 1.0}, {"a": "abc"}, {"a": 3.0}]) is None
    nan = ModelSpec("nan", "binary", "v", NaNClassifier, features=("a",))
    nan_state = LearnerCore([nan]).models["nan"]
    nan_state.model.n = 5  # type: ignore[attr-defined]
    assert probes_differ(nan_state, pickle.loads(pickle.dumps(nan_state)), [{"a": 1.0}]) is None
    other = LearnerCore([spec]).models["lr"]
    assert probes_differ(state, other, [{"a": 1.0}, {"a": 9.0}]) is not None


# any records: the shapes the router reads, with any values, and any JSON at all
FUZZ_SPECS = [
    ModelSpec(
        "lr",
        "binary",
        "v",
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics=(metrics.LogLoss, metrics.Accuracy, metrics.ROCAUC),
    ),
    ModelSpec(
        "ht",
        "binary",
        "v",
        tree.HoeffdingTreeClassifier,
        features=("a", "b"),
        drift=DriftPolicy(features=("a",)),
    ),
    ModelSpec(
        "mc", "multiclass", "v", tree.HoeffdingTreeClassifier, metrics=(metrics.Accuracy, metrics.MacroF1)
    ),
    ModelSpec("mcd", "multiclass", "v", naive_bayes.GaussianNB, classes=("x", "y", "z")),
    ModelSpec(
        "reg", "regression", "v", tree.HoeffdingTreeRegressor, metrics=(metrics.MAE, metrics.RMSE, metrics.R2)
    ),
    ModelSpec("lin", "regression", "v", linear_model.LinearRegression, features=("a",)),
]
S_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.sampled_from([1e150, -1e150, 1e151, 2**63 - 1, 2**63, 0.0, -0.0, "1", "true", "x"]),
)
S_JSON = st.recursive(
    S_SCALAR,
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=3), c, max_size=3)),
    max_leaves=8,
)
S_TS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([1000, 2000, 253402300799000, -62135596800000, 0]),
    st.text(max_size=5),
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
)
S_IDS = st.one_of(st.sampled_from(["e1", "e2", "e3", "p:e1", "q1"]), S_JSON)
S_VEC = st.one_of(st.dictionaries(st.sampled_from(["a", "b", "c"]), S_SCALAR, max_size=3), S_JSON)
S_LABEL = st.one_of(S_SCALAR, S_JSON)
S_FEAT = st.fixed_dictionaries(
    {
        "view": st.one_of(st.just("v"), S_JSON),
        "event": st.one_of(st.fixed_dictionaries({"event_id": S_IDS, "ts": S_TS, "label": S_LABEL}), S_JSON),
        "features": S_VEC,
    }
)
S_PRED = st.fixed_dictionaries(
    {"view": st.one_of(st.just("v"), S_JSON), "prediction_id": S_IDS, "ts": S_TS, "features": S_VEC}
)
S_LAB = st.one_of(
    st.fixed_dictionaries({"event_id": S_IDS, "label": S_LABEL, "ts": S_TS}),
    st.fixed_dictionaries({"prediction_id": S_IDS, "label": S_LABEL, "ts": S_TS}),
)
S_REC = st.one_of(
    st.tuples(st.just("f"), S_FEAT),
    st.tuples(st.just("p"), S_PRED),
    st.tuples(st.just("l"), S_LAB),
    st.tuples(st.sampled_from("flp"), S_JSON),
)
fuzz_good = [
    (
        "f",
        {
            "view": "v",
            "event": {"event_id": f"g{i}", "ts": 1000 + i, "label": i % 2 == 0},
            "features": {"a": float(i % 3), "b": float(i % 5)},
        },
    )
    for i in range(60)
]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(S_REC, max_size=30))
def test_any_records_among_good_ones_stop_nothing_and_quarantine_nothing(bad: list[tuple[str, Any]]) -> None:
    """Any JSON on any topic, and records of the right shape with any values (ids, times, labels,
    vectors), between good records: nothing raises, no model is quarantined, every metric is a number,
    every state pickles, and the good records are learned."""
    core = LearnerCore(FUZZ_SPECS)
    r = Router(core, ROLES, sink=MemorySink())
    m = Merger({"l": 0, "f": 1, "p": 2})
    off: dict[str, int] = {}
    stream = fuzz_good[:20] + bad + fuzz_good[20:]
    for t, v in stream:
        try:
            raw = orjson.dumps(v)
        except TypeError:
            continue
        d = decode(raw)
        o = off[t] = off.get(t, -1) + 1
        m.add(t, 0, o, event_time(d), d, raw)
    for p in m.ready(lambda tp: True):
        r.process(p)
    for n, s in core.models.items():
        assert s.status == "learning", (n, s.quarantine)
        for k, val in s.metric_values().items():
            assert math.isfinite(val), (n, k, val)
        pickle.dumps(s)
    assert core.models["lr"].n_learned >= 60
    # a declared feature keeps the kind first learned for it, and a multiclass model without declared
    # classes the type of its first class: a bad labelled record that comes first (in event time) decides
    # them, and the good ones are then rejected (a known limit: declare classes)
    if all(core.models["ht"].kinds.get(f, 0) < 2 for f in ("a", "b")):  # not learned as strings
        assert core.models["ht"].n_learned >= 60
    classes = core.models["mc"].classes
    if not classes or type(next(iter(classes))) is bool:
        assert core.models["mc"].n_learned >= 60


def test_records_of_views_no_model_reads_are_not_remembered() -> None:
    spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression)
    core = LearnerCore([spec])
    router = Router(core, ROLES, track=False, sink=MemorySink())
    for i in range(5_000):  # as replay hands each features record over
        value = {"view": f"junk{i}", "event": {"event_id": f"e{i}", "ts": 1_000 + i}, "features": {"a": 1.0}}
        router.features(value, ("f", 0, i))
    router.features(feat(1, {"a": 1.0}, label=True)[1], ("f", 0, 5_000))
    # before: one cached (empty) list of models per view name ever seen, without bound
    assert set(router._by_view) == {"v"}
    assert core.models["lr"].n_learned == 1 and core.models["lr"].rejected == {}


def test_long_strings_in_pending_predictions_count_against_the_bound() -> None:
    spec = ModelSpec("nb", "binary", "v", NaNClassifier, features=("text",))
    core = LearnerCore([spec], max_pending_values=100_000)
    for i in range(20):  # 64 kB of text each: 1,002 values
        core.on_record(f"t{i}", i, {"text": "w" * 64_000})
    state = core.models["nb"]
    # before: a string counted as one value whatever its length (all 20 kept)
    assert len(state.pending) == 20 and state.pending_values == 20 * 1_002
    core = LearnerCore([spec], max_pending_values=10_000)
    for i in range(20):
        core.on_record(f"t{i}", i, {"text": "w" * 64_000})
    assert len(core.models["nb"].pending) == 9 and core.models["nb"].counters["expired"] == 11


def test_a_replay_keeps_a_bounded_number_of_labels_waiting_for_their_events() -> None:
    spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression)
    replay = Replay([spec], labels=LabelMode("records", 2))
    replay.max_recorded_labels = 100
    replay.feed(Positioned(0, 0, 0, 0, FEATURES, labelled(0, "e0", 1_000)), FEATURES)  # the range starts
    for i in range(1_000):  # labels for events that never come
        replay.feed(
            Positioned(0, 0, 0, i, LABELS, {"event_id": f"x{i}" * 50, "label": True, "ts": 2_000}), LABELS
        )
    replay.feed(Positioned(0, 0, 0, 1_000, LABELS, {"event_id": "e1", "label": True, "ts": 2_001}), LABELS)
    # before: every one of them was kept until the end of the replay
    assert len(replay.recorded_labels) == 100 and "e1" in replay.recorded_labels
    assert max(len(k) for k in replay.recorded_labels) <= 256
    replay.feed(
        Positioned(
            0,
            0,
            0,
            1,
            FEATURES,
            {**labelled(1, "e1", 1_010), "event": {"event_id": "e1", "ts": 1_010, "label": None}},
        ),
        FEATURES,
    )
    assert "e1" not in replay.recorded_labels


def test_features_predicted_but_never_learned_take_no_room() -> None:
    spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression)
    junk = feat(10_000, {f"junk{j}": 1.0 for j in range(MAX_FEATURES)})  # never labelled
    good = [feat(i, {"a": float(i % 2), "b": 1.0}, label=i % 2 == 1) for i in range(50)]
    core, _ = run([spec], [junk, *good])
    state = core.models["lr"]
    assert state.n_learned == 50 and state.rejected == {} and set(state.kinds) == {"a", "b"}
