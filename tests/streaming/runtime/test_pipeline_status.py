"""``rivulet status`` on real Kafka and Redis: the feature workers' lag from the group's offsets, the
learner's from its checkpoints, the models from the registry, each stage's health from its endpoint, and a
non-zero exit (and the reason) when something needs a person."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streaming.clients import registry_redis
from streaming.ingest.producer import Producer
from streaming.runtime.learner_metrics import LearnerMetrics
from streaming.runtime.pipeline_status import gather
from streaming.settings import Settings
from tests.support.api_env import free_port
from tests.support.learning import events, featurise, learn, registry
from tests.support.workers import ROOT

pytestmark = pytest.mark.integration

NOTHING = {"features": None, "learner": None, "api": None}


def run_status(s: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **__import__("os").environ,
        **extra,
        "RIVULET_TOPIC_PREFIX": s.topic_prefix,
        "RIVULET_REDIS_PREFIX": s.redis_prefix,
        "RIVULET_VERIFY_KEYS": ",".join(s.verify_keys),
    }
    return subprocess.run(
        [sys.executable, "-m", "streaming.cli", "status", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_status_reads_lag_models_and_health(topics: Settings, tmp_path: Path) -> None:
    s = topics
    evs = events(400, seed=41)
    with Producer(s) as producer:
        producer.send_many(evs)
    featurise(s, tmp_path)
    learn(s)
    reg = registry(s)

    caught_up = gather(s, reg, endpoints=NOTHING)
    stages = {x.name: x for x in caught_up.stages}
    assert stages["features"].lag_records == 0 and stages["learner"].lag_records == 0
    [lr] = caught_up.models
    assert (lr.name, lr.status, lr.learned, lr.current) == ("lr", "ok", 400, reg.current_version("lr"))
    assert lr.versions == len(reg.versions("lr")) and set(lr.rolling) <= {"LogLoss", "ROCAUC"}
    assert caught_up.problems == []

    # 25 events no worker has read, 30 records on the features topic the learner has not: both counted
    with Producer(s) as producer:
        producer.send_many(events(25, seed=42))
        for i in range(30):
            producer.send_record(s.topics.features, b'{"view": "nope"}', b"k", f"f-{i}")
        producer.flush()
    behind = gather(s, reg, endpoints=NOTHING, max_lag=20)
    stages = {x.name: x for x in behind.stages}
    assert (stages["features"].lag_records, stages["learner"].lag_records) == (25, 30)
    assert behind.problems == [
        "features: 25 records behind (more than 20)",
        "learner: 30 records behind (more than 20)",
    ]

    # the CLI: a learner endpoint that answers is up; one that does not is down, and the exit says so
    metrics = LearnerMetrics()
    port = free_port()
    metrics.serve(port)
    ok = run_status(
        s,
        "--json",
        "--api",
        "",
        "--features-metrics",
        "",
        "--learner-metrics",
        f"http://127.0.0.1:{port}/metrics",
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = orjson.loads(ok.stdout)
    assert {x["name"]: x["up"] for x in report["stages"]} == {"features": None, "learner": True, "api": None}
    assert report["problems"] == [] and report["models"][0]["name"] == "lr"

    closed = free_port()
    down = run_status(
        s,
        "--api",
        "",
        "--features-metrics",
        "",
        "--learner-metrics",
        f"http://127.0.0.1:{closed}/metrics",
        "--max-lag",
        "20",
    )
    assert down.returncode == 1, down.stdout + down.stderr
    assert "NEEDS A PERSON: learner: down" in down.stdout
    assert "NEEDS A PERSON: learner: 30 records behind (more than 20)" in down.stdout
    assert "model lr: ok" in down.stdout


def test_a_checkpoint_with_garbage_descriptive_fields_is_shown_not_a_traceback(topics: Settings) -> None:
    """Before: ``model_statuses`` read the raw header, so a signed checkpoint whose metrics, counters or
    dead letters had the wrong type raised AttributeError (``rivulet status`` printed a traceback, and the
    API's lag watcher, which reads the same, said nothing of either stage)."""
    s = topics
    reg = registry(s)
    garbage = {"rolling_LogLoss": "x", "rolling_ROCAUC": [1], "rolling_Accuracy": 0.5}
    header = {"metrics": garbage, "counters": [1], "rejected": "bad", "saved_at": "x", "n_learned": "7"}
    reg.save("lr", {"state": 1}, {"offsets": {s.topics.features: {"0": 0}}, **header})
    worse = {"metrics": [], "counters": {"drifts": "many"}, "rejected": 4}
    reg.save("lr2", {"state": 1}, {"offsets": {}, **worse})

    status = gather(s, reg, endpoints=NOTHING)
    lr = next(m for m in status.models if m.name == "lr")
    assert (lr.status, lr.rolling, lr.drifts, lr.dead_letters, lr.checkpoint_age_s) == (
        "ok",
        {"Accuracy": 0.5},
        0,
        {},
        None,
    )
    assert lr.learned is None and lr.current == reg.current_version("lr")
    stages = {x.name: x for x in status.stages}
    assert stages["learner"].lag_known and stages["learner"].lag_records == 0  # still measured

    out = run_status(s, "--json", "--api", "", "--features-metrics", "", "--learner-metrics", "")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    report = orjson.loads(out.stdout)
    assert sorted(m["name"] for m in report["models"]) == ["lr", "lr2"]


def test_raw_garbage_in_the_registrys_redis_keys_is_not_a_traceback(topics: Settings) -> None:
    """What no Rivulet writes but Redis may hold (a hand edit, another tool): a model's name that is not
    UTF-8 in the set of names, a history sample that is not JSON. Before: ``rivulet status`` printed a
    traceback (UnicodeDecodeError, then JSONDecodeError) and the API's lag watcher knew neither stage."""
    s = topics
    reg = registry(s)
    reg.save("lr", {"state": 1}, {"offsets": {s.topics.features: {"0": 0}}})
    r = registry_redis(s)
    r.sadd(f"{s.redis_prefix}models", b"\xff\xfe not utf-8")
    r.xadd(reg._k("lr", "history"), {b"s": b"{not json"})

    status = gather(s, reg, endpoints=NOTHING)
    assert [m.name for m in status.models] == ["lr"] and status.models[0].status == "ok"
    assert {x.name: x.lag_known for x in status.stages} == {"features": True, "learner": True, "api": True}
    out = run_status(s, "--api", "", "--features-metrics", "", "--learner-metrics", "")
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 0 and "model lr: ok" in out.stdout, out.stdout + out.stderr


def test_status_json_when_redis_is_unreachable_is_still_json(topics: Settings) -> None:
    """Before: ``rivulet status --json`` with Redis unreachable printed nothing on stdout (the error on
    stderr only): a script reading its JSON got none. Now a JSON object saying why, and exit 1."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    off = ("--api", "", "--features-metrics", "", "--learner-metrics", "")
    out = run_status(topics, "--json", *off, RIVULET_REDIS_URL=closed)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    report = orjson.loads(out.stdout)
    assert "connecting to 127.0.0.1" in report["error"]
    assert report["problems"] == [f"status not known: {report['error']}"]
    text = run_status(topics, *off, RIVULET_REDIS_URL=closed)  # the text: one clear line on stderr
    assert text.returncode == 1 and text.stdout == ""
    assert text.stderr.startswith("error: ") and len(text.stderr.strip().splitlines()) == 1
