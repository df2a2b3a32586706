"""Each stage's lag from outside it (``streaming.runtime.stage_lag``, what ``rivulet status`` and the API's
lag watcher read) on real Kafka and Redis, against an oracle written here: records per partition from the
offsets the test itself wrote, event times from the records it wrote at those offsets. Then the hostile
cases: a checkpoint whose offsets are garbage, Kafka unreachable, a topic deleted, a partition added, a
position past the end of its partition; each is said (the lag not known, and why), never a 0 and never an
exception."""

from __future__ import annotations

import socket
import time
from typing import Any

import orjson
import pytest
from kafka.errors import KafkaError

from streaming.clients import kafka_admin, kafka_producer
from streaming.ingest.topics import TopicAdmin
from streaming.runtime.pipeline_status import gather
from streaming.runtime.stage_lag import PartitionLag, StageLag, measure
from streaming.settings import Settings
from tests.support.learning import registry

pytestmark = pytest.mark.integration

NOTHING = {"features": None, "learner": None, "api": None}
T0 = 1_700_000_000_000


def _features_record(i: int, ts: int) -> bytes:
    event = {"event_id": f"e{i}", "ts": ts, "label": None}
    return orjson.dumps({"view": "all", "entity": "u", "event": event, "features": {"x": 1.0}})


def _write(s: Settings, topic: str, per_partition: dict[int, list[bytes]]) -> None:
    producer = kafka_producer(s)
    try:
        for partition, values in per_partition.items():
            for value in values:
                producer.send(topic, value=value, key=b"k", partition=partition)
        producer.flush()
    finally:
        producer.close()


def _checkpoint(s: Settings, offsets: Any, name: str = "lr") -> None:
    registry(s).save(name, {"state": 1}, {"offsets": offsets, "saved_at": 1.0, "spec": name})


def _by_partition(lag: StageLag, topic: str) -> dict[int, PartitionLag]:
    return {p.partition: p for p in lag.partitions if p.topic == topic}


def test_records_and_event_time_per_partition_match_what_was_written(topics: Settings) -> None:
    s = topics
    t = s.topics
    times = {p: [T0 + 1_000 * (10 * p + i) for i in range(4 + p)] for p in range(3)}
    _write(
        s, t.features, {p: [_features_record(i, ts) for i, ts in enumerate(tss)] for p, tss in times.items()}
    )
    # events with ISO times, none committed by the feature workers' group: all waiting, from offset 0
    events = [
        {"entity": "u", "event_id": f"v{i}", "ts": f"2024-01-01T00:00:0{i}Z", "fields": {}} for i in range(3)
    ]
    _write(s, t.events, {1: [orjson.dumps(e) for e in events]})
    # two models: the learner goes on from the least of their positions; partition 2 named by neither: 0
    _checkpoint(s, {t.features: {"0": 3, "1": 5}}, "lr")
    _checkpoint(s, {t.features: {"0": 1, "1": 5}, t.labels: {"0": 0}}, "lr2")

    lag = measure(s, registry(s), ["lr", "lr2"], timeout_s=10)
    learner, features = lag["learner"], lag["features"]
    assert learner.problems == [] and learner.known and features.problems == []
    f = _by_partition(learner, t.features)
    # oracle: end minus the least position, and the time the test wrote at that position
    assert {p: (x.end, x.position, x.records) for p, x in f.items()} == {
        0: (4, 1, 3),
        1: (5, 5, 0),
        2: (6, 0, 6),
    }
    assert f[0].event_ms == times[0][1] and f[2].event_ms == times[2][0] and f[1].event_ms is None
    assert f[1].seconds(now=0.0) == 0.0  # nothing waits: 0 s behind, however old the partition's records
    now = T0 / 1000 + 100
    assert f[0].seconds(now) == pytest.approx(now - times[0][1] / 1000)
    oldest = min(times[0][1], times[2][0])  # the oldest record waiting on any partition
    assert learner.worst(now) == (6, pytest.approx(now - oldest / 1000))
    assert {p.topic for p in learner.partitions} == {t.features, t.labels, t.predictions}
    assert sum(p.records or 0 for p in learner.partitions if p.topic != t.features) == 0
    assert learner.records == 9
    ev = _by_partition(features, t.events)
    assert (ev[1].records, ev[1].event_ms) == (3, 1_704_067_200_000)  # the ISO time of the first waiting
    assert features.records == 3


