"""The one learner loop on real Kafka: the live learner's tail (KafkaTail), a replay's range (RangeReader)
and a file of the same records (FileRecords) give the order the Merger gives them all at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streaming import clients
from streaming.learning.loop import FileRecords, MergeLoop, write_records
from streaming.replay.kafka import Bound, RangeReader
from streaming.runtime.learner import KafkaTail
from streaming.settings import Settings
from tests.streaming.learning.test_loop import LABEL_OK, merger_order, stream
from tests.support.kafka_read import read_all

pytestmark = pytest.mark.integration

Order = list[tuple[str, int, int]]


def test_tail_range_and_file_give_one_order(rivulet_topics: Settings, tmp_path: Path) -> None:
    s = rivulet_topics
    t = s.topics
    names = {"f": t.features, "l": t.labels, "p": t.predictions}
    ranks = {t.labels: 0, t.features: 1, t.predictions: 2}
    producer = clients.kafka_producer(s)
    records = stream(11, n=400)
    for r in records:  # partitions as the stream has them: offsets are the stream's own
        producer.send(names[r.topic], r.value, key=r.key, partition=r.partition)
    producer.flush()
    producer.close()
    expected = [(names[topic], p, o) for topic, p, o in merger_order(records)]

    with RangeReader(s) as reader:
        ranges = {n: reader.resolve(n, Bound("beginning"), Bound("end")) for n in names.values()}
        reader.assign(ranges)
        ranged = [
            (r.topic, r.partition, r.offset) for r in MergeLoop(reader, ranks, label_ok=LABEL_OK).records()
        ]
    assert ranged == expected

    consumer = clients.kafka_consumer(s, client_id="test-loop-tail")
    try:
        tail = KafkaTail(consumer, [t.features, t.labels, t.predictions], lambda topic, p: 0)
        loop = MergeLoop(tail, ranks, label_ok=LABEL_OK)
        tailed: Order = []
        deadline = time.monotonic() + 60
        while len(tailed) < len(records) and time.monotonic() < deadline:
            tailed += [(r.topic, r.partition, r.offset) for r in loop.round()]
    finally:
        consumer.close()
    assert tailed == expected

    raw = [r for n in names.values() for r in read_all(s.kafka_bootstrap, n)]
    write_records(tmp_path / "log.jsonl", raw)
    filed = [
        (r.topic, r.partition, r.offset)
        for r in MergeLoop(FileRecords(tmp_path / "log.jsonl"), ranks, label_ok=LABEL_OK).records()
    ]
    assert filed == expected
