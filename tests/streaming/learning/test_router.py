"""The router (:class:`streaming.learning.router.Router`) tested directly: each validation outcome goes
where it should (the reason, the models it is rejected for, the dead letter with its position and bytes,
or the core), per model; and the positions, journals and bases it keeps for checkpoints.

Four models: ``a`` and ``d`` (binary, ``d`` declares feature ``x``) and ``r`` (regression) read view ``v``;
``w`` (binary) reads view ``w``. The models are tiny deterministic ones, so what each learned is exact."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from river import linear_model

from streaming.learning.core import LearnerCore
from streaming.learning.deadletters import MemorySink
from streaming.learning.merge import Positioned, Undecodable, decode, event_time
from streaming.learning.router import Router, TopicRoles
from streaming.learning.spec import DriftPolicy, ModelSpec
from tests.streaming.learning.test_core_flow import Fixed as Recorder  # True at 0.75; keeps what it learned

pytestmark = pytest.mark.unit

ROLES = TopicRoles("f", "l", "p")
ALL = ["a", "d", "r", "w"]
V = ["a", "d", "r"]


def specs() -> list[ModelSpec]:
    return [
        ModelSpec("a", "binary", "v", Recorder),
        ModelSpec("d", "binary", "v", Recorder, features=("x",)),
        ModelSpec("r", "regression", "v", linear_model.LinearRegression),
        ModelSpec("w", "binary", "w", Recorder),
    ]


class Rig:
    def __init__(self, track: bool = True, spec_list: list[ModelSpec] | None = None) -> None:
        self.core = LearnerCore(spec_list or specs())
        self.sink = MemorySink()
        self.router = Router(self.core, ROLES, track=track, sink=self.sink)
        self.offsets = {"f": 0, "l": 0, "p": 0}

    def send(self, topic: str, value: Any) -> Positioned:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        data = decode(raw)
        rec = Positioned(event_time(data), 0, 0, self.offsets[topic], topic, data, raw, b"key")
        self.offsets[topic] += 1
        self.router.process(rec)
        return rec

    def rejected(self) -> dict[str, dict[str, int]]:
        return {m: dict(st.rejected) for m, st in self.core.models.items() if st.rejected}

    def letters(self) -> list[tuple[str, tuple[str, ...] | None, str, int]]:
        return [(d.reason, d.models, d.record.topic, d.record.offset) for d in self.sink.letters]

    def counter(self, name: str) -> dict[str, int]:
        return {m: st.counters[name] for m, st in self.core.models.items()}


def features(
    event_id: str = "e1", ts: int = 100, label: Any = None, view: str = "v", **x: Any
) -> dict[str, Any]:
    event = {"event_id": event_id, "ts": ts, **({} if label is None else {"label": label})}
    return {"view": view, "features": x or {"x": 1.0}, "event": event}


# ---------------------------------------------------------------- rejections


def test_an_undecodable_record_is_rejected_for_every_model_with_its_bytes() -> None:
    rig = Rig()
    rec = rig.send("f", b"\xff not json")
    assert isinstance(rec.value, Undecodable)
    rig.send("l", b"[1, 2]")  # JSON, not an object
    assert rig.letters() == [("undecodable", tuple(ALL), "f", 0), ("undecodable", tuple(ALL), "l", 0)]
    assert rig.sink.letters[0].record.value == b"\xff not json" and rig.sink.letters[0].record.key == b"key"
    assert "not a JSON object: list" in rig.sink.letters[1].error
    assert rig.sink.letters[0].stage == "learner"
    assert rig.rejected() == {m: {"undecodable": 2} for m in ALL}
    assert rig.counter("predicted") == dict.fromkeys(ALL, 0)


@pytest.mark.parametrize(
    ("topic", "value", "reason"),
    [
        ("f", {"features": {"x": 1.0}, "event": {"event_id": "e", "ts": 1}}, "malformed_features"),
        ("f", {"view": 3, "features": {"x": 1.0}, "event": {"event_id": "e", "ts": 1}}, "malformed_features"),
        ("p", {"view": None, "prediction_id": "p1", "features": {}, "ts": 1}, "malformed_prediction"),
    ],
)
def test_a_record_without_a_view_is_rejected_for_every_model_of_every_view(
    topic: str, value: dict[str, Any], reason: str
) -> None:
    rig = Rig()
    rig.send(topic, value)
    assert rig.letters() == [(reason, tuple(ALL), topic, 0)]
    assert rig.sink.letters[0].error == "no view"
    assert orjson.loads(rig.sink.letters[0].record.value or b"") == value


def test_a_view_no_model_reads_is_neither_rejected_nor_predicted_but_consumed() -> None:
    rig = Rig()
    rig.send("f", features(view="nobody"))
    rig.send("p", {"view": "nobody", "prediction_id": "p1", "features": {"x": 1.0}, "ts": 5})
    assert rig.letters() == [] and rig.rejected() == {}
    assert rig.counter("predicted") == dict.fromkeys(ALL, 0)
    assert {m: rig.router.offsets[m] for m in ALL} == {m: {"f": {0: 1}, "p": {0: 1}} for m in ALL}


@pytest.mark.parametrize(
    "bad",
    [
        {"view": "v", "features": [1.0], "event": {"event_id": "e", "ts": 1}},  # vector not a mapping
        {"view": "v", "features": {"x": 1.0}, "event": {"ts": 1}},  # no event id
        {"view": "v", "features": {"x": 1.0}, "event": {"event_id": "e" * 201, "ts": 1}},  # id too long
        {"view": "v", "features": {"x": 1.0}, "event": {"event_id": "e", "ts": True}},  # time not an int
        {"view": "v", "features": {"x": 1.0}, "event": {"event_id": "e", "ts": "1"}},
        {"view": "v", "features": {"x": 1.0}},  # no event
    ],
)
def test_a_malformed_features_record_is_rejected_for_its_views_models_only(bad: dict[str, Any]) -> None:
    rig = Rig()
    rig.send("f", bad)
    assert rig.letters() == [("malformed_features", tuple(V), "f", 0)]
    assert rig.rejected() == {m: {"malformed_features": 1} for m in V}
    assert rig.counter("predicted") == dict.fromkeys(ALL, 0)


def test_a_value_out_of_the_domain_is_rejected_for_the_views_models() -> None:
    rig = Rig()
    rig.send("f", features(x=1e300))
    rig.send("p", {"view": "v", "prediction_id": "p1", "features": {"x": [1]}, "ts": 5})
    assert rig.letters() == [("value_domain", tuple(V), "f", 0), ("value_domain", tuple(V), "p", 0)]
    assert rig.counter("predicted") == dict.fromkeys(ALL, 0)


def test_a_declared_feature_missing_rejects_the_record_for_that_model_only() -> None:
    rig = Rig()
    rig.send("f", features(y=2.0))
    assert rig.letters() == [("malformed_features", ("d",), "f", 0)]
    assert rig.sink.letters[0].error == "no features ['x']"
    assert rig.counter("predicted") == {"a": 1, "d": 0, "r": 1, "w": 0}
    assert rig.counter("pending") == {"a": 1, "d": 0, "r": 1, "w": 0}


def test_an_inline_label_is_learned_by_the_models_whose_task_takes_it_and_rejected_for_the_others() -> None:
    rig = Rig()
    rig.send("f", features(label=True, x=2.0))
    assert rig.letters() == [("label_type", ("r",), "f", 0)]
    assert rig.counter("learned") == {"a": 1, "d": 1, "r": 0, "w": 0}
    assert rig.core.models["a"].model.seen == [({"x": 2.0}, True)]  # type: ignore[attr-defined]
    # the record is rejected for r: r does not predict on it either
    assert rig.counter("predicted") == {"a": 1, "d": 1, "r": 0, "w": 0}
    rig.send("l", {"event_id": "e1", "label": 3.5, "ts": 200})  # a number: r's, not the classifiers'
    assert rig.letters()[1] == ("label_type", ("a", "d", "w"), "l", 0)
    assert rig.counter("early_labels") == {"a": 0, "d": 0, "r": 1, "w": 0}  # held for a record r never took
    assert rig.counter("learned") == {"a": 1, "d": 1, "r": 0, "w": 0}
    rig.send("f", features(event_id="e1", ts=300, x=2.0))  # redelivered unlabelled: r joins the held label
    assert rig.counter("learned") == {"a": 1, "d": 1, "r": 1, "w": 0}
    assert rig.counter("duplicate_records") == {"a": 1, "d": 1, "r": 0, "w": 0}


def test_a_served_prediction_is_pending_under_its_id_and_learned_by_its_label() -> None:
    rig = Rig()
    rig.send("p", {"view": "v", "prediction_id": "p1", "features": {"x": 4.0}, "ts": 5})
    assert rig.letters() == []
    assert {m: sorted(rig.core.models[m].pending) for m in ALL} == {
        "a": ["p:p1"],
        "d": ["p:p1"],
        "r": ["p:p1"],
        "w": [],
    }
    rig.send("l", {"prediction_id": "p1", "label": False, "ts": 9})
    assert rig.counter("learned") == {"a": 1, "d": 1, "r": 0, "w": 0}
    assert rig.core.models["d"].model.seen == [({"x": 4.0}, False)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "bad",
    [
        {"view": "v", "features": {"x": 1.0}, "ts": 5},  # no prediction id
        {"view": "v", "prediction_id": "", "features": {"x": 1.0}, "ts": 5},
        {"view": "v", "prediction_id": "p1", "features": "x", "ts": 5},
        {"view": "v", "prediction_id": "p1", "features": {"x": 1.0}, "ts": 5.5},
    ],
)
def test_a_malformed_served_prediction_is_rejected_for_its_views_models(bad: dict[str, Any]) -> None:
    rig = Rig()
    rig.send("p", bad)
    assert rig.letters() == [("malformed_prediction", tuple(V), "p", 0)]
    assert rig.sink.letters[0].error == "no prediction_id, features or time"
    assert rig.counter("pending") == dict.fromkeys(ALL, 0)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"label": True, "ts": 5}, None),  # no id
        ({"event_id": "e1", "label": [True], "ts": 5}, None),  # not a scalar
        ({"event_id": "e" * 201, "label": True, "ts": 5}, "at most 200 characters"),
        ({"prediction_id": "", "label": True, "ts": 5}, "at least 1 character"),
    ],
)
def test_a_malformed_label_is_rejected_for_every_model(bad: dict[str, Any], error: str | None) -> None:
    rig = Rig()
    rig.send("f", features())
    rig.send("l", bad)
    assert rig.letters() == [("malformed_label", tuple(ALL), "l", 0)]
    if error is not None:
        assert error in rig.sink.letters[0].error
    assert rig.counter("learned") == dict.fromkeys(ALL, 0)
    assert rig.counter("pending") == {"a": 1, "d": 1, "r": 1, "w": 0}


def test_a_label_before_its_record_is_held_not_rejected() -> None:
    rig = Rig()
    rig.send("l", {"event_id": "e1", "label": True, "ts": 5})
    assert rig.counter("early_labels") == {"a": 1, "d": 1, "r": 0, "w": 1}  # every view: ids are shared
    assert rig.letters() == [("label_type", ("r",), "l", 0)]  # checked against each task first
    rig.send("f", features(x=3.0))
    assert rig.counter("learned") == {"a": 1, "d": 1, "r": 0, "w": 0}


def test_a_quarantined_model_is_left_out_of_every_rejection() -> None:
    rig = Rig()
    rig.core.quarantine(rig.core.models["a"], "test")
    rig.send("f", b"{")
    rig.send("f", features(label="banana"))
    assert rig.letters() == [("undecodable", ("d", "r", "w"), "f", 0), ("label_type", ("d", "r"), "f", 1)]
    assert "a" not in rig.rejected()
    assert rig.counter("predicted")["a"] == 0


def test_rejections_of_several_reasons_on_one_record_are_one_letter_each() -> None:
    rig = Rig()
    rig.send("f", features(label=2.5, x=1.0))  # r takes it; a and d refuse a number for a binary task
    rig.send("f", features(event_id="e2", label=True, y=1.0))  # d: no x; r: a bool for regression
    assert rig.letters() == [
        ("label_type", ("a", "d"), "f", 0),
        ("malformed_features", ("d",), "f", 1),
        ("label_type", ("r",), "f", 1),
    ]


def test_without_a_sink_rejections_are_counted_only() -> None:
    core = LearnerCore(specs())
    router = Router(core, ROLES, sink=None)
    router.undecodable(Undecodable("not JSON"), ("f", 0, 3))
    assert {m: dict(st.rejected) for m, st in core.models.items()} == {m: {"undecodable": 1} for m in ALL}


def test_a_handler_called_directly_rejects_for_the_models_it_is_given() -> None:
    core = LearnerCore(specs())
    sink = MemorySink()
    router = Router(core, ROLES, track=False, sink=sink)
    router.features(features(view="v"), ("f", 0, 7), ["d", "w"], raw=b"raw", key=b"k")
    assert core.models["d"].counters["predicted"] == 1 and core.models["a"].counters["predicted"] == 0
    router.undecodable(Undecodable("x"), ("f", 0, 8), ["w"])
    assert [(d.reason, d.models, d.record.offset) for d in sink.letters] == [("undecodable", ("w",), 8)]
    router.join("e1", True, 50, ("l", 0, 1), ["a", "d", "r"])  # a held label revealed: d learns, r refuses
    assert core.models["d"].counters["learned"] == 1
    assert sink.letters[-1].reason == "label_type" and sink.letters[-1].models == ("r",)
    assert orjson.loads(sink.letters[-1].record.value or b"") == {"event_id": "e1", "label": True, "ts": 50}
    assert router.offsets == {}  # track=False keeps no positions


# ---------------------------------------------------------------- positions, journals, bases


def test_positions_journals_and_bases_follow_each_model() -> None:
    rig = Rig()
    rig.router.start("a", {"f": {0: 2}}, 7)  # restored: it has processed f:0 up to offset 2
    for i in range(3):
        rig.send("f", features(event_id=f"e{i}"))
    rig.send("l", {"event_id": "e0", "label": True, "ts": 500})
    rig.send("f", features(event_id="e3"))
    router = rig.router
    assert router.offsets["a"] == {"f": {0: 4}, "l": {0: 1}}
    assert router.offsets["d"] == {"f": {0: 4}, "l": {0: 1}}
    assert rig.counter("predicted") == {"a": 2, "d": 4, "r": 4, "w": 0}  # a skipped what it had processed
    assert router.bases["a"] == {"version": 7, "offsets": {"f": {0: 2}, "l": {0: 0}}}
    assert router.bases["d"] == {"version": None, "offsets": {"f": {0: 0}, "l": {0: 0}}}
    assert list(router.journals["a"].steps([router.journals["a"].to_header()])) == [
        ("f", 0),
        ("l", 0),
        ("f", 0),
    ]
    assert len(router.journals["d"]) == 5
    assert rig.core.models["a"].counters["duplicate_records"] == 0
    router.rebase("d", 8)
    assert (
        router.bases["d"] == {"version": 8, "offsets": {"f": {0: 4}, "l": {0: 1}}}
        and len(router.journals["d"]) == 0
    )
    assert router.fresh("d", Positioned(0, 0, 0, 4, "f", None)) and not router.fresh(
        "d", Positioned(0, 0, 0, 3, "f", None)
    )


class AlwaysWorse:
    """A drift detector that sees a drift for the worse on every update."""

    drift_detected = True
    estimation = 2.0

    def update(self, x: float) -> None:
        pass


def test_a_challenger_born_on_a_record_starts_at_the_positions_of_its_champion_after_it() -> None:
    spec = ModelSpec("a", "binary", "v", Recorder, drift=DriftPolicy(AlwaysWorse, reaction="challenger"))
    rig = Rig(spec_list=[spec])
    rig.send("f", features(event_id="e0"))
    rig.send("f", features(event_id="e1", ts=150, label=True))  # learned: a drift, a challenger "a~150"
    assert sorted(rig.core.models) == ["a", "a~150"]
    assert rig.router.offsets["a~150"] == rig.router.offsets["a"] == {"f": {0: 2}}
    assert rig.router.bases["a~150"] == {"version": None, "offsets": {"f": {0: 2}}}
    assert len(rig.router.journals["a~150"]) == 0
    rig.send("f", features(event_id="e2", ts=160))
    assert rig.core.models["a~150"].counters["predicted"] == 1 and rig.router.offsets["a~150"] == {
        "f": {0: 3}
    }