def test_garbage_offsets_in_a_checkpoint_make_the_learners_lag_unknown(topics: Settings) -> None:
    """Before: ``rivulet status`` raised ValueError (``int('nope')``) on a signed checkpoint whose offsets
    were not positions, and AttributeError on offsets that were not a mapping."""
    s = topics
    for garbage in ({s.topics.features: {"0": "nope"}}, "nope", {s.topics.features: {"0": -4}}):
        _checkpoint(s, garbage)
        status = gather(s, registry(s), endpoints=NOTHING)
        learner = next(x for x in status.stages if x.name == "learner")
        assert learner.lag_known is False and learner.lag_records is None, garbage
        assert any(p.startswith("learner: lag not known") and "model lr" in p for p in status.problems)
        features = next(x for x in status.stages if x.name == "features")
        assert features.lag_known and features.lag_records == 0  # the other stage is still measured


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_kafka_unreachable_is_unknown_lag_not_zero(topics: Settings) -> None:
    """Before: ``gather`` raised KafkaUnavailable (the admin client's bootstrap) and nothing was shown."""
    s = topics
    _checkpoint(s, {s.topics.features: {"0": 0}})
    away = s.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{_closed_port()}"})
    lag = measure(away, registry(s), ["lr"], timeout_s=1)
    for stage in lag.values():
        assert not stage.known and stage.records is None and stage.partitions == []
        assert stage.problems and stage.problems[0].startswith("Kafka: ")
    status = gather(away, registry(s), endpoints=NOTHING)
    assert [m.name for m in status.models] == ["lr"]  # the registry's part is still there
    assert {x.name: x.lag_records for x in status.stages} == {"features": None, "learner": None, "api": None}
    assert sum(p.endswith(")") and "lag not known" in p for p in status.problems) == 2


def test_a_deleted_topic_an_added_partition_and_a_position_past_the_end(topics: Settings) -> None:
    s = topics
    t = s.topics
    _write(s, t.features, {0: [_features_record(i, T0 + i) for i in range(2)]})
    admin = kafka_admin(s)
    try:
        admin.create_partitions({t.features: 4})  # a partition added: no checkpoint names it
    finally:
        admin.close()
    _write(s, t.features, {3: [_features_record(i, T0 + 50 + i) for i in range(5)]})
    _checkpoint(s, {t.features: {"0": 2, "1": 0, "2": 0}})
    lag = measure(s, registry(s), ["lr"], timeout_s=10)["learner"]
    added = _by_partition(lag, t.features)[3]
    assert (added.position, added.records, added.event_ms) == (0, 5, T0 + 50) and lag.known

    with TopicAdmin(s) as topic_admin:
        topic_admin.delete([t.labels])
    _checkpoint(s, {t.features: {"0": 9, "1": 0, "2": 0, "3": 0}})  # 9: past partition 0's end (2)
    lag = measure(s, registry(s), ["lr"], timeout_s=10)["learner"]
    assert not lag.known
    assert f"topic {t.labels} missing" in lag.problems
    assert any(p.startswith(f"{t.features}[0]: position 9 is past the end 2") for p in lag.problems)
    f = _by_partition(lag, t.features)
    assert f[0].records is None and f[0].seconds(0.0) is None  # not known, not 0
    assert f[3].records == 5 and lag.records == 5  # the rest is still measured
    assert not {p.topic for p in lag.partitions} & {t.labels}


