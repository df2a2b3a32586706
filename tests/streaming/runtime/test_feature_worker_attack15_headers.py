"""Attack 15: an events record whose header name is not UTF-8 (Kafka's header names are bytes to the broker;
Java's clients decode them leniently). aiokafka decodes them strictly while it iterates a fetch, so the
worker's fetch raises UnicodeDecodeError ("Drain messages raised", "Fetcher crashed"), the worker exits, and
every restart meets the same record: one record stops every partition of the worker for good. Fixed by
streaming.runtime.kafka_records (the batch read again leniently from that record; unit tests there)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaProducer

from streaming.settings import Settings
from tests.streaming.runtime.test_feature_worker import (  # noqa: F401 (topics: a fixture)
    check_direct_view,
    events_for,
    topics,
)
from tests.support.workers import run_worker

pytestmark = pytest.mark.integration


class _NotUtf8(str):
    """A header name kafka-python writes as bytes that are not UTF-8 (the broker takes any bytes)."""

    def encode(self, *args: object, **kwargs: object) -> bytes:
        return b"\xff\xfe-trace"


def test_a_header_name_that_is_not_utf8_does_not_stop_the_worker(topics: Settings, tmp_path: Path) -> None:  # noqa: F811
    settings = topics
    events = events_for(seed=153, n=300)
    raw = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        raw.send(
            settings.topics.events,
            events[0].to_json(),
            key=events[0].entity.encode(),
            headers=[(_NotUtf8("x"), b"v")],
        ).get(timeout=30)
    finally:
        raw.close()
    run_worker(settings, events[1:], tmp_path / "w.log", timeout_s=90)
    check_direct_view(settings, events)
