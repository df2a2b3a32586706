"""The learner's Prometheus endpoint on real Kafka and Redis: lag per partition against an independent
computation from Kafka's end offsets and the records' event times, counters that move as records flow, dead
letters by reason and stage, and the models' metrics as their checkpoints hold them."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streaming.clients import kafka_consumer
from streaming.ingest.producer import Producer
from streaming.runtime.learner import LearnerWorker
from streaming.runtime.learner_metrics import LearnerMetrics
from streaming.settings import Settings
from tests.support.api_env import free_port
from tests.support.learning import featurise, registry
from tests.support.model_defs import LR
from tests.support.streams import stream

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_partition(samples: Samples, name: str, topic: str) -> dict[int, float]:
    return {
        int(dict(labels)["partition"]): v
        for (n, labels), v in samples.items()
        if n == name and dict(labels)["topic"] == topic
    }


def wait_for(port: int, done: object, worker_thread: threading.Thread, timeout_s: float = 120.0) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        assert worker_thread.is_alive(), "the learner stopped"
        samples = scrape(port)
        if done(samples):  # type: ignore[operator]
            return samples
        assert time.monotonic() < deadline, f"not reached: {samples}"
        time.sleep(0.2)


def feature_ends(s: Settings) -> dict[int, tuple[int, int]]:
    """Independent of the learner: each features partition's end offset and the event time (ms) of the
    record before it, read by a fresh consumer."""
    consumer = kafka_consumer(s, client_id="rivulet-tests")
    try:
        tps = [TopicPartition(s.topics.features, p) for p in consumer.partitions_for_topic(s.topics.features)]
        ends = consumer.end_offsets(tps)
        out = {}
        for tp in tps:
            if not ends[tp]:
                continue
            consumer.assign([tp])
            consumer.seek(tp, ends[tp] - 1)
            recs: list = []
            while not recs:
                recs = [r for batch in consumer.poll(timeout_ms=1_000).values() for r in batch]
            out[tp.partition] = (ends[tp], orjson.loads(recs[0].value)["event"]["ts"])
        return out
    finally:
        consumer.close()


@pytest.fixture
def live(topics: Settings) -> Iterator[tuple[Settings, int, LearnerWorker, threading.Thread]]:
    port = free_port()
    metrics = LearnerMetrics()
    metrics.serve(port)
    worker = LearnerWorker(topics, [LR], registry=registry(topics), metrics=metrics)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        yield topics, port, worker, thread
    finally:
        worker.stop()
        thread.join(timeout=60)


def test_lag_and_counters_against_kafka(
    live: tuple[Settings, int, LearnerWorker, threading.Thread], tmp_path: Path
) -> None:
    s, port, worker, thread = live
    n = 600
    now_ms = int(time.time() * 1000)
    evs = stream(n, entities=40, seed=31, t0=now_ms - 1_000 * n, step_ms=1_000)
    features = s.topics.features

    # half the stream, then the rest: the records counter follows the features topic
    counted = []
    for chunk in (evs[: n // 2], evs[n // 2 :]):
        with Producer(s) as producer:
            producer.send_many(chunk)
        featurise(s, tmp_path)
        total = sum(end for end, _ in feature_ends(s).values())
        samples = wait_for(
            port, lambda x, total=total: x.get(("rivulet_learner_records_total", ())) == total, thread
        )
        counted.append(samples[("rivulet_learner_records_total", ())])
        assert samples[("rivulet_learner_batch_seconds_count", ())] >= 1
    assert 0 < counted[0] < counted[1]

    # caught up: lag 0 records on every partition, and the event-time lag is now minus the event time of each
    # partition's last record, as Kafka holds them (within one checkpoint interval: the gauges are set once
    # a second by the loop)
    ends = feature_ends(s)
    samples = wait_for(
        port,
        lambda x: (
            by_partition(x, "rivulet_learner_position", features) == {p: e for p, (e, _) in ends.items()}
            and all(v == 0 for v in by_partition(x, "rivulet_learner_lag_records", features).values())
        ),
        thread,
    )
    scraped_at = time.time()
    lag_s = by_partition(samples, "rivulet_learner_lag_seconds", features)
    assert set(lag_s) == set(ends)
    bound = max(LR.checkpoint.every_seconds, 1.0) + 1.0  # an interval, and the gauges' once-a-second update
    for p, (_, ts) in ends.items():
        expected = scraped_at - ts / 1000
        assert expected - bound <= lag_s[p] <= expected + 0.5, (p, lag_s[p], expected)

    # the checkpoint's positions, read from the registry, agree with what the endpoint said
    worker.stop()
    thread.join(timeout=60)
    assert not thread.is_alive()
    opened, _ = registry(s).load_latest("lr")
    assert {int(p): o for p, o in opened.header["offsets"][features].items()} == {
        p: e for p, (e, _) in ends.items()
    }
    final = scrape(port)
    labels = (("model", "lr"), ("role", "champion"), ("spec", "lr"))
    assert final[("rivulet_learner_model_version", labels)] == registry(s).current_version("lr")
    assert final[("rivulet_learner_model_learned", labels)] == opened.header["n_learned"] == n
    key = tuple(sorted((*labels, ("metric", "LogLoss"), ("window", "overall"))))
    logloss = final[("rivulet_learner_model_metric", key)]
    assert logloss == pytest.approx(opened.header["metrics"]["LogLoss"], rel=1e-12)
    assert final[("rivulet_learner_checkpoint_age_seconds", ())] >= 0


def test_dead_letters_counted_by_reason_and_stage(
    live: tuple[Settings, int, LearnerWorker, threading.Thread],
) -> None:
    s, port, _, thread = live
    with Producer(s) as producer:
        producer.send_record(s.topics.features, b"\xff not json", b"k", "bad-1")
        producer.send_record(s.topics.features, b'{"view": "all"}', b"k", "bad-2")
        producer.flush()
    samples = wait_for(
        port,
        lambda x: sum(v for (n, _), v in x.items() if n == "rivulet_learner_dead_letters_total") >= 2,
        thread,
    )
    letters = {
        dict(lb)["reason"]: v for (n, lb), v in samples.items() if n == "rivulet_learner_dead_letters_total"
    }
    stages = {
        dict(lb)["stage"] for (n, lb), _ in samples.items() if n == "rivulet_learner_dead_letters_total"
    }
    assert sum(letters.values()) == 2 and stages == {"learner"}
    assert samples[("rivulet_learner_records_total", ())] == 2
