"""Label rules per task, the numeric domain, declared classes in specs, and the label check at ingest (the
producer SDK and ``rivulet produce``)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from river import linear_model, tree

from streaming.cli.produce import CheckedMapping
from streaming.ingest.feed import publish
from streaming.ingest.producer import Producer
from streaming.ingest.rows import Row, RowMapping
from streaming.learning.domain import MAX_MAGNITUDE, check_vector, in_domain
from streaming.learning.errors import InvalidLabel, LearningError, OutOfDomain, Reason
from streaming.learning.labels import LabelCheck, check_label
from streaming.learning.spec import ModelSpec, SpecError, load_specs
from streaming.settings import Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("label", "want"),
    [(True, True), (False, False), (1, True), (0, False), (1.0, True), (0.0, False)],
)
def test_binary_labels_are_normalised_to_bool(label: Any, want: bool) -> None:
    got = check_label("binary", label)
    assert got is want


@pytest.mark.parametrize("label", ["banana", "1", 2, -1, 0.5, math.nan, None, [1], {"a": 1}, 2**64])
def test_binary_refuses_anything_else(label: Any) -> None:
    with pytest.raises(InvalidLabel) as info:
        check_label("binary", label)
    assert info.value.reason is Reason.LABEL_TYPE


def test_binary_with_declared_classes_takes_only_those() -> None:
    assert check_label("binary", "yes", ("no", "yes")) == "yes"
    for bad, reason in [("maybe", Reason.LABEL_CLASS), (True, Reason.LABEL_CLASS), (1, Reason.LABEL_CLASS)]:
        with pytest.raises(InvalidLabel) as info:
            check_label("binary", bad, ("no", "yes"))
        assert info.value.reason is reason
    # declared numbers: 1.0 is the declared 1 (returned as declared), True is not a number
    assert type(check_label("binary", 1.0, (0, 1))) is int
    with pytest.raises(InvalidLabel):
        check_label("binary", True, (0, 1))


def test_multiclass_labels() -> None:
    assert check_label("multiclass", "cat") == "cat"
    assert check_label("multiclass", 7) == 7
    assert check_label("multiclass", True) is True
    for bad in (1.5, 2.0, None, [1], 2**63):
        with pytest.raises(InvalidLabel):
            check_label("multiclass", bad)
    assert check_label("multiclass", "b", ("a", "b", "c")) == "b"
    for bad in ("d", 1, True):  # neither 1 nor True is a string class
        with pytest.raises(InvalidLabel) as info:
            check_label("multiclass", bad, ("a", "b", "c"))
        assert info.value.reason is Reason.LABEL_CLASS
    with pytest.raises(InvalidLabel) as info:  # a bool is not the declared int 1
        check_label("multiclass", True, (0, 1, 2))
    assert info.value.reason is Reason.LABEL_CLASS


def test_regression_labels_are_finite_numbers_in_the_domain() -> None:
    assert check_label("regression", 2.5) == 2.5
    assert check_label("regression", -(2**63)) == -(2**63)
    assert check_label("regression", MAX_MAGNITUDE) == MAX_MAGNITUDE
    cases = [
        (True, Reason.LABEL_TYPE),
        ("3", Reason.LABEL_TYPE),
        (None, Reason.LABEL_TYPE),
        (math.inf, Reason.LABEL_DOMAIN),
        (math.nan, Reason.LABEL_DOMAIN),
        (1e308, Reason.LABEL_DOMAIN),
        (-1e151, Reason.LABEL_DOMAIN),
        (2**63, Reason.LABEL_DOMAIN),
    ]
    for bad, reason in cases:
        with pytest.raises(InvalidLabel) as info:
            check_label("regression", bad)
        assert info.value.reason is reason, bad


def test_the_errors_are_typed_and_rooted() -> None:
    with pytest.raises(InvalidLabel) as info:
        check_label("binary", "banana")
    err = info.value
    assert isinstance(err, LearningError) and err.detail.endswith("got 'banana'")
    assert str(err) == f"label_type: {err.detail}"
    with pytest.raises(InvalidLabel, match="unknown task"):
        check_label("ranking", 1)


def test_numeric_domain() -> None:
    assert in_domain(1e150) and in_domain(-1e150) and in_domain(2**63 - 1)
    assert not in_domain(1.0000001e150) and not in_domain(math.inf) and not in_domain(-(2**63) - 1)
    # the bound is what squares safely: a sum of squares of differences of in-domain values stays finite
    assert math.isfinite(10_000_000 * (2 * MAX_MAGNITUDE) ** 2)
    check_vector({"a": 1, "b": -2.5, "c": "x", "d": None, "e": True})
    for bad in ({"a": 1e308}, {"a": math.nan}, {"a": 2**64}, {"a": [1]}, {"a": {"b": 1}}):
        with pytest.raises(OutOfDomain) as info:
            check_vector(bad)
        assert info.value.reason is Reason.VALUE_DOMAIN


def test_a_hoeffding_tree_learns_the_largest_in_domain_values_without_overflow() -> None:
    model = tree.HoeffdingTreeClassifier(grace_period=5)
    for i in range(200):
        x = {"a": MAX_MAGNITUDE * (1 if i % 2 else -1), "b": float(i)}
        model.learn_one(x, i % 3 == 0)
    proba = model.predict_proba_one({"a": MAX_MAGNITUDE, "b": 3.0})
    assert proba and all(math.isfinite(p) for p in proba.values())


def test_specs_declare_classes_and_they_are_checked(tmp_path: Path) -> None:
    spec = ModelSpec("m", "binary", "v", tree.HoeffdingTreeClassifier, classes=("no", "yes"))
    spec.check()
    # River's binary linear models learn booleans only: before, the spec passed and the model was
    # quarantined at its first good label (int('no'))
    with pytest.raises(
        SpecError, match=r"cannot learn the declared classes.*declare classes \[false, true\]"
    ):
        dataclasses.replace(spec, model=linear_model.LogisticRegression).check()
    dataclasses.replace(spec, model=linear_model.LogisticRegression, classes=(False, True)).check()
    assert spec.check_label("yes") == "yes"
    with pytest.raises(InvalidLabel):
        spec.check_label(True)
    for classes, problem in [
        (("a",), "exactly two"),
        (("a", "a"), "declared twice"),
        ((1.5, 2), "not a string"),
    ]:
        with pytest.raises(SpecError, match=problem):
            dataclasses.replace(spec, classes=classes).check()
    with pytest.raises(SpecError, match="has no classes"):
        ModelSpec("r", "regression", "v", linear_model.LinearRegression, classes=("a", "b")).check()
    yaml = tmp_path / "m.yaml"
    yaml.write_text(
        "models:\n  - name: t\n    task: multiclass\n    view: v\n"
        "    model: [tree.HoeffdingTreeClassifier]\n    classes: [cat, dog, bird]\n"
    )
    (loaded,) = load_specs(str(yaml))
    loaded.check()
    assert loaded.classes == ("cat", "dog", "bird")
    assert loaded.check_label("dog") == "dog"
    with pytest.raises(InvalidLabel):
        loaded.check_label("banana")


class Recorder:
    """Stands in for kafka-python's producer: records what was sent, each acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.sent.append((topic, value))
        return Acked()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


