"""The typed checkpoint header: what the learner writes reads back equal through JSON; an older header gets
defaults; a descriptive field of the wrong type is a default, a positional one is named in ``invalid`` and
refused by ``require``; and the learner writes its spec's classes and a header every reader can parse."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from river import linear_model, metrics, preprocessing
from river.datasets import synth

from streaming.learning.header import Base, CheckpointHeader, HeaderDrift, HeaderError
from streaming.learning.keys import generate
from streaming.learning.merge import OrderJournal, Positioned
from streaming.learning.registry import MemoryRegistry
from streaming.learning.router import TopicRoles
from streaming.learning.spec import CheckpointPolicy, ModelSpec
from streaming.runtime.learner import Learner, offsets_of

pytestmark = pytest.mark.unit

FULL = CheckpointHeader(
    model="m",
    version=4,
    offsets={"f": {0: 10, 2: 7}, "l": {1: 3}},
    base=Base(3, {"f": {0: 5}}),
    journal={"tps": [["f", 0], ["l", 1], ["f", 2]], "runs": [0, 5, 1, 3, 2, 7]},
    metrics={"Accuracy": 0.75, "LogLoss": None},
    counters={"learned": 15, "pending": 0},
    rejected={"label_type": 2},
    n_learned=15,
    last_learned_ts=1_700_000_000_000,
    saved_at=1_700_000_001.5,
    spec="m",
    view="customer",
    feature_hash="abc",
    drifts=(HeaderDrift("loss", 1_700_000_000_000, 9, ("f", 0, 8)), HeaderDrift("feature:x", 5, 1)),
    classes=("no", "yes"),
    key_id="k1",
    payload_sha256="00" * 32,
    payload_bytes=123,
    river="0.23.0",
    python="3.11.9",
)


def _through_json(d: dict[str, Any]) -> dict[str, Any]:
    """As the snapshot stores it: orjson with int keys as strings."""
    out: dict[str, Any] = orjson.loads(orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS))
    return out


def test_what_the_writer_writes_reads_back_equal() -> None:
    assert CheckpointHeader.of(_through_json(FULL.to_dict())) == FULL
    assert CheckpointHeader.of(FULL) is FULL


def test_the_journal_is_the_one_the_order_journal_writes_and_reads() -> None:
    j = OrderJournal()
    for tp in [("f", 0), ("f", 0), ("l", 0), ("f", 1)]:
        j.add(tp)
    h = CheckpointHeader.of(
        _through_json({"journal": j.to_header(), "base": {"version": None, "offsets": {}}})
    )
    assert h.journal == j.to_header() and h.rebuildable and h.invalid == ()
    assert list(OrderJournal.steps([h.journal])) == [("f", 0), ("f", 0), ("l", 0), ("f", 1)]


def test_offsets_agree_with_the_old_reader_and_partitions_are_ints() -> None:
    raw = _through_json({"offsets": {"f": {0: 10, 2: 7}, "l": {"1": 3}}})
    assert raw["offsets"]["f"] == {"0": 10, "2": 7}  # JSON made the partitions strings
    assert CheckpointHeader.of(raw).offsets == {"f": {0: 10, 2: 7}, "l": {1: 3}}
    assert offsets_of(raw) == CheckpointHeader.of(raw).offsets


def test_an_older_header_gets_defaults() -> None:
    h = CheckpointHeader.of({"model": "m", "version": 1, "offsets": {}, "view": "zip"})
    assert (h.model, h.version, h.view, h.offsets) == ("m", 1, "zip", {})
    assert h.base is None and h.journal is None and not h.rebuildable
    assert h.n_learned is None and h.metrics == {} and h.drifts == () and h.classes is None
    assert h.invalid == ()
    assert CheckpointHeader.of({}) == CheckpointHeader()


@pytest.mark.parametrize(
    ("field", "value", "default"),
    [
        ("metrics", ["Accuracy", 1.0], {}),
        ("counters", "many", {}),
        ("rejected", {"label_type": "2", "ok": 1, "b": True}, {"ok": 1}),
        ("n_learned", "7", None),
        ("n_learned", True, None),
        ("last_learned_ts", 1.5, None),
        ("saved_at", float("inf"), None),
        ("saved_at", True, None),
        ("spec", 3, None),
        ("view", ["v"], None),
        ("drifts", "loss", ()),
        ("drifts", [["loss", "t", 3, []], [7], "junk"], (HeaderDrift("loss", None, 3, None),)),
        ("classes", "yes", None),
        ("classes", [{"a": 1}, None], None),
        ("classes", ["cat", "dog", 3, None], ("cat", "dog", 3)),
        ("payload_bytes", "123", None),
    ],
)
def test_a_descriptive_field_of_the_wrong_type_is_its_default(field: str, value: Any, default: Any) -> None:
    h = CheckpointHeader.of({"model": "m", "version": 1, field: value})
    assert getattr(h, field) == default
    assert h.invalid == ()  # descriptive: nothing is refused for it
    assert h.require("offsets", "base", "journal") is h


def test_a_metric_that_is_not_a_finite_number_is_none() -> None:
    h = CheckpointHeader.of({"metrics": {"a": 0.5, "b": "x", "c": None, "d": 1e308 * 10, 3: 1.0}})
    assert h.metrics == {"a": 0.5, "b": None, "c": None, "d": None}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("offsets", {"f": {"p0": 1}}),
        ("offsets", {"f": {"0": "1"}}),
        ("offsets", {"f": [1, 2]}),
        ("offsets", {"f": {"0": True}}),
        ("offsets", "f:0:1"),
        ("base", {"version": "3", "offsets": {}}),
        ("base", {"version": 3, "offsets": {"f": {"x": 1}}}),
        ("base", [3]),
        ("journal", {"tps": [["f", 0]], "runs": [1, 2]}),  # a run of a partition it does not list
        ("journal", {"tps": [["f", "0"]], "runs": [0, 2]}),
        ("journal", {"tps": [["f", 0]], "runs": [0]}),
        ("journal", "0,2"),
        ("version", "1"),
        ("model", 7),
    ],
)
def test_a_positional_field_of_the_wrong_type_is_refused_by_require(field: str, value: Any) -> None:
    h = CheckpointHeader.of(
        {"model": "m", "version": 1, field: value} if field not in ("model", "version") else {field: value}
    )
    assert h.invalid == (field,)
    with pytest.raises(HeaderError, match=f"{field} has the wrong type"):
        h.require(field)
    assert h.require(*(f for f in ("offsets", "base", "journal", "model", "version") if f != field)) is h
    assert isinstance(HeaderError("m", 1, (field,)), ValueError)


# ------------------------------------------------------------ the learner writes it

ROLES = TopicRoles("f", "l", "p")


def _spec(classes: tuple[Any, ...] | None) -> ModelSpec:
    return ModelSpec(
        "lr",
        "binary",
        "v",
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics=(metrics.Accuracy,),
        checkpoint=CheckpointPolicy(every_records=1_000_000, every_seconds=3600),
        classes=classes,
    )


def _records(n: int) -> list[Positioned]:
    out = []
    for i, (x, y) in enumerate(itertools.islice(synth.Agrawal(seed=3), n)):
        value = {"view": "v", "entity": f"e{i % 5}", "event": {"event_id": f"ev{i}", "ts": i, "label": y}}
        out.append(Positioned(i, 1, i % 2, i // 2, "f", orjson.loads(orjson.dumps({**value, "features": x}))))
    return out


@pytest.mark.parametrize("classes", [(False, True), None])
def test_the_learner_writes_a_header_every_reader_parses_with_the_specs_classes(
    classes: tuple[Any, ...] | None,
) -> None:
    registry = MemoryRegistry(signer=generate())
    learner = Learner([_spec(classes)], registry, ROLES)
    for rec in _records(300):
        learner.process(rec)
    version = learner.checkpoint()["lr"]
    raw = registry.load("lr", version).header
    h = CheckpointHeader.of(raw)
    assert h.invalid == ()
    assert (h.model, h.version, h.spec, h.view, h.n_learned) == ("lr", version, "lr", "v", 300)
    assert h.classes == classes  # the API's label check reads them (the learner never wrote them before)
    assert ("classes" in raw) == (classes is not None)
    assert h.offsets == {"f": {0: 150, 1: 150}}  # the next offset of each partition
    assert h.base == Base(None, {"f": {0: 0, 1: 0}}) and h.rebuildable
    assert h.journal is not None and len(list(OrderJournal.steps([h.journal]))) == 300
    assert h.key_id == registry.signer_id and h.payload_bytes and h.river and h.python
    assert h.metrics.keys() == {"Accuracy", "rolling_Accuracy"} and h.counters["learned"] == 300
    # nothing the learner writes is lost or changed by the typed reader
    assert _through_json(CheckpointHeader.of(raw).to_dict()) == raw


def test_the_api_sees_the_classes_the_learner_declares() -> None:
    """The API's label check reads a loaded model's ``classes`` from its header: the learner never wrote
    them, so a served binary model with declared classes took any label its task could."""
    from serving.models import ModelCache

    registry = MemoryRegistry(signer=generate())
    learner = Learner([_spec((False, True))], registry, ROLES)
    for rec in _records(50):
        learner.process(rec)
    version = learner.checkpoint()["lr"]
    loaded = ModelCache(registry, {})._load("lr")
    assert loaded is not None and loaded.version == version
    assert loaded.classes == (False, True)
    assert loaded.header == CheckpointHeader.of(registry.load("lr", version).header)
    assert loaded.rejected() == dict(loaded.header.rejected)
