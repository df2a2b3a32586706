"""Bad rows through `rivulet produce`: each is reported with its line and reason, good rows still arrive.

Runs the real command in a subprocess against the real broker, then reads the topic back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from features.events import Event
from streaming.errors import DeliveryError
from streaming.ingest.producer import Producer
from streaming.settings import Settings
from tests.support.kafka_read import read_all

pytestmark = pytest.mark.integration

RIVULET = [sys.executable, "-m", "streaming.cli"]


def _produce(settings: Settings, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RIVULET_TOPIC_PREFIX": settings.topic_prefix,
        "RIVULET_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
    }
    return subprocess.run(
        [*RIVULET, "produce", *map(str, args), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _rejects(path: Path) -> dict[int, str]:
    return {r["line"]: r["error"] for r in map(orjson.loads, path.read_bytes().splitlines())}


def test_malformed_jsonl_rows_are_rejected_by_line_and_good_rows_arrive(
    rivulet_topics: Settings, tmp_path: Path
) -> None:
    good = [
        b'{"event_id": "g1", "entity": "a", "ts": 1000, "fields": {"x": 1}}',
        b'{"event_id": "g2", "entity": "b", "ts": "2024-01-01T00:00:00Z", "fields": {"x": 2.5}, '
        b'"label": true}',
        b'{"event_id": "g3", "entity": "c", "ts": 3000, "amount": 7, "label": 0}',  # flat row
    ]
    lines = [
        good[0],
        b'{"entity": "a", "ts": 1000, "fields": {"x": 1}',  # 2: truncated JSON
        b'{"ts": 1000, "fields": {"x": 1}}',  # 3: no entity
        b'{"entity": "a", "ts": "yesterday", "fields": {}}',  # 4: unparseable time
        b'{"entity": "a", "ts": 1000, "fields": {"x": NaN}}',  # 5: NaN
        b'{"entity": "a", "ts": 1000, "fields": {"x": 1e999}}',  # 6: infinity
        b"[1, 2, 3]",  # 7: not an object
        b'{"entity": "a", "ts": 1000, "fields": {"x": "\xff\xfe"}}',  # 8: invalid UTF-8
        good[1],
        b'{"entity": "a", "ts": 1000, "fields": {"x": {"nested": 1}}}',  # 10: not flat
        b'{"entity": "a", "ts": 1000, "fields": {"blob": "' + b"x" * 1_100_000 + b'"}}',  # 11: too large
        b"",  # blank lines are skipped, not rejected
        good[2],
        b'{"entity": "a", "ts": 1000, "fields": {"n": 18446744073709551615}}',  # 14: beyond int64
        b'{"entity": "a", "ts": 1000, "fields": {"n": 1e400}}',  # 15: infinity when read
    ]
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.jsonl"

    result = _produce(rivulet_topics, src, "--rejects", rejects)

    assert result.returncode == 2, result.stderr
    errors = _rejects(rejects)
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 8, 10, 11, 14, 15]
    assert errors[14] == "fields.n: integer outside the int64 range (-2**63 .. 2**63-1)"
    assert "infinity" in errors[15]
    assert "not valid JSON" in errors[2]
    assert errors[3].startswith("entity: is required")
    assert "ts: 'yesterday'" in errors[4]
    assert "not valid JSON" in errors[5]
    assert "infinity" in errors[6]
    assert "expected a JSON object" in errors[7]
    assert "UTF-8" in errors[8]
    assert errors[10].startswith("fields.x: must be a string, number, boolean or null")
    assert "over the 1,000,000-byte limit" in errors[11]
    assert "line 4: ts: 'yesterday'" in result.stderr
    assert "sent 3 events" in result.stdout

    arrived = {
        e.event_id: e
        for e in (
            Event.from_json(r.value)
            for r in read_all(rivulet_topics.kafka_bootstrap, rivulet_topics.topics.events)
        )
    }
    assert sorted(arrived) == ["g1", "g2", "g3"]
    assert arrived["g2"].ts == 1_704_067_200_000
    assert arrived["g2"].label is True
    assert arrived["g3"].fields == {"amount": 7}
    assert arrived["g3"].label == 0


def test_malformed_csv_rows_are_rejected_by_line_and_good_rows_arrive(
    rivulet_topics: Settings, tmp_path: Path
) -> None:
    src = tmp_path / "events.csv"
    src.write_text(
        "user,time,amount,label\n"
        "u1,1000,1.5,1\n"  # 2 good
        "u2,2000\n"  # 3 too few columns
        "u3,3000,nan,0\n"  # 4 NaN
        "u4,4000,inf,0\n"  # 5 infinity
        "u5,not-a-time,2.0,1\n"  # 6 bad time
        ",6000,2.0,1\n"  # 7 no entity
        "u7,2024-01-01T00:00:01Z,3.0,0\n"  # 8 good, ISO time
        "u8,8000,1,2,3\n"  # 9 too many columns
        "u9,9000,18446744073709551616,1\n"  # 10 beyond int64 (2**64)
        "u10,10000,9223372036854775807,1\n"  # 11 good: int64's largest
    )
    rejects = tmp_path / "rejects.jsonl"

    result = _produce(
        rivulet_topics, src, "--entity-field", "user", "--ts-field", "time", "--rejects", rejects
    )

    assert result.returncode == 2, result.stderr
    errors = _rejects(rejects)
    assert sorted(errors) == [3, 4, 5, 6, 7, 9, 10]
    assert errors[10] == "fields.amount: integer outside the int64 range (-2**63 .. 2**63-1)"
    assert errors[3] == "expected 4 columns, got 2"
    assert errors[9] == "expected 4 columns, got 5"
    assert errors[4] == errors[5] == "fields.amount: NaN and infinity are not allowed"
    assert errors[6].startswith("time: 'not-a-time'")
    assert errors[7].startswith("user: is required")
    arrived = sorted(
        (e.entity, e.ts, e.fields["amount"], e.label)
        for e in (
            Event.from_json(r.value)
            for r in read_all(rivulet_topics.kafka_bootstrap, rivulet_topics.topics.events)
        )
    )
    assert arrived == [
        ("u1", 1000, 1.5, 1),
        ("u10", 10_000, 2**63 - 1, 1),
        ("u7", 1_704_067_201_000, 3.0, 0),
    ]


def test_an_event_over_the_brokers_limit_is_reported_by_id(settings: Settings, make_topic) -> None:
    # The producer checks RIVULET_MAX_EVENT_BYTES before sending, and topics Rivulet creates accept that
    # size. A foreign topic with a smaller limit makes the broker refuse the whole batch holding the big
    # record (kafka-python does not split batches): every refused record is reported by id, none is lost
    # silently, and what the broker did accept is stored.
    topic = make_topic("small", partitions=1, configs={"max.message.bytes": "2000"})
    events = [Event(event_id=f"ok-{i}", entity="e", ts=i, fields={"i": i}) for i in range(5)]
    big = Event(event_id="too-big", entity="e", ts=99, fields={"blob": "x" * 5_000})
    with Producer(settings, events_topic=topic) as producer:
        assert producer.send_many(events[:2]) == 2
        with pytest.raises(DeliveryError) as info:
            producer.send_many([big, *events[2:]])
    failed = {f.record_id: f.error for f in info.value.failures}
    assert "too-big" in failed
    assert "MessageSizeTooLarge" in failed["too-big"]
    stored = [Event.from_json(r.value).event_id for r in read_all(settings.kafka_bootstrap, topic)]
    assert stored[:2] == ["ok-0", "ok-1"]
    assert not set(stored) & set(failed)
    assert set(stored) | set(failed) == {e.event_id for e in [*events, big]}