class Acked:
    is_done = True
    exception = None

    def failed(self) -> bool:
        return False

    def get(self, timeout: float | None = None) -> None:
        return None


def test_the_producer_sdk_checks_labels_when_asked() -> None:
    client = Recorder()
    producer = Producer(Settings(), client=client, label_check=LabelCheck.for_task("binary"))  # type: ignore[arg-type]
    with pytest.raises(InvalidLabel):
        producer.send_label("e1", "banana")
    with pytest.raises(InvalidLabel):
        producer.send({"entity": "u1", "ts": 1, "fields": {"x": 1.0}, "label": "banana"})
    assert client.sent == []  # nothing was sent
    producer.send_label("e1", 1)
    producer.send({"entity": "u1", "ts": 1, "fields": {"x": 1.0}, "label": False})
    assert len(client.sent) == 2
    unchecked = Producer(Settings(), client=Recorder())  # type: ignore[arg-type]
    unchecked.send_label("e1", "banana")  # without a check, any scalar (as before)


def test_rivulet_produce_rejects_rows_whose_label_no_model_can_take() -> None:
    client = Recorder()
    producer = Producer(Settings(), client=client)  # type: ignore[arg-type]
    specs = [
        ModelSpec("lr", "binary", "v", linear_model.LogisticRegression),
        ModelSpec("tree", "binary", "v", tree.HoeffdingTreeClassifier),
    ]
    mapping = CheckedMapping(**dataclasses.asdict(RowMapping(start_ts=0)), check=LabelCheck.for_specs(specs))
    rows = [Row(i + 1, {"entity": "u", "x": float(i), "label": y}) for i, y in enumerate([1, "banana", 0, 7])]
    report = publish(rows, producer, mapping)
    assert report.sent == 2 and [r.position for r in report.rejected] == [2, 4]
    assert "label_type: model 'lr'" in report.rejected[0].error
    assert len(client.sent) == 2
