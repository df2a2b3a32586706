"""One bad record never stops or corrupts learning: the router rejects it (counted, dead-lettered with its
reason, position and bytes), and the models learn on the good records exactly as if it had never been sent.
A model that raises inside River is rejected for that record (predict) or quarantined (learn)."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import orjson
import pytest
from river import base, compose, linear_model, metrics, preprocessing, tree
from river.datasets import synth

from streaming.learning.core import LearnerCore
from streaming.learning.deadletters import MemorySink
from streaming.learning.keys import generate
from streaming.learning.merge import Positioned, decode, event_time
from streaming.learning.registry import MemoryRegistry
from streaming.learning.router import Router, TopicRoles
from streaming.learning.spec import CheckpointPolicy, ModelSpec
from streaming.runtime.learner import Learner

pytestmark = pytest.mark.unit

ROLES = TopicRoles("f", "l", "p")
METRICS = (metrics.Accuracy, metrics.LogLoss)


def scaled_lr() -> compose.Pipeline:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


class Fragile(base.Classifier):
    """A classifier that raises in ``learn_one`` (or ``predict_proba_one``) on one value of ``x``."""

    def __init__(self, learn_fails_at: float = -1.0, predict_fails_at: float = -1.0) -> None:
        self.learn_fails_at = learn_fails_at
        self.predict_fails_at = predict_fails_at
        self.counts: dict[Any, int] = {}

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        if x.get("salary") == self.learn_fails_at:
            raise ValueError("cannot learn this one")
        self.counts[y] = self.counts.get(y, 0) + 1

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        if x.get("salary") == self.predict_fails_at:
            raise OverflowError("cannot predict this one")
        total = sum(self.counts.values())
        return {c: n / total for c, n in self.counts.items()} if total else {}


SPECS = [
    ModelSpec("lr", "binary", "v", scaled_lr, metrics=METRICS),
    ModelSpec("tree", "binary", "v", tree.HoeffdingTreeClassifier, metrics=METRICS),
]


def good_stream(n: int = 1_500) -> list[tuple[str, dict[str, Any]]]:
    """(topic, value) of a good stream: features records, each labelled 3 records later on the labels
    topic (every 5th inline instead)."""
    data = list(itertools.islice(synth.Agrawal(classification_function=2, seed=11), n))
    out: list[tuple[str, dict[str, Any]]] = []
    for i, (x, y) in enumerate(data):
        inline = i % 5 == 0
        event = {"event_id": f"e{i}", "ts": 10 * i, "label": y if inline else None}
        out.append(("f", {"view": "v", "entity": f"u{i % 9}", "event": event, "features": x}))
        j = i - 3
        if j >= 0 and j % 5:
            out.append(("l", {"event_id": f"e{j}", "label": data[j][1], "ts": 10 * i + 1}))
    return out


def oracle(model: Any, stream: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, float], int]:
    """A plain River loop over the same good records: predict on each record, score and learn when its
    label is known (River's progressive validation with late labels)."""
    ms = [m() for m in METRICS]
    pending: dict[str, tuple[dict[str, Any], Any, dict[Any, float]]] = {}
    learned = 0

    def learn(x: dict[str, Any], y: Any, pred: Any, proba: dict[Any, float]) -> None:
        nonlocal learned
        for m in ms:
            if m.requires_labels:
                if pred is not None:
                    m.update(y, pred)
            elif proba:
                m.update(y, proba)
        model.learn_one(x, y)
        learned += 1

    for topic, value in stream:
        if topic == "f":
            x = value["features"]
            pred, proba = model.predict_one(x), model.predict_proba_one(x)
            y = value["event"]["label"]
            if y is None:
                pending[value["event"]["event_id"]] = (x, pred, proba)
            else:
                learn(x, y, pred, proba)
        else:
            x, pred, proba = pending.pop(value["event_id"])
            learn(x, value["label"], pred, proba)
    return {type(m).__name__: m.get() for m in ms}, learned


def positioned(stream: list[tuple[str, Any]]) -> list[Positioned]:
    """Each value as Kafka would carry it: its bytes, decoded as the learner does."""
    out = []
    offsets = {"f": 0, "l": 0, "p": 0}
    for topic, value in stream:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        data = decode(raw)
        out.append(Positioned(event_time(data), 0, 0, offsets[topic], topic, data, raw))
        offsets[topic] += 1
    return out


def with_bad_records(stream: list[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """The good stream with bad records slipped in: (the stream, [(topic, expected reason)] in order)."""
    bad: list[tuple[str, Any, str]] = [
        ("l", {"event_id": "e1", "label": "banana", "ts": 15}, "label_type"),  # e1 is labelled later
        ("l", {"event_id": "e7", "label": 2, "ts": 75}, "label_type"),
        ("l", {"event_id": "e8", "label": 0.5, "ts": 85}, "label_type"),
        ("l", {"prediction_id": "p1", "label": True}, "malformed_label"),  # no time
        ("l", b"\xff\xfe not json", "undecodable"),
        ("f", b"", "undecodable"),
        ("f", {"view": "v", "features": {"salary": 1.0}}, "malformed_features"),
        ("f", {"no": "view"}, "malformed_features"),
        ("f", [1, 2, 3], "undecodable"),
        (
            "f",
            {"view": "v", "event": {"event_id": "huge", "ts": 95}, "features": {"salary": 1e308, "age": 30}},
            "value_domain",
        ),
        ("f", b'{"view":"v","event":{"event_id":"inf","ts":96},"features":{"x":1e400}}', "undecodable"),
        (
            "f",
            {"view": "v", "event": {"event_id": "big", "ts": 96, "label": True}, "features": {"x": -1e151}},
            "value_domain",
        ),
        (
            "f",
            {"view": "v", "event": {"event_id": "nested", "ts": 97}, "features": {"x": [1.0]}},
            "value_domain",
        ),
        ("p", {"prediction_id": "pp", "view": "v", "ts": 98, "features": {"salary": 1e308}}, "value_domain"),
        ("p", {"prediction_id": 3, "view": "v", "ts": 99, "features": {}}, "malformed_prediction"),
    ]
    out = list(stream)
    expected = []
    for k, (topic, value, _) in enumerate(bad):
        out.insert(4 + 38 * k, (topic, value))  # spread through the stream
    for topic, value in out:
        for _, v, reason in bad:
            if v is value:
                expected.append((topic, reason))
    return out, expected


def test_bad_records_are_rejected_and_the_good_ones_learn_exactly_as_without_them() -> None:
    good = good_stream()
    mixed, expected = with_bad_records(good)
    sink = MemorySink()
    core = LearnerCore(SPECS)
    router = Router(core, ROLES, sink=sink)
    recs = positioned(mixed)
    for rec in recs:
        router.process(rec)

    for spec in SPECS:
        want, learned = oracle(spec.new_model(), good)
        state = core.models[spec.name]
        assert state.metric_values()["Accuracy"] == want["Accuracy"]
        assert state.metric_values()["LogLoss"] == want["LogLoss"]
        assert state.n_learned == learned
        # each bad record counted once per model, by reason
        counted: dict[str, int] = {}
        for _, reason in expected:
            counted[reason] = counted.get(reason, 0) + 1
        assert state.rejected == counted
    assert set(core.models["tree"].model.predict_proba_one(good[0][1]["features"])) <= {False, True}

    letters = list(sink.letters)
    assert [(d.record.topic, d.reason) for d in letters] == expected
    for d in letters:
        assert d.stage == "learner" and d.models == ("lr", "tree")
        (original,) = [r.raw for r in recs if (r.topic, r.offset) == (d.record.topic, d.record.offset)]
        assert d.record.value == original
        wire = orjson.loads(d.to_json())
        assert base64.b64decode(wire["value_b64"]) == original
        assert (wire["topic"], wire["partition"], wire["offset"]) == (d.record.topic, 0, d.record.offset)


def test_banana_never_becomes_a_class_of_a_hoeffding_tree() -> None:
    core = LearnerCore([SPECS[1]])
    router = Router(core, ROLES, sink=MemorySink())
    stream = good_stream(300)
    stream.insert(10, ("l", {"event_id": "e2", "label": "banana", "ts": 25}))
    for rec in positioned(stream):
        router.process(rec)
    model = core.models["tree"].model
    proba = model.predict_proba_one(stream[0][1]["features"])
    assert set(proba) <= {False, True}
    assert core.models["tree"].rejected == {"label_type": 1}


def test_a_label_invalid_for_one_model_is_rejected_for_that_model_only() -> None:
    multi = ModelSpec("multi", "multiclass", "v", tree.HoeffdingTreeClassifier, metrics=(metrics.Accuracy,))
    declared = ModelSpec(
        "declared",
        "multiclass",
        "v",
        tree.HoeffdingTreeClassifier,
        classes=("a", "b"),
        metrics=(metrics.Accuracy,),
    )
    sink = MemorySink()
    core = LearnerCore([SPECS[0], multi, declared])
    router = Router(core, ROLES, sink=sink)
    x = {"salary": 1.0, "age": 3.0}
    router.process(
        Positioned(1, 1, 0, 0, "f", {"view": "v", "event": {"event_id": "a", "ts": 1}, "features": x})
    )
    router.process(Positioned(2, 0, 0, 0, "l", {"event_id": "a", "label": "banana", "ts": 2}))
    assert core.models["multi"].n_learned == 1  # a string is a class for an undeclared multiclass model
    assert core.models["lr"].n_learned == 0 and core.models["declared"].n_learned == 0
    assert core.models["lr"].rejected == {"label_type": 1}
    assert core.models["declared"].rejected == {"label_class": 1}
    assert core.models["lr"].counters["pending"] == 1  # still waiting for a label it can take
    assert sorted((d.reason, d.models) for d in sink.letters) == [
        ("label_class", ("declared",)),
        ("label_type", ("lr",)),
    ]


def test_a_model_that_raises_in_learn_one_is_quarantined_and_the_others_learn_on() -> None:
    good = good_stream(600)
    fails_at = good[40][1]["features"]["salary"]
    fragile = ModelSpec("fragile", "binary", "v", lambda: Fragile(learn_fails_at=fails_at), metrics=METRICS)
    core = LearnerCore([fragile, *SPECS])
    sink = MemorySink()
    router = Router(core, ROLES, sink=sink)
    for rec in positioned(good):
        router.process(rec)
    state = core.models["fragile"]
    assert state.status == "quarantined" and "cannot learn this one" in (state.quarantine or "")
    assert state.rejected == {"learn_error": 1}
    learned_then = state.n_learned
    assert learned_then < 100  # it stopped at the failing record
    for spec in SPECS:  # the others exactly as alone
        want, learned = oracle(spec.new_model(), good)
        assert core.models[spec.name].metric_values()["Accuracy"] == want["Accuracy"]
        assert core.models[spec.name].n_learned == learned
    assert [d.reason for d in sink.letters] == ["learn_error"]


def test_a_quarantined_model_is_not_checkpointed_so_its_last_good_version_serves() -> None:
    good = good_stream(400)
    fails_at = good[300][1]["features"]["salary"]
    fragile = ModelSpec(
        "fragile",
        "binary",
        "v",
        lambda: Fragile(learn_fails_at=fails_at),
        metrics=(metrics.Accuracy,),
        checkpoint=CheckpointPolicy(every_records=10**9, every_seconds=10**9),
    )
    registry = MemoryRegistry(signer=generate())
    learner = Learner([fragile], registry, ROLES)
    recs = positioned(good)
    for rec in recs[:100]:
        learner.process(rec)
    assert learner.checkpoint() == {"fragile": 1}
    for rec in recs[100:]:
        learner.process(rec)
    assert learner.core.models["fragile"].quarantined
    assert learner.checkpoint() == {}  # nothing written from the failed state
    assert registry.current_version("fragile") == 1
    latest = registry.history("fragile")[-1]  # the status, where the dashboard and the API read it
    assert latest["status"] == "quarantined" and "cannot learn this one" in latest["quarantine"]
    assert latest["version"] == 1


def test_a_model_that_raises_in_predict_has_that_record_rejected_for_it_only() -> None:
    good = good_stream(300)
    at = next(i for i, (t, v) in enumerate(good) if t == "f" and v["event"]["event_id"] == "e21")
    fails_at = good[at][1]["features"]["salary"]
    fragile = ModelSpec("fragile", "binary", "v", lambda: Fragile(predict_fails_at=fails_at), metrics=METRICS)
    core = LearnerCore([fragile, SPECS[0]])
    sink = MemorySink()
    router = Router(core, ROLES, sink=sink)
    for rec in positioned(good):
        router.process(rec)
    state = core.models["fragile"]
    assert state.status == "learning" and state.rejected == {"model_error": 1}
    # for it, the record it could not predict on is as if never sent: its late label joins nothing (held)
    without = [(t, v) for t, v in good if v is not good[at][1] and v.get("event_id") != "e21"]
    want, learned = oracle(Fragile(), without)
    assert state.n_learned == learned and state.metric_values()["Accuracy"] == want["Accuracy"]
    assert state.counters["early_labels"] == 1  # e21's label waits for a record it will never see
    assert core.models["lr"].n_learned == oracle(scaled_lr(), good)[1]
    assert [(d.reason, d.models) for d in sink.letters] == [("model_error", ("fragile",))]


def test_huge_values_in_served_predictions_and_features_never_reach_a_hoeffding_tree() -> None:
    spec = ModelSpec("tree", "binary", "v", tree.HoeffdingTreeClassifier, metrics=(metrics.Accuracy,))
    core = LearnerCore([spec])
    sink = MemorySink()
    router = Router(core, ROLES, sink=sink)
    stream: list[tuple[str, Any]] = good_stream(400)
    x = dict(stream[0][1]["features"])
    stream.insert(
        50, ("p", {"prediction_id": "q1", "view": "v", "ts": 300, "features": {**x, "salary": 1e308}})
    )
    stream.insert(51, ("l", {"prediction_id": "q1", "label": True, "ts": 301}))
    stream.insert(
        60,
        (
            "f",
            {
                "view": "v",
                "event": {"event_id": "h", "ts": 302, "label": False},
                "features": {**x, "salary": -1e308},
            },
        ),
    )
    for rec in positioned(stream):
        router.process(rec)  # the old learner raised OverflowError here
    state = core.models["tree"]
    assert state.rejected == {"value_domain": 2}
    assert state.n_learned == oracle(tree.HoeffdingTreeClassifier(), good_stream(400))[1]
    assert set(state.model.predict_proba_one(x)) <= {False, True}  # still usable
    assert [d.reason for d in sink.letters] == ["value_domain", "value_domain"]


def test_a_record_without_an_event_time_never_holds_back_the_records_behind_it() -> None:
    from streaming.learning.merge import Merger

    merger = Merger({"l": 0, "f": 1})
    for offset, raw in enumerate([b"\xff not json", b'{"event_id": "a", "label": true, "ts": 20}']):
        data = decode(raw)  # the learner used the Kafka timestamp for the first: it held back the label
        merger.add("l", 0, offset, event_time(data), data, raw)
    for offset, ts in enumerate([10, 30]):
        merger.add("f", 0, offset, ts, {"event": {"ts": ts}})
    order = [(r.topic, r.offset) for r in merger.ready(lambda tp: True)]
    # the label at 20 comes between the records at 10 and 30, as if the bad record had never been sent
    assert order == [("l", 0), ("f", 0), ("l", 1), ("f", 1)]
