"""The feature worker's lag per partition on its metrics endpoint, on real Kafka and Redis, against an
independent reading of the events topic: 0 records behind once caught up, and an event-time lag between
(the last record's Kafka send time minus its event time) and (the scrape's time minus its event time)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from kafka import TopicPartition

from streaming.clients import kafka_consumer
from streaming.ingest.producer import Producer
from streaming.settings import Settings
from tests.streaming.runtime.test_learner_metrics import by_partition, scrape
from tests.support.api_env import free_port
from tests.support.streams import stream
from tests.support.workers import Worker, rivulet_process, wait_caught_up

pytestmark = pytest.mark.integration


class MetricsWorker(Worker):
    def __init__(self, settings: Settings, log: Path, port: int) -> None:
        self.log = log
        self.proc = rivulet_process(
            settings,
            [
                "features",
                "run",
                "--features",
                "tests.support.feature_defs:DIRECT",
                "--metrics-port",
                str(port),
            ],
            log,
            RIVULET_PARTITIONS=str(settings.partitions),
            RIVULET_DATA_DIR=str(log.parent / "data"),
        )


def last_events(s: Settings) -> dict[int, tuple[int, int]]:
    """Each events partition's last record's event time and Kafka (send) time (ms), read by a fresh consumer
    at its end offset - 1."""
    consumer = kafka_consumer(s, client_id="rivulet-tests")
    try:
        tps = [TopicPartition(s.topics.events, p) for p in consumer.partitions_for_topic(s.topics.events)]
        ends = consumer.end_offsets(tps)
        out = {}
        for tp in (tp for tp in tps if ends[tp]):
            consumer.assign([tp])
            consumer.seek(tp, ends[tp] - 1)
            recs: list = []
            while not recs:
                recs = [r for b in consumer.poll(timeout_ms=1_000).values() for r in b]
            out[tp.partition] = (orjson.loads(recs[0].value)["ts"], recs[0].timestamp)
        return out
    finally:
        consumer.close()


def test_feature_worker_lag_per_partition(topics: Settings, tmp_path: Path) -> None:
    s = topics
    port = free_port()
    worker = MetricsWorker(s, tmp_path / "features.log", port)
    try:
        evs = stream(300, entities=30, seed=61, t0=int(time.time() * 1000) - 300_000, step_ms=1_000)
        with Producer(s) as producer:
            producer.send_many(evs)
        wait_caught_up(s, [worker])
        last = last_events(s)
        deadline = time.monotonic() + 60
        while True:  # the gauges are set after each commit: the last one may follow the group's commit
            samples = scrape(port)
            lag_records = by_partition(samples, "rivulet_features_lag_records", s.topics.events)
            if set(lag_records) == set(last) and not any(lag_records.values()):
                break
            assert time.monotonic() < deadline, samples
            time.sleep(0.2)
        scraped = time.time()
        lag_s = by_partition(samples, "rivulet_features_lag_seconds", s.topics.events)
        assert set(lag_s) == set(last)
        for p, (ts, sent) in last.items():
            # committed after the record was sent (its Kafka timestamp, in ms), before the scrape
            assert (sent - 1 - ts) / 1000 <= lag_s[p] <= scraped - ts / 1000, (p, lag_s[p], ts, sent)
    finally:
        worker.stop()
