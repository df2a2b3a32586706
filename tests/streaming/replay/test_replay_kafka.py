"""Replay and verify on real Kafka and Redis.

Oracles: the live learner's own final metric over the same topics, River's ``progressive_val_score`` on
the data the learner saw, and a before/after snapshot of everything production owns (consumer group
offsets, topics and their end offsets, every Redis key and value). ``verify`` must pass on real versions,
including versions a learner wrote while tailing a log whose partitions arrived out of step, and fail on
a tampered version (re-signed with a changed model, or with a flipped byte).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import TopicPartition
from river import evaluate, metrics
from typer.testing import CliRunner

from streaming import clients
from streaming.cli import app
from streaming.ingest.feed import LabelPolicy, publish
from streaming.ingest.producer import Producer
from streaming.ingest.rows import Row, RowMapping
from streaming.learning.keys import SigningKey
from streaming.learning.snapshot import seal
from streaming.settings import Settings
from tests.support.learning import (
    KEY_ENV,
    SIGNER,
    events,
    featurise,
    learn,
    learning_topics,
    registry,
    river_data,
)
from tests.support.model_defs import scaled_lr

pytestmark = pytest.mark.integration

DELAY = 25
ATTACKER = SigningKey(bytes(range(7, 39)))


def cli(settings: Settings, *args: str) -> Any:
    env = {
        "RIVULET_TOPIC_PREFIX": settings.topic_prefix,
        "RIVULET_REDIS_PREFIX": settings.redis_prefix,
        **KEY_ENV,
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs:DIRECT",
        "RIVULET_MODELS_MODULE": "tests.support.model_defs",
    }
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def production_state(settings: Settings) -> dict[str, Any]:
    """Everything a replay must leave alone: every consumer group's committed offsets, every topic with
    its end offsets, and every Redis key with a digest of its value, of this test (its topic and key
    prefixes: other tests may run beside it on the same services)."""
    admin = clients.kafka_admin(settings, client_id="test-production-state")
    consumer = clients.kafka_consumer(settings, client_id="test-production-state")
    client = clients.redis_client(settings)
    try:
        mine = settings.topic_prefix
        groups = sorted(g["group_id"] for g in admin.list_groups() if mine in g["group_id"])
        offsets = {}
        for g in groups:
            committed = admin.list_group_offsets(g).get(g, {})
            offsets[g] = sorted((tp.topic, tp.partition, m.offset) for tp, m in committed.items())
        topics = sorted(t for t in consumer.topics() if mine in t)
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        ends = sorted((tp.topic, tp.partition, o) for tp, o in consumer.end_offsets(tps).items())
        keys = {
            k.decode(): hashlib.sha256(client.dump(k) or b"").hexdigest()
            for k in client.scan_iter(match=f"{settings.redis_prefix}*", count=1000)
        }
        return {"groups": offsets, "topics": topics, "ends": ends, "redis": keys}
    finally:
        admin.close()
        consumer.close()
        client.close()


def drop_keys(settings: Settings) -> None:
    """Remove every Redis key under the settings' prefix (the module's runs have their own prefixes)."""
    client = clients.redis_client(settings)
    try:
        for key in client.scan_iter(match=f"{settings.redis_prefix}*"):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture(scope="module")
def stream_learned(
    base_settings: Settings, kafka_up: str, redis_up: str, tmp_path_factory: Any
) -> Iterator[Any]:
    """1,500 events with labels 25 events late, featurised by a real feature worker, learned by the live
    learner (checkpoints every 300 records)."""
    run = uuid.uuid4().hex[:10]
    base = base_settings.model_copy(update={"topic_prefix": f"test.{run}.", "redis_prefix": f"test:{run}:"})
    tmp = tmp_path_factory.mktemp("replay")
    with learning_topics(base) as s:
        evs = events(1_500, seed=31)
        with Producer(s) as producer:
            rows = [Row(i + 1, e.to_dict()) for i, e in enumerate(evs)]
            publish(rows, producer, RowMapping(), labels=LabelPolicy("topic", delay_events=DELAY))
        featurise(s, tmp)
        worker = learn(s)
        data = river_data(s, {e.event_id: e for e in evs})
        yield s, worker, data, tmp
        drop_keys(s)


def test_replay_equals_the_live_learner_and_river(stream_learned: Any) -> None:
    s, worker, data, tmp = stream_learned
    live = worker.core.models["lr"].metrics[0].get()
    expected = evaluate.progressive_val_score(data, scaled_lr(), metrics.LogLoss(), delay=DELAY).get()
    assert live == pytest.approx(expected, rel=1e-12)
    before = production_state(s)
    assert before["groups"][f"{s.topic_prefix}features"], "the feature worker's group is part of the snapshot"
    assert any(k.startswith(f"{s.redis_prefix}model:") for k in before["redis"])

    for source in ("features", "events"):  # features as recorded; features recomputed by the engine
        out = tmp / f"replay-{source}"
        res = cli(s, "replay", source, "--out", str(out), "--quiet")
        assert res.exit_code == 0, res.output
        result = orjson.loads((out / "replay.json").read_bytes())
        lr = result["models"]["lr"]
        assert lr["metrics"]["LogLoss"] == pytest.approx(live, rel=1e-12), source
        assert lr["counters"]["learned"] == len(data) and lr["counters"]["pending"] == 0
        assert result["records"] == len(data)
        assert lr["curve"][-1][2]["LogLoss"] == lr["metrics"]["LogLoss"] and len(lr["curve"]) > 10
        assert "LogLoss" in res.output and str(out / "replay.html") in res.output.replace("\n", "")
        html = (out / "replay.html").read_text()
        assert '"lr"' in html and "RivuletCharts.lineChart" in html

    # a simulated delay on the same topic: labels re-timed, as River's delay=N
    out = tmp / "replay-delayed"
    res = cli(s, "replay", "features", "--label-delay", "100", "--out", str(out), "--quiet")
    assert res.exit_code == 0, res.output
    delayed = orjson.loads((out / "replay.json").read_bytes())["models"]["lr"]["metrics"]["LogLoss"]
    oracle = evaluate.progressive_val_score(data, scaled_lr(), metrics.LogLoss(), delay=100).get()
    assert delayed == pytest.approx(oracle, rel=1e-12)

    after = production_state(s)
    assert after == before  # no group joined or committed, nothing produced, no Redis key touched


def test_replay_with_the_champion_as_it_was_at_the_range_start(stream_learned: Any) -> None:
    s, _, _, tmp = stream_learned
    out = tmp / "replay-champion"
    res = cli(
        s, "replay", "features", "--start", "offset:200", "--champion", "lr", "--out", str(out), "--quiet"
    )
    assert res.exit_code == 0, res.output
    result = orjson.loads((out / "replay.json").read_bytes())
    first = result["first_ts"]
    # the oracle: the newest version that had learned nothing after the range's first event
    versions = registry(s).versions("lr")
    expected = max(v.version for v in versions if (v.header.get("last_learned_ts") or 0) <= first)
    champion = result["models"][f"lr@v{expected}"]
    assert champion["champion_version"] == expected
    assert result["range"][s.topics.features] == {
        p: [200, e] for p, (_, e) in result["range"][s.topics.features].items()
    }
    n = result["records"]
    assert champion["counters"]["predicted"] == n == result["models"]["lr"]["counters"]["predicted"]
    # a model that has learned from the first part scores better on the rest than one starting from zero
    assert champion["metrics"]["LogLoss"] < result["models"]["lr"]["metrics"]["LogLoss"]


def test_verify_passes_on_real_versions_and_fails_on_tampered_ones(stream_learned: Any) -> None:
    s, _, _, _ = stream_learned
    reg = registry(s)
    versions = [v.version for v in reg.versions("lr")]
    newest, middle = versions[0], versions[len(versions) // 2]
    name = "".join(["l", "r"])  # an equal string, not the spec's own object: as from a real command line
    for version, extra in ((newest, ()), (middle, ()), (newest, ("--from-version", str(middle)))):
        res = cli(s, "models", "verify", name, str(version), *extra, "--quiet")
        assert res.exit_code == 0, res.output
        assert f"verified: lr v{version}" in res.output
        fresh = not extra
        assert ("from a fresh model" in res.output) == fresh
        # from a fresh model the rebuild pickles to the stored bytes (the model holds no random state)
        assert ("(snapshot hash;" in res.output) == fresh, res.output

    # re-signed with the right key, but the model is not the one its offsets produce
    client = clients.redis_client(s)
    key = f"{s.redis_prefix}model:{{lr}}:v:{newest}"
    original = client.get(key)
    opened = reg.load("lr", newest)
    state = opened.state
    state.model.learn_one({"count_lifetime": 1.0, "sal_k": 50.0}, True)
    header = {k: v for k, v in opened.header.items() if k not in ("payload_sha256", "payload_bytes")}
    try:
        client.set(key, seal(state, header, SIGNER))
        res = cli(s, "models", "verify", "lr", str(newest), "--quiet")
        assert res.exit_code == 3, res.output
        assert "NOT verified" in res.output and "probe" in res.output

        blob = bytearray(original)  # type: ignore[arg-type]
        blob[-5] ^= 0x01  # in the payload: its hash is in the signed header
        client.set(key, bytes(blob))
        res = cli(s, "models", "verify", "lr", str(newest), "--quiet")
        assert res.exit_code == 1 and "payload hash mismatch" in res.output
        client.set(key, seal(state, header, ATTACKER))  # a key that is not in the ring
        res = cli(s, "models", "verify", "lr", str(newest), "--quiet")
        assert res.exit_code == 1 and f"signed by key {ATTACKER.key_id}, not in the keyring" in res.output
    finally:
        client.set(key, original)  # type: ignore[arg-type]


def test_verify_follows_the_order_a_tailing_learner_took(
    base_settings: Settings, kafka_up: str, redis_up: str, tmp_path: Path
) -> None:
    """The learner processes a late-arriving partition's older records after newer ones it already took;
    a replay in event-time order would learn in another order, verify replays the recorded one."""
    run = uuid.uuid4().hex[:10]
    base = base_settings.model_copy(update={"topic_prefix": f"test.{run}.", "redis_prefix": f"test:{run}:"})
    with learning_topics(base) as s:
        producer = clients.kafka_producer(s)

        def features(i: int, partition: int, ts: int) -> None:
            x = {"a": float((i * 7919) % 97) / 10.0, "b": float((i * 104729) % 89) / 10.0}
            record = {
                "view": "all",
                "entity": f"e{i % 5}",
                "event": {"event_id": f"ev{i}", "ts": ts, "label": x["a"] + x["b"] > 9.0},
                "features": x,
            }
            producer.send(s.topics.features, orjson.dumps(record), partition=partition)

        for i in range(400):  # partitions 1 and 2 first
            features(i, 1 + i % 2, 1_000_000 + i * 1_000)
        producer.flush()
        first = learn(s)
        assert first.core.models["lr"].n_learned == 400
        for i in range(400, 700):  # then partition 0, with older event times than what was learned
            features(i, 0, 1_000_000 + (i - 400) * 1_300 + 500)
        producer.flush()
        producer.close()
        second = learn(s)
        live = second.core.models["lr"]
        assert live.n_learned == 700

        versions = registry(s).versions("lr")
        res = cli(s, "models", "verify", "lr", str(versions[0].version), "--quiet")
        assert res.exit_code == 0, res.output
        assert "from a fresh model" in res.output

        # control: the event-time order is a different history, with a different result
        res = cli(s, "replay", "features", "--out", str(tmp_path), "--quiet")
        assert res.exit_code == 0, res.output
        replayed = orjson.loads((tmp_path / "replay.json").read_bytes())["models"]["lr"]
        assert replayed["counters"]["learned"] == 700
        assert replayed["metrics"]["LogLoss"] != live.metrics[0].get()
        drop_keys(s)
