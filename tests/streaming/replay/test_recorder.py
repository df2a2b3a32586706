"""The recording learner core and the dataset file, without services.

Oracles: a plain :class:`LearnerCore` fed the same records (recording changes nothing the model learns),
the order River's progressive validation learns in, and the bytes and hash of files written twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from river import linear_model, metrics

from streaming.learning.core import LearnerCore
from streaming.learning.spec import ModelSpec
from streaming.replay import dataset
from streaming.replay.recorder import Recorder, Row

pytestmark = pytest.mark.unit


def lr_spec(name: str = "lr") -> ModelSpec:
    return ModelSpec(name, "binary", "v", linear_model.LogisticRegression, metrics=(metrics.LogLoss,))


class Exploding(linear_model.LogisticRegression):
    def learn_one(self, x: dict[str, Any], y: Any, **kw: Any) -> None:
        if x.get("boom"):
            raise RuntimeError("boom")
        super().learn_one(x, y, **kw)


def feed(core: LearnerCore) -> None:
    core.on_label("e0", True, 500, ("l", 0, 0))  # before its record: held
    core.on_record("e0", 1_000, {"a": 1.0}, position=("f", 0, 0))
    core.on_record("e1", 2_000, {"a": 2.0}, label=False, position=("f", 0, 1))
    core.on_record("e2", 3_000, {"a": 3.0}, position=("f", 0, 2))
    core.on_record("e3", 4_000, {"a": 4.0, "b": 1.0}, position=("f", 1, 0))
    core.on_label("e3", True, 4_500, ("l", 0, 1))
    core.on_label("e2", False, 5_000, ("l", 0, 2))
    core.on_record("e4", 9_000, {"a": 5.0}, position=("f", 1, 1))  # never labelled


def test_rows_follow_the_cores_join_and_change_nothing_it_learns() -> None:
    plain, rec = LearnerCore([lr_spec()]), Recorder([lr_spec()], "lr")
    feed(plain)
    feed(rec)
    a, b = plain.models["lr"], rec.models["lr"]
    assert a.metric_values() == b.metric_values() and a.counters == b.counters
    assert a.model.weights == b.model.weights
    got = [(r.key, r.label, r.predicted_step, r.learned_step, r.label_position) for r in rec.rows]
    assert got == [
        ("e0", True, 0, 1, ("f", 0, 0)),  # its label came first: learned as it was predicted, there
        ("e1", False, 2, 3, ("f", 0, 1)),  # inline
        ("e2", False, 4, 7, ("l", 0, 2)),  # late, after e3's
        ("e3", True, 5, 6, ("l", 0, 1)),
        ("e4", None, 8, None, None),
    ]
    assert rec.rows[3].x == {"a": 4.0, "b": 1.0} and rec.rows[3].learned_ts == 4_500
    assert b.n_learned == sum(r.learned_step is not None for r in rec.rows)


def test_only_the_target_is_recorded_and_a_failed_learning_is_no_label() -> None:
    other = ModelSpec("x", "binary", "v", Exploding, metrics=(metrics.LogLoss,))
    rec = Recorder([lr_spec(), other], "x")
    rec.see({"view": "v", "entity": "u1", "event": {"event_id": "e1"}})
    rec.on_record("e1", 1, {"a": 1.0}, label=True, position=("f", 0, 0))
    rec.see({"view": "v", "entity": "u2", "event": {"event_id": "other"}})  # not this record's
    rec.on_record("e2", 2, {"a": 1.0, "boom": 1.0}, label=True, position=("f", 0, 1))
    assert [(r.key, r.entity, r.label) for r in rec.rows] == [("e1", "u1", True), ("e2", None, None)]
    assert rec.models["x"].status == "quarantined" and rec.models["lr"].n_learned == 2


def test_an_expired_prediction_is_never_learned() -> None:
    rec = Recorder([lr_spec()], "lr", max_pending=1)
    rec.on_record("old", 1_000, {"a": 1.0}, position=("f", 0, 0))
    rec.on_record("new", 10_000, {"a": 2.0}, position=("f", 0, 1))
    assert rec.on_label("old", True, 10_000) != "learned"
    assert [(r.key, r.label) for r in rec.rows] == [("old", None), ("new", None)]


def rows() -> list[Row]:
    return [
        Row("e1", 5, ("f", 0, 0), {"n": 1, "f": 0.5, "s": "a", "b": True}, "u1", 0, True, 6, ("l", 0, 0), 1),
        Row("e2", 7, ("f", 1, 0), {"n": 2, "f": 1, "b": False}, None, 2, None),
    ]


def test_columns_hold_one_type_each_and_the_hash_sees_every_value(tmp_path: Path) -> None:
    table = dataset.to_table(rows(), {"model": "m"})
    types = {n: str(table.schema.field(n).type) for n in table.column_names}
    assert types["x.n"] == "int64" and types["x.f"] == "double" and types["x.s"] == "string"
    assert types["x.b"] == "bool" and types["label"] == "bool" and types["learned_step"] == "int64"
    assert table.column("x.f").to_pylist() == [0.5, 1.0] and table.column("x.s").to_pylist() == ["a", None]
    changed = rows()
    changed[1].x["f"] = 1.5
    assert dataset.content_hash(dataset.to_table(changed, {})) != dataset.content_hash(table)

    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    dataset.write(table, first)
    dataset.write(dataset.to_table(rows(), {"model": "m"}), second)
    assert first.read_bytes() == second.read_bytes()
    back = pq.read_table(first)
    meta = dataset.read_metadata(first)
    assert meta["content_sha256"] == dataset.content_hash(back) == dataset.content_hash(table)
    assert meta["rows"] == 2 and meta["learned"] == 1 and meta["features"] == ["n", "f", "s", "b"]
    assert sorted(tmp_path.iterdir()) == [first, second]  # no temporary file left

    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1]}), plain)
    with pytest.raises(dataset.ExportError, match="not a Rivulet export"):
        dataset.read_metadata(plain)
