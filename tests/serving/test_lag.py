"""The API measures each stage's lag from outside the stages (``serving.lag``) on real Kafka and Redis and
exports it on ``/metrics`` and ``/v1/dashboard``, from a background task: the values against an oracle
(the offsets and event times the test wrote), Kafka unreachable (the lag not known, no series at all rather
than a 0, every request still answered), a measurement that hangs (bounded, said, never raised), and the
switch that turns it off."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.lag import LagWatcher
from streaming import clients
from streaming.learning.registry import RedisRegistry
from streaming.runtime.stage_lag import StageLag
from streaming.settings import Settings
from tests.serving.conftest import OPS_KEY
from tests.support.serving_env import SIGNER

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def api(app: Any) -> TestClient:
    return TestClient(app, base_url="http://localhost", headers={"X-API-Key": OPS_KEY})


def _series(text: str, name: str) -> dict[tuple[str, ...], float]:
    """name{labels} value -> {(stage, topic, partition) or (stage,): value}."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            out[tuple(found[k] for k in ("stage", "topic", "partition") if k in found)] = float(value)
    return out


def _metrics_with(client: TestClient, needle: str) -> str | None:
    text = client.get("/metrics").text
    return text if needle in text else None


def _until(check: Any, what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return got


def _write_features(s: Settings, partition: int, times: list[int]) -> None:
    producer = clients.kafka_producer(s)
    try:
        for i, ts in enumerate(times):
            event = {"event_id": f"e{partition}-{i}", "ts": ts, "label": None}
            value = orjson.dumps({"view": "zip", "entity": "u", "event": event, "features": {}})
            producer.send(s.topics.features, value=value, key=b"u", partition=partition)
        producer.flush()
    finally:
        producer.close()


def test_the_api_exports_each_stages_lag_and_the_dashboard_shows_it(env: Settings) -> None:
    s = env.model_copy(update={"serve_lag_s": 0.2})
    times = [T0 + 1_000 * i for i in range(7)]
    _write_features(s, 1, times)
    registry = RedisRegistry(clients.registry_redis(s), s.redis_prefix, signer=SIGNER)
    registry.save("zipm", {"state": 1}, {"offsets": {s.topics.features: {"1": 2}}, "view": "zip"})
    with api(create_app(s)) as client:
        # oracle: partition 1 is 7 - 2 records behind, its oldest waiting record the one written third
        text = _until(
            lambda: _metrics_with(client, f'stage="learner",topic="{s.topics.features}"'), "never measured"
        )
        records = _series(text, "rivulet_stage_lag_records")
        assert records[("learner", s.topics.features, "1")] == 5.0
        assert records[("learner", s.topics.features, "0")] == 0.0
        assert ("learner", s.topics.labels, "0") in records  # every topic the learner reads
        seconds = _series(text, "rivulet_stage_lag_seconds")
        behind = seconds[("learner", s.topics.features, "1")]
        assert time.time() - times[2] / 1000 - 60 < behind <= time.time() - times[2] / 1000
        assert seconds[("learner", s.topics.features, "0")] == 0.0  # nothing waits there
        assert _series(text, "rivulet_stage_lag_known") == {("features",): 1.0, ("learner",): 1.0}
        assert len(_series(text, "rivulet_stage_lag_measured_timestamp_seconds")) == 2

        board = client.get("/v1/dashboard").json()
        lag = {x["stage"]: x for x in board["lag"]}
        assert set(lag) == {"features", "learner"}
        learner = lag["learner"]
        assert (learner["known"], learner["records"], learner["worst_records"]) == (True, 5, 5)
        assert learner["worst_records_partition"] == f"{s.topics.features}[1]"
        assert learner["worst_seconds_partition"] == f"{s.topics.features}[1]"
        assert learner["worst_seconds"] == pytest.approx(behind, abs=120)
        assert (lag["features"]["known"], lag["features"]["records"]) == (True, 0)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_kafka_unreachable_the_lag_is_not_known_and_requests_are_answered(env: Settings) -> None:
    s = env.model_copy(
        update={
            "serve_lag_s": 0.2,
            "serve_lag_timeout_s": 0.5,
            "kafka_bootstrap": f"127.0.0.1:{_closed_port()}",
            "kafka_request_timeout_ms": 1_000,
        }
    )
    registry = RedisRegistry(clients.registry_redis(s), s.redis_prefix, signer=SIGNER)
    registry.save("zipm", {"state": 1}, {"offsets": {s.topics.features: {"0": 0}}, "view": "zip"})
    with api(create_app(s)) as client:
        _until(lambda: _metrics_with(client, "rivulet_stage_lag_known{"), "no lag measurement reported")
        _until(lambda: "Kafka" in str(client.get("/v1/dashboard").json()["lag"]), "Kafka's failure not said")
        text = client.get("/metrics").text
        assert _series(text, "rivulet_stage_lag_known") == {("features",): 0.0, ("learner",): 0.0}
        assert _series(text, "rivulet_stage_lag_records") == {}  # not known: no series, never a 0
        assert _series(text, "rivulet_stage_lag_seconds") == {}
        board = client.get("/v1/dashboard")
        assert board.status_code == 200
        for stage in board.json()["lag"]:
            assert stage["known"] is False and stage["records"] is None and stage["worst_seconds"] is None
            assert stage["problems"][0].startswith("Kafka: ")
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/models").status_code == 200


def test_a_checkpoint_with_garbage_offsets_makes_the_learners_lag_unknown(env: Settings) -> None:
    s = env.model_copy(update={"serve_lag_s": 0.2})
    registry = RedisRegistry(clients.registry_redis(s), s.redis_prefix, signer=SIGNER)
    registry.save("zipm", {"state": 1}, {"offsets": {s.topics.features: {"0": "garbage"}}, "view": "zip"})
    with api(create_app(s)) as client:
        text = _until(lambda: _metrics_with(client, 'stage="features",topic='), "never measured")
        assert _series(text, "rivulet_stage_lag_known") == {("features",): 1.0, ("learner",): 0.0}
        assert not any(k[0] == "learner" for k in _series(text, "rivulet_stage_lag_records"))
        [learner] = [x for x in client.get("/v1/dashboard").json()["lag"] if x["stage"] == "learner"]
        assert learner["problems"] == ["model zipm: its checkpoint's offsets are not positions"]
        assert client.get("/v1/models").status_code == 200


def test_the_switch_turns_it_off(env: Settings) -> None:
    s = env.model_copy(update={"serve_lag_s": 0})
    with api(create_app(s)) as client:
        assert "rivulet_stage_lag" not in client.get("/metrics").text
        assert client.get("/v1/dashboard").json()["lag"] == []


def test_a_hanging_measurement_is_bounded_and_said() -> None:
    """A measurement stuck past its deadline (a Kafka call that never returns): the refresh returns, the
    lag is not known; the measurement that hangs is not started twice; a measurement that raises is said."""
    release = threading.Event()
    calls = []

    def stuck() -> dict[str, StageLag]:
        calls.append(1)
        release.wait(30)
        return {}

    watcher = LagWatcher(stuck, interval_s=0.1, timeout_s=0.05)

    async def twice() -> None:
        await watcher.refresh()
        await watcher.refresh()
        release.set()

    asyncio.run(twice())
    assert len(calls) == 1
    lag = watcher.current()
    assert {k: v.known for k, v in lag.items()} == {"features": False, "learner": False}
    assert "took more than" in lag["learner"].problems[0]

    def broken() -> dict[str, StageLag]:
        raise RuntimeError("the registry is garbage")

    watcher = LagWatcher(broken, interval_s=0.1, timeout_s=0.05)
    asyncio.run(watcher.refresh())
    assert watcher.current()["features"].problems == ["RuntimeError: the registry is garbage"]
    assert "rivulet_stage_lag_records" not in str(next(m.samples for m in watcher.collect()))


def test_hostile_topic_names_are_valid_exposition_and_no_series_is_nan_or_negative() -> None:
    """Label values from hostile names (quotes, backslashes, a newline, unicode, 10 kB) come back whole
    through Prometheus' own parser; a record stamped in the future is 0 s behind, never negative; a
    position past the end or negative exports no series. (Held: prometheus_client escapes.)"""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from streaming.runtime.stage_lag import PartitionLag

    hostile = 'a"b\\c\nd é☃ {x="1"} ' + "t" * 10_000
    now = time.time()
    parts = [
        PartitionLag(hostile, 0, end=10, position=4, event_ms=int((now + 3_600) * 1000)),  # future
        PartitionLag(hostile, 1, end=10, position=12),  # past the end
        PartitionLag(hostile, 2, end=10, position=-3),
        PartitionLag(hostile, 3, end=10, position=10),
    ]
    watcher = LagWatcher(
        lambda: {"learner": StageLag("learner", parts, measured_at=now)}, interval_s=60, timeout_s=1
    )
    asyncio.run(watcher.refresh())
    reg = CollectorRegistry()
    reg.register(watcher)  # type: ignore[arg-type]
    samples = [s for f in text_string_to_metric_families(generate_latest(reg).decode()) for s in f.samples]
    lag = {(s.name, s.labels.get("partition")): s for s in samples if s.labels.get("stage") == "learner"}
    assert lag[("rivulet_stage_lag_records", "0")].labels["topic"] == hostile
    assert lag[("rivulet_stage_lag_records", "0")].value == 6
    assert lag[("rivulet_stage_lag_seconds", "0")].value == 0.0
    assert lag[("rivulet_stage_lag_records", "3")].value == 0
    assert ("rivulet_stage_lag_records", "1") not in lag
    assert ("rivulet_stage_lag_records", "2") not in lag and ("rivulet_stage_lag_seconds", "2") not in lag
    assert all(s.value == s.value and s.value >= 0 for s in samples)  # no NaN, nothing negative
    assert lag[("rivulet_stage_lag_known", None)].value == 0.0
