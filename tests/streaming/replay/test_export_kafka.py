"""``rivulet export`` on real Kafka and Redis.

Oracles: the bytes of a second export of the same range; River's ``progressive_val_score`` over the file
read back with pandas against ``rivulet replay`` and the live learner over the same range; the offsets,
``n_learned`` and the stored model of a registry version against its history's export (a fresh model
learning the file's rows in their learned order predicts what the stored version predicts); the Kafka
end offsets read by a plain consumer against the metadata's range. Hostile records sit on both topics.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer, TopicPartition
from river import evaluate, metrics
from typer.testing import CliRunner

from streaming import clients
from streaming.cli import app
from streaming.ingest.feed import LabelPolicy, publish
from streaming.ingest.producer import Producer
from streaming.ingest.rows import Row, RowMapping
from streaming.replay.dataset import content_hash, read_metadata
from streaming.settings import Settings
from tests.support.feature_defs import ALL
from tests.support.learning import KEY_ENV, events, featurise, learn, learning_topics, registry
from tests.support.model_defs import scaled_lr

pytestmark = pytest.mark.integration

DELAY = 25
HOSTILE_FEATURES = [
    b"not json",
    b"[1, 2]",
    orjson.dumps({"view": "all", "entity": "x", "event": {"event_id": "bad1"}, "features": {"a": 1}}),
    orjson.dumps({"view": "all", "entity": "x", "event": {"event_id": "bad2", "ts": 5}, "features": [1]}),
]
HOSTILE_LABELS = [b"\xff\xfe", orjson.dumps({"event_id": "nobody", "label": {"nested": 1}, "ts": 1})]


def cli(settings: Settings, *args: str) -> Any:
    env = {
        "RIVULET_TOPIC_PREFIX": settings.topic_prefix,
        "RIVULET_REDIS_PREFIX": settings.redis_prefix,
        **KEY_ENV,
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs:DIRECT",
        "RIVULET_MODELS_MODULE": "tests.support.model_defs",
    }
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def learned(base_settings: Settings, kafka_up: str, redis_up: str, tmp_path_factory: Any) -> Iterator[Any]:
    """1,200 events with labels 25 events late, featurised by a real feature worker, hostile records
    added to the features and labels topics, learned by the live learner (checkpoints every 300)."""
    run = uuid.uuid4().hex[:10]
    base = base_settings.model_copy(update={"topic_prefix": f"test.{run}.", "redis_prefix": f"test:{run}:"})
    tmp = tmp_path_factory.mktemp("export")
    with learning_topics(base) as s:
        evs = events(1_200, seed=47)
        with Producer(s) as producer:
            rows = [Row(i + 1, e.to_dict()) for i, e in enumerate(evs)]
            publish(rows, producer, RowMapping(), labels=LabelPolicy("topic", delay_events=DELAY))
        featurise(s, tmp)
        raw = clients.kafka_producer(s)
        for i, value in enumerate(HOSTILE_FEATURES):
            raw.send(s.topics.features, value, partition=i % 3)
        for value in HOSTILE_LABELS:
            raw.send(s.topics.labels, value)
        raw.flush()
        raw.close()
        worker = learn(s)
        yield s, worker, tmp, {e.event_id: e.entity for e in evs}
        client = clients.redis_client(s)
        for key in client.scan_iter(match=f"{s.redis_prefix}*"):
            client.delete(key)
        client.close()


def end_offsets(settings: Settings, topic: str) -> dict[str, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {str(tp.partition): o for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def river_rows(frame: pd.DataFrame) -> tuple[list[tuple[dict[str, Any], Any]], dict[int, tuple[int, Any]]]:
    """The file's rows as River's (x, y) (y None when never learned), and for each x (by id) its
    predicted step and the delay to its learned step."""
    features = [c for c in frame.columns if c.startswith("x.")]
    data, steps = [], {}
    for row in frame.to_dict("records"):
        x = {c[2:]: row[c] for c in features if pd.notna(row[c])}
        learned = pd.notna(row["learned_step"])
        data.append((x, row["label"] if learned else None))
        steps[id(x)] = (
            int(row["predicted_step"]),
            int(row["learned_step"]) - int(row["predicted_step"]) if learned else 0,
        )
    return data, steps


def test_export_is_repeatable_and_names_its_range(learned: Any) -> None:
    s, worker, tmp, _ = learned
    first, second = tmp / "a.parquet", tmp / "b.parquet"
    for path in (first, second):
        res = cli(s, "export", "topic", "features", "--model", "lr", "--out", str(path))
        assert res.exit_code == 0, res.output
    assert first.read_bytes() == second.read_bytes()
    meta = read_metadata(first)
    assert meta["range"][s.topics.features] == {
        p: [0, e] for p, e in end_offsets(s, s.topics.features).items()
    }
    assert meta["offsets"][s.topics.labels] == end_offsets(s, s.topics.labels)
    assert meta["feature_hash"] == ALL.fingerprint() and meta["model"] == "lr" and meta["view"] == "all"
    table = pq.read_table(first)
    assert meta["content_sha256"] == content_hash(table) and meta["content_sha256"] in res.output
    assert meta["rows"] == table.num_rows == 1_200 and meta["learned"] == worker.core.models["lr"].n_learned
    # the hostile records were rejected where a replay rejects them, counted, and the export went on
    assert meta["dead_letters"]["undecodable"] >= 3 and meta["dead_letters"]["malformed_features"] >= 2
    assert meta["dead_letters"]["malformed_label"] >= 1

    # the resolved range given back as bounds: the same bytes, whatever was appended since
    def bound(parts: dict[str, list[int]], i: int) -> str:
        return ",".join(f"{p}:{se[i]}" for p, se in parts.items())

    f, lab = meta["range"][s.topics.features], meta["range"][s.topics.labels]
    raw = clients.kafka_producer(s)  # the log grows: a label for an event nobody sent
    raw.send(s.topics.labels, orjson.dumps({"event_id": "ghost", "label": True, "ts": 1}), partition=0)
    raw.flush()
    raw.close()
    grown = tmp / "grown.parquet"
    assert cli(s, "export", "topic", "--out", str(grown)).exit_code == 0
    assert read_metadata(grown)["range"][s.topics.labels] != lab  # "end" moved: another range
    again = tmp / "c.parquet"
    args = ["--start", bound(f, 0), "--end", bound(f, 1), "--labels-start", bound(lab, 0)]
    res = cli(s, "export", "topic", "--out", str(again), *args, "--labels-end", bound(lab, 1))
    assert res.exit_code == 0, res.output
    assert again.read_bytes() == first.read_bytes()

    # another range is another dataset: two partitions, half the log
    part = tmp / "d.parquet"
    res = cli(s, "export", "topic", "--out", str(part), "--partitions", "0,2", "--end", "offset:200")
    assert res.exit_code == 0, res.output
    sub = pq.read_table(part).to_pandas()
    assert set(sub["partition"]) == {0, 2} and (sub["offset"] < 200).all()
    assert read_metadata(part)["content_sha256"] != meta["content_sha256"]
    res = cli(s, "export", "topic", "--out", str(part), "--partitions", "7")
    assert res.exit_code == 1 and "has no partition 7" in res.output


def test_progressive_validation_of_the_file_equals_replay(learned: Any) -> None:
    s, worker, tmp, entities = learned
    path = tmp / "pv.parquet"
    res = cli(s, "export", "topic", "--out", str(path))
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(path)
    assert frame["predicted_step"].is_monotonic_increasing
    late = frame["learned_step"] - frame["predicted_step"] > 1
    assert late.sum() > 1_000, "most labels came from the labels topic, after their record"
    data, steps = river_rows(frame)
    metric = metrics.LogLoss() + metrics.ROCAUC()
    evaluate.progressive_val_score(
        data,
        scaled_lr(),
        metric,
        moment=lambda x: steps[id(x)][0],
        delay=lambda x, y: steps[id(x)][1],
    )
    out = tmp / "replay"
    res = cli(s, "replay", "features", "--model", "lr", "--out", str(out), "--quiet")
    assert res.exit_code == 0, res.output
    replayed = orjson.loads((out / "replay.json").read_bytes())["models"]["lr"]["metrics"]
    log_loss, roc_auc = metric
    assert log_loss.get() == pytest.approx(replayed["LogLoss"], rel=1e-12)
    assert roc_auc.get() == pytest.approx(replayed["ROCAUC"], rel=1e-12)
    assert log_loss.get() == pytest.approx(worker.core.models["lr"].metrics[0].get(), rel=1e-12)
    assert [entities[e] for e in frame["event_id"]] == list(frame["entity"])  # the producer's own

    # from the events topic, the vectors recomputed by the engine: the same rows learned, the same metric
    path = tmp / "events.parquet"
    res = cli(s, "export", "topic", "events", "--out", str(path))
    assert res.exit_code == 0, res.output
    events_frame = pd.read_parquet(path)
    assert read_metadata(path)["source"]["role"] == "events" and set(events_frame["topic"]) == {
        s.topics.events
    }
    assert sorted(events_frame["event_id"]) == sorted(frame["event_id"])
    assert [entities[e] for e in events_frame["event_id"]] == list(events_frame["entity"])
    data, steps = river_rows(events_frame)
    again = metrics.LogLoss()
    evaluate.progressive_val_score(
        data, scaled_lr(), again, moment=lambda x: steps[id(x)][0], delay=lambda x, y: steps[id(x)][1]
    )
    assert again.get() == pytest.approx(log_loss.get(), rel=1e-12)


def test_a_versions_history_is_what_it_learned(learned: Any, tmp_path: Path) -> None:
    s, _, _, _ = learned
    reg = registry(s)
    versions = [v.version for v in reg.versions("lr")]
    middle = versions[len(versions) // 2]
    path = tmp_path / "v.parquet"
    res = cli(s, "export", "version", "lr", str(middle), "--out", str(path))
    assert res.exit_code == 0, res.output
    stored = reg.load("lr", middle)
    meta = read_metadata(path)
    header_offsets = {t: {str(p): o for p, o in ps.items()} for t, ps in stored.header["offsets"].items()}
    assert meta["offsets"] == header_offsets and meta["source"]["version"] == middle
    assert meta["source"]["base"] == "a fresh model" and meta["feature_hash"] == stored.header["feature_hash"]
    frame = pd.read_parquet(path)
    done = frame[frame["learned_step"].notna()].sort_values("learned_step")
    assert len(done) == stored.header["n_learned"] == meta["learned"]
    for topic, col in ((s.topics.features, "offset"), (s.topics.labels, "label_offset")):
        mine = frame if col == "offset" else done[done["label_topic"] == topic]
        ends = header_offsets[topic]
        parts = mine[col.replace("offset", "partition")]
        assert all(o < ends[str(int(p))] for p, o in zip(parts, mine[col], strict=True))

    # a fresh model learning the rows in their learned order (read as Python values: pyarrow's) is the
    # stored version
    rows = pq.read_table(path).to_pylist()
    model = scaled_lr()
    for row in sorted((r for r in rows if r["learned_step"] is not None), key=lambda r: r["learned_step"]):
        model.learn_one(
            {k[2:]: v for k, v in row.items() if k.startswith("x.") and v is not None}, row["label"]
        )
    probes = [{k[2:]: v for k, v in r.items() if k.startswith("x.") and v is not None} for r in rows[-50:]]
    assert [model.predict_proba_one(x) for x in probes] == [
        stored.state.model.predict_proba_one(x) for x in probes
    ]

    res = cli(s, "export", "version", "nope", "--out", str(tmp_path / "n.parquet"))
    assert res.exit_code == 1 and "no version" in res.output
