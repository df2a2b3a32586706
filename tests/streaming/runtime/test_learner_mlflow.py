"""The learner's model versions in MLflow (issue 17), on real Kafka, Redis and MLflow (a SQLite store in the
test's directory, and ``mlflow server`` over HTTP): every version registered with its lineage, the alias
``champion`` on the version served, the pyfunc model scoring as Rivulet does, and MLflow down for a whole
run changing nothing of the models, what it missed counted and logged once it is back."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import mlflow  # the extra rivulet[mlflow], which the dev extra installs
import orjson
import pandas as pd
import pytest
from mlflow import MlflowClient

from streaming import clients
from streaming.learning.registry import RedisRegistry
from streaming.learning.spec import ModelSpec
from streaming.learning.state import ModelState, predict, select_inputs
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from streaming.tracking.describe import version_tags
from tests.support.drifting import agrawal_drift
from tests.support.learning import LEARNER_IDLE_S, registry, ts
from tests.support.mlflow_server import MlflowServer, free_port, sqlite_uri, tracked
from tests.support.model_defs import LIFECYCLE, LR

pytestmark = pytest.mark.integration


def publish(s: Settings, n: int, drift_at: int, start: int = 0) -> list[dict[str, Any]]:
    """Agrawal records ``start`` to ``start + n`` to the features topic (view ``all``, labels inline, one
    second apart), the concept changing at ``drift_at``; the feature vectors, in order."""
    producer = clients.kafka_producer(s)
    xs = []
    for i, (x, y) in enumerate(agrawal_drift(6, drift_at).take(start + n)):
        if i < start:
            continue
        entity = f"u{i % 20}"
        event = {"event_id": f"ev{i}", "ts": ts(i), "label": bool(y)}
        record = {"view": "all", "entity": entity, "event": event, "features": x}
        producer.send(s.topics.features, orjson.dumps(record), key=entity.encode())
        xs.append(x)
    producer.flush()
    producer.close()
    return xs


def learn(s: Settings, specs: list[ModelSpec], prefix: str | None = None) -> LearnerWorker:
    if prefix is not None:
        s = s.model_copy(update={"redis_prefix": prefix})
    worker = LearnerWorker(s, specs, registry=registry(s))
    worker.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)
    return worker


def client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def served(reg: RedisRegistry, spec: ModelSpec) -> tuple[str, int]:
    model = (reg.champion(spec.name) or spec.name) if spec.promotion is not None else spec.name
    version = reg.current_version(model)
    assert version is not None
    return model, version


def mlflow_versions(c: MlflowClient, spec: str) -> dict[tuple[str, int], Any]:
    """(Rivulet model, version) -> MLflow model version, of the registered model ``spec``."""
    out = {}
    for mv in c.search_model_versions(f"name = '{spec}'", max_results=10_000):
        key = (mv.tags["rivulet.model"], int(mv.tags["rivulet.version"]))
        assert key not in out, f"{key} registered twice"
        out[key] = mv
    return out


def check_registered(c: MlflowClient, reg: RedisRegistry, spec: ModelSpec, every: int = 1) -> dict:
    """MLflow holds every retained version of ``spec``'s models (every ``every``-th, and the one served),
    with the lineage of its signed header, and ``champion`` on the version served; returns its versions."""
    logged = mlflow_versions(c, spec.name)
    names = [n for n in reg.names() if n.split("~")[0] == spec.name]
    model, version = served(reg, spec)
    expected = {
        (n, v.version)
        for n in names
        for v in reg.versions(n)
        if v.version % every == 0 or (n, v.version) == (model, version)
    }
    assert expected and set(logged) == expected
    for n in names:
        for v in reg.versions(n):
            mv = logged.get((n, v.version))
            if mv is None:
                continue
            want = version_tags(v.header)
            assert orjson.loads(mv.tags["rivulet.offsets"]) == v.header["offsets"]
            assert (
                v.header["feature_hash"] and mv.tags["rivulet.feature_hash"] == want["rivulet.feature_hash"]
            )
            assert mv.tags["rivulet.key_id"] == v.header["key_id"]
            run = c.get_run(mv.run_id)
            assert run.data.tags["rivulet.river_version"] == v.header["river"]
            assert run.data.params["task"] == spec.task
            for metric, value in v.header["metrics"].items():
                assert run.data.metrics[metric] == pytest.approx(value, rel=1e-12)
                [point] = c.get_metric_history(mv.run_id, metric)
                assert point.step == v.header["n_learned"]
    champion = c.get_model_version_by_alias(spec.name, "champion")
    assert (champion.tags["rivulet.model"], int(champion.tags["rivulet.version"])) == (model, version)
    return logged


def rivulet_predictions(state: ModelState, xs: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """What the scoring API answers for each vector (the function it calls)."""
    return [predict(state, select_inputs(x, state.features), serving=True) for x in xs]


def check_pyfunc(uri: str, reg: RedisRegistry, spec: ModelSpec, xs: list[dict[str, Any]]) -> None:
    """The champion loaded back from MLflow scores a frame of vectors as Rivulet scores them."""
    model, version = served(reg, spec)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{spec.name}@champion")
    out = loaded.predict(pd.DataFrame(xs))
    expected = rivulet_predictions(reg.load(model, version).state, xs)
    assert list(out["prediction"]) == [label for label, _ in expected]
    for cls in (False, True):
        assert list(out[f"proba:{cls}"]) == [proba[cls] for _, proba in expected]
    assert len({proba[True] for _, proba in expected}) > 5  # a model, not a constant


def test_every_version_in_mlflow_and_the_pyfunc_scores_as_rivulet(topics: Settings, tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    s = tracked(topics, uri, tmp_path / "artifacts")
    xs = publish(s, 1_500, drift_at=10_000)
    worker = learn(s, [LR])
    stats = worker.mlflow_stats()
    reg = registry(s)
    n_versions = len(reg.versions("lr"))
    assert n_versions >= 5  # every 300 records
    assert stats is not None and stats.logged == n_versions and stats.pending == 0 and stats.missed == 0
    c = client(uri)
    check_registered(c, reg, LR)
    assert [m.name for m in c.search_registered_models()] == ["lr"]
    check_pyfunc(uri, reg, LR, xs[:300])


def test_promotions_move_the_champion_alias(topics: Settings, tmp_path: Path) -> None:
    """The lifecycle spec: a drift starts a challenger that is promoted; MLflow's ``champion`` is on the
    version Rivulet serves (the challenger's), every 3rd version logged besides."""
    uri = sqlite_uri(tmp_path)
    s = tracked(topics, uri, tmp_path / "artifacts", mlflow_every=3)
    xs = publish(s, 10_000, drift_at=5_000)
    worker = learn(s, [LIFECYCLE])
    reg = registry(s)
    model, _ = served(reg, LIFECYCLE)
    assert model != LIFECYCLE.name  # a challenger was promoted
    assert [d["kind"] for d in reg.decisions("m") if d["kind"] == "promotion"]
    c = client(uri)
    logged = check_registered(c, reg, LIFECYCLE, every=3)
    assert {n for n, _ in logged} >= {"m", model}  # the spec's and its challengers' versions, one model
    stats = worker.mlflow_stats()
    assert stats is not None and stats.logged == len(logged) and stats.aliases >= 1 and stats.pending == 0
    check_pyfunc(uri, reg, LIFECYCLE, xs[-300:])


def state_summary(state: ModelState, xs: list[dict[str, Any]]) -> tuple[Any, ...]:
    return state.n_learned, state.metric_values(), rivulet_predictions(state, xs)


def test_mlflow_unreachable_for_a_whole_run_changes_nothing(topics: Settings, tmp_path: Path) -> None:
    """A tracking URI to a closed port: the learner ends with the models of a run without MLflow, and every
    version it wrote is counted as missed and pending (none logged, none lost)."""
    xs = publish(topics, 1_500, drift_at=10_000)
    plain = learn(topics, [LR], prefix=f"{topics.redis_prefix}plain:")
    assert plain.tracker is None and plain.mlflow_stats() is None
    down = tracked(topics, f"http://127.0.0.1:{free_port()}", mlflow_flush_s=0.5)
    worker = learn(down, [LR], prefix=f"{topics.redis_prefix}down:")
    assert state_summary(worker.core.models["lr"], xs[:200]) == state_summary(
        plain.core.models["lr"], xs[:200]
    )
    reg = registry(topics, f"{topics.redis_prefix}down:")
    written = len(reg.versions("lr"))
    stats = worker.mlflow_stats()
    assert stats is not None and written >= 5
    assert stats.logged == 0 and stats.errors >= 1
    assert stats.missed == written and stats.pending == written and stats.lost == 0


def test_hostile_names_are_refused_and_counted(topics: Settings, tmp_path: Path) -> None:
    """A spec MLflow will not register (its name ``..``, which Rivulet takes) is counted as refused, never
    retried; the learner goes on and the other spec is logged."""
    bad = ModelSpec("..", "binary", "all", LR.model, metrics=LR.metrics, checkpoint=LR.checkpoint)
    uri = sqlite_uri(tmp_path)
    s = tracked(topics, uri, tmp_path / "artifacts")
    publish(s, 900, drift_at=10_000)
    worker = learn(s, [LR, bad])
    assert worker.core.models[".."].n_learned == worker.core.models["lr"].n_learned == 900
    reg = registry(s)
    stats = worker.mlflow_stats()
    assert stats is not None and stats.refused == len(reg.versions("..")) >= 3
    assert stats.logged == len(reg.versions("lr")) and stats.pending == 0
    c = client(uri)
    check_registered(c, reg, LR)
    assert [m.name for m in c.search_registered_models()] == ["lr"]
    experiment = c.get_experiment_by_name("rivulet")
    assert experiment is not None
    runs = c.search_runs([experiment.experiment_id])
    assert runs and {r.data.tags["rivulet.spec"] for r in runs} == {"lr"}  # no run of the refused spec


def test_versions_missed_while_mlflow_is_down_are_logged_when_it_returns(
    topics: Settings, tmp_path: Path
) -> None:
    """``mlflow server`` over HTTP, not started when the learner starts: its first versions fail and wait;
    once the server answers they are logged (counted as missed, then recovered), and so are the later ones."""
    server = MlflowServer(tmp_path / "mlflow", free_port())
    s = tracked(topics, server.uri)
    publish(s, 900, drift_at=10_000)
    reg = registry(s)
    worker = LearnerWorker(s, [LR], registry=reg)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while (stats := worker.mlflow_stats()) is None or stats.missed < 3:
            assert time.monotonic() < deadline and thread.is_alive(), stats
            time.sleep(0.1)
        server.start()
        publish(s, 600, drift_at=10_000, start=900)  # later versions, logged as they come
        deadline = time.monotonic() + 180
        while True:
            stats = worker.mlflow_stats()
            assert stats is not None
            if (
                worker.core.models["lr"].n_learned == 1_500
                and stats.pending == 0
                and worker.tracker.flush(0.1)
            ):
                break
            assert time.monotonic() < deadline and thread.is_alive(), stats
            time.sleep(0.2)
    finally:
        worker.stop()
        thread.join(60)
        server_up = server.proc is not None
    try:
        assert server_up
        stats = worker.mlflow_stats()
        assert stats is not None and stats.recovered == stats.missed >= 3 and stats.pending == 0
        assert stats.logged == len(reg.versions("lr")) and stats.lost == 0
        check_registered(client(server.uri), reg, LR)
    finally:
        server.stop()