def test_a_partition_of_thousands_of_digits_huge_offsets_and_a_partition_that_does_not_exist(
    topics: Settings,
) -> None:
    """Before: a partition named by 5,000 digits raised ValueError from ``int()`` (Python's limit on digits)
    in ``CheckpointHeader.of``, which is meant never to raise: ``rivulet status`` printed a traceback."""
    s = topics
    t = s.topics
    _checkpoint(s, {t.features: {"1" * 5000: 3}})
    status = gather(s, registry(s), endpoints=NOTHING)
    learner = next(x for x in status.stages if x.name == "learner")
    assert learner.lag_known is False and learner.lag_records is None
    assert "model lr: its checkpoint's offsets are not positions" in learner.detail

    # a partition index of 10**9 (no such partition: not measured) and an offset far past the end
    _write(s, t.features, {0: [_features_record(i, T0 + i) for i in range(2)]})
    _checkpoint(s, {t.features: {str(10**9): 5, "0": 2**62}, "no such topic!": {"0": 1}})
    lag = measure(s, registry(s), ["lr"], timeout_s=10)["learner"]
    assert sorted(_by_partition(lag, t.features)) == [0, 1, 2]  # the topic's own partitions only
    assert lag.problems == [f"{t.features}[0]: position {2**62} is past the end 2 (topic recreated?)"]
    assert lag.records == 0  # the other topics' partitions: nothing waits


def test_many_models_with_hostile_names_and_garbage_offsets_are_said_in_a_bounded_line(
    topics: Settings,
) -> None:
    """Before: one problem per model, each naming the model whole: 40 models of 10 kB names made the
    learner's lag problem 400 kB (one line of ``rivulet status``, a cell of the dashboard, every log line)."""
    s = topics
    names = [f"m{i}/é☃\u202e<b>" + "x" * 10_000 for i in range(40)]
    for name in names:
        _checkpoint(s, {s.topics.features: {"0": "garbage"}}, name)
    lag = measure(s, registry(s), names, timeout_s=10)
    learner = lag["learner"]
    assert not learner.known and len(learner.problems) <= 6
    assert sum(map(len, learner.problems)) < 2_000
    assert learner.problems[-1] == "and 35 more models whose checkpoint's offsets are not positions"
    assert learner.problems[0].startswith("model m0/é☃\u202e<b>xxx")
    assert lag["features"].known  # the other stage is still measured
    status = gather(s, registry(s), endpoints=NOTHING)
    assert sum(map(len, status.problems)) < 2_000


def test_a_topic_of_200_partitions_recreated_is_said_in_a_bounded_line(topics: Settings) -> None:
    """The features topic deleted and recreated with 200 partitions (its offsets back to 0) under a
    checkpoint at offset 3 on each: every partition is measured, none known. Before: one problem per
    partition, 200 of them in the learner's line."""
    s = topics
    t = s.topics
    _checkpoint(s, {t.features: {str(p): 3 for p in range(200)}})
    with TopicAdmin(s) as admin:
        admin.delete([t.features])
    with TopicAdmin(s) as admin:  # deletion completes in the background: create until it is created now
        # (create leaves a topic that still exists as it is: the old one, not yet deleted, then gone)
        for _ in range(300):
            try:
                if admin.create([t.features], partitions=200)[t.features]:
                    break
            except Exception:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError(f"{t.features} was not recreated within 60 s")
    for _ in range(100):  # the new partitions reach the broker's metadata in the background
        try:
            _write(s, t.features, {7: [_features_record(i, T0 + i) for i in range(4)]})
            break
        except (ValueError, KafkaError):  # "Unrecognized partition 7", metadata not yet there: nothing sent
            time.sleep(0.2)
    lag = measure(s, registry(s), ["lr"], timeout_s=10)["learner"]
    f = _by_partition(lag, t.features)
    assert len(f) == 200 and f[7].records == 1 and f[7].event_ms == T0 + 3
    assert sum(x.records is None for x in f.values()) == 199 and not lag.known
    assert len(lag.problems) == 6 and lag.problems[-1] == "and 194 more partitions not known"
    assert lag.problems[0] == f"{t.features}[0]: position 3 is past the end 0 (topic recreated?)"
