"""``rivulet export`` of hostile records on real Kafka topics: records that are no JSON, keys that are no
UTF-8, huge records, feature names that are the file's own column names or empty or unicode or 10 kB long,
a feature that is a string in one record and a float in another, labels of the wrong type. The export ends
with exit code 0 and no traceback, the same range twice gives the same bytes, and the content hash in the
metadata is the one recomputed from the file read back."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from river import dummy, metrics
from typer.testing import CliRunner

from streaming import clients
from streaming.cli import app
from streaming.learning.spec import ModelSpec
from streaming.replay.dataset import content_hash, read_metadata
from streaming.settings import Settings
from tests.support.learning import KEY_ENV, learning_topics, ts

pytestmark = pytest.mark.integration

COLUMNS = [  # the file's own columns, and names near them
    "label", "offset", "partition", "timestamp", "ts", "event_id", "entity", "topic", "predicted_step",
    "learned_step", "learned_ts", "label_topic", "x.a", "x.", "",
]  # fmt: skip
ODD = ["é✓🙂", "名前", "a" * 200, " ", "with\nnewline", "\x00nul"]  # 200: the longest name the learner takes


# a spec given its features by name: strings reach the model (a spec of every feature keeps numbers only);
# a record without ``mixed`` is rejected for it
NAMED = ModelSpec(
    "named",
    "binary",
    "all",
    dummy.PriorClassifier,
    metrics=(metrics.Accuracy,),
    features=("mixed",),
)
MODELS = [NAMED]


def record(i: int, features: dict[str, Any], label: Any = True, **event: Any) -> dict[str, Any]:
    ev = {"event_id": f"ev{i}", "ts": ts(i), "label": label, **event}
    return {"view": "all", "entity": f"u{i % 7}", "event": ev, "features": features}


def hostile() -> list[tuple[bytes | None, bytes]]:
    """(key, value) of the hostile records, in the order sent (good ones between them)."""
    out: list[tuple[bytes | None, bytes]] = []

    def add(i: int, value: Any, key: bytes | None = None) -> None:
        out.append((key if key is not None else f"u{i % 7}".encode(), value))

    add(1000, b"not json at all")
    add(1001, b"\xff\xfe\xfd")
    add(1002, json.dumps(record(1002, {"a": float("nan")})).encode())  # NaN: not JSON
    add(1003, b'{"view":"all","entity":"u1","event":{"event_id":"ev1003","ts":5},"features":{"a":1e999}}')
    add(1004, orjson.dumps(record(1004, {"a": 1.0})), key=b"\xff\xfe non-utf8 key \x00")
    add(1005, orjson.dumps(record(1005, {"a": 1.0, "mixed": "z" * 600_000})))  # a huge record
    add(1006, orjson.dumps(record(1006, {f"f{k}": float(k) for k in range(5_000)})))  # many features
    add(1007, orjson.dumps(record(1007, {name: 1.5 for name in COLUMNS})))
    add(1008, orjson.dumps(record(1008, {name: 2.5 for name in ODD})))
    add(1012, orjson.dumps(record(1012, {"a": 1.0, "a" * 10_000: 1.0})))  # 10 kB: refused, counted
    add(1009, orjson.dumps(record(1009, {"a": 0.5, "mixed": "a string"})))
    add(1010, orjson.dumps(record(1010, {"a": 0.5, "mixed": 3.25})))
    add(1011, orjson.dumps(record(1011, {"a": 0.5, "mixed": None})))
    for j, label in enumerate(["yes", 2, [1], {"a": 1}, 1.5, None, -1, "true"]):
        add(1020 + j, orjson.dumps(record(1020 + j, {"a": 0.1 * j}, label=label)))
    add(1040, json.dumps(record(1040, {"a": 2**70})).encode())  # an integer past int64
    add(1041, orjson.dumps(record(1041, {"a": True})))
    add(1042, orjson.dumps(record(1042, {"a": [1, 2]})))
    add(
        1043, orjson.dumps({"view": "all", "entity": 17, "event": {"event_id": 5, "ts": "x"}, "features": {}})
    )
    add(1044, orjson.dumps(record(1044, {"a": 1.0}, ts=-(2**63))))
    add(1045, b"")
    add(1046, b"null")
    return out


@pytest.fixture(scope="module")
def topic(base_settings: Settings, kafka_up: str, redis_up: str) -> Iterator[Settings]:
    """The features topic: 300 good records (labels inline) with every hostile one among them."""
    run = uuid.uuid4().hex[:10]
    base = base_settings.model_copy(update={"topic_prefix": f"test.{run}.", "redis_prefix": f"test:{run}:"})
    with learning_topics(base) as s:
        raw = clients.kafka_producer(s)
        bad = hostile()
        for i in range(300):
            x = {"a": (i % 13) / 13.0, "b": float(i % 5)}
            raw.send(
                s.topics.features, orjson.dumps(record(i, x, label=i % 3 == 0)), key=f"u{i % 7}".encode()
            )
            if i % 10 == 0 and bad:
                key, value = bad.pop(0)
                raw.send(s.topics.features, value, key=key)
        for key, value in bad:
            raw.send(s.topics.features, value, key=key)
        raw.send(s.topics.labels, b"\xff")
        raw.send(s.topics.labels, orjson.dumps({"event_id": "ev3", "label": "maybe", "ts": ts(3)}))
        raw.flush()
        raw.close()
        yield s


def cli(s: Settings, *args: str, **more: str) -> Any:
    env = {
        "RIVULET_TOPIC_PREFIX": s.topic_prefix,
        "RIVULET_REDIS_PREFIX": s.redis_prefix,
        **KEY_ENV,
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs:DIRECT",
        "RIVULET_MODELS_MODULE": "tests.support.model_defs",
        **more,
    }
    return CliRunner().invoke(app, list(args), env=env)


@pytest.mark.parametrize("order", ["event-time", "kafka"])
def test_hostile_records_export_twice_to_the_same_bytes(topic: Settings, tmp_path: Path, order: str) -> None:
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for path in paths:
        res = cli(topic, "export", "topic", "features", "--model", "lr", "--order", order, "--out", str(path))
        assert res.exit_code == 0 and res.exception is None, res.output
        assert "Traceback" not in res.output
    assert paths[0].read_bytes() == paths[1].read_bytes()
    meta = read_metadata(paths[0])
    table = pq.read_table(paths[0])
    assert meta["content_sha256"] == content_hash(table) and meta["content_sha256"] in res.output
    assert table.num_rows == meta["rows"] >= 300
    letters = meta["dead_letters"]
    assert letters["undecodable"] >= 6  # not JSON, not UTF-8, NaN, 1e999, empty, null; and the bad label
    assert letters["value_domain"] == 2 and letters["label_type"] >= 6  # 10 kB name, a list; bad labels
    names = set(table.column_names)
    for name in [*COLUMNS, *ODD]:  # each feature a column of its own, beside the file's
        assert f"x.{name}" in names, name[:40]
    assert len(names) == len(table.column_names) and "x.mixed" in names
    assert set(table.column("x.mixed").to_pylist()) == {None, 3.25}  # lr takes numbers only
    events = table.column("event_id").to_pylist()
    assert {"ev1004", "ev1005", "ev1007", "ev1008"} <= set(events)  # a bad key, a huge record: kept
    assert not {"ev1012", "ev1042"} & set(events)
    row = dict(zip(events, table.to_pylist(), strict=True))["ev1007"]
    assert row["label"] is True and row["x.label"] == 1.5 and row["offset"] != 1.5 == row["x.offset"]


def test_strings_and_floats_in_one_feature_and_a_huge_string(topic: Settings, tmp_path: Path) -> None:
    """A spec naming its features is given strings: ``mixed`` (600 kB of text, a string, then a float, then
    null). The learner core takes a feature's type from its first value: the float is rejected
    (``feature_type``, counted), so the column stays strings; twice the same bytes, the hash recomputed."""
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for path in paths:
        res = cli(topic, "export", "topic", "--out", str(path), RIVULET_MODELS_MODULE=__name__)
        assert res.exit_code == 0 and res.exception is None, res.output
    assert paths[0].read_bytes() == paths[1].read_bytes()
    table = pq.read_table(paths[0])
    assert read_metadata(paths[0])["content_sha256"] == content_hash(table)
    by_event = {r["event_id"]: r for r in table.to_pylist()}
    mixed = [by_event[e]["x.mixed"] for e in ("ev1005", "ev1009", "ev1011")]
    assert mixed == ["z" * 600_000, "a string", None] and str(table.schema.field("x.mixed").type) == "string"
    assert set(by_event) == {"ev1005", "ev1009", "ev1011"}  # the others have no "mixed"
    assert read_metadata(paths[0])["dead_letters"]["feature_type"] == 1  # ev1010's float
