"""`rivulet produce` from a synthetic River stream with delayed labels; `rivulet watch` sees it arrive."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import orjson
import pytest

from features.events import Event
from streaming.ingest.rows import open_source
from streaming.settings import Settings
from tests.support.kafka_read import read_all

pytestmark = pytest.mark.integration

N = 600


def _rivulet(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RIVULET_TOPIC_PREFIX": settings.topic_prefix}
    return subprocess.run(
        [sys.executable, "-m", "streaming.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_synthetic_stream_with_delayed_labels_arrives_whole(rivulet_topics: Settings) -> None:
    s = rivulet_topics
    result = _rivulet(
        s,
        "produce",
        "synth:agrawal",
        "--limit",
        str(N),
        "--seed",
        "3",
        "--labels",
        "topic",
        "--label-delay",
        "25",
        "--entities",
        "40",
        "--start-ts",
        "2024-01-01T00:00:00Z",
        "--step-ms",
        "10",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert f"sent {N:,} events" in result.stdout
    assert f"{N:,} labels" in result.stdout

    events = sorted(
        (Event.from_json(r.value) for r in read_all(s.kafka_bootstrap, s.topics.events)), key=lambda e: e.ts
    )
    labels = {
        v["event_id"]: v
        for v in (orjson.loads(r.value) for r in read_all(s.kafka_bootstrap, s.topics.labels))
    }
    # oracle: the same seeded stream read directly from River
    expected = [r.data for r in itertools.islice(open_source("synth:agrawal", seed=3), N)]
    assert len(events) == N
    assert len(labels) == N
    t0 = 1_704_067_200_000
    for i, (event, row) in enumerate(zip(events, expected, strict=True)):
        assert row is not None
        assert event.ts == t0 + 10 * i
        assert event.entity == f"e{i % 40}"
        assert event.label is None  # labels travel separately
        assert event.fields == {k: v for k, v in row.items() if k != "label"}
        label = labels[event.event_id]
        assert label["label"] == row["label"]
        # released 25 events later: known at that event's time; the tail, still pending when the stream
        # ended, is known just after it, a millisecond apart in order
        if i + 25 < N:
            assert label["ts"] == t0 + 10 * (i + 25)
        else:
            assert label["ts"] == t0 + 10 * (N - 1) + (i - (N - 25) + 1)


def test_watch_counts_what_arrived(rivulet_topics: Settings) -> None:
    s = rivulet_topics
    assert _rivulet(s, "produce", "river:Phishing", "--limit", "300", "--quiet").returncode == 0
    result = _rivulet(s, "watch", "events", "--from-beginning", "--limit", "300", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["records"] == 300
    assert summary["entities"] == 100
    assert sum(summary["partitions"].values()) == 300
