"""Names and values MLflow refuses, through the tracker and the real MLflow library (a SQLite store; and
``mlflow server`` over HTTP): spec names that are unicode or long, River steps named ``a//b``, ``..``,
``./x`` (paths MLflow refuses as parameter keys: every version of such a spec was refused), a parameter
value past MLflow's 6,000 characters, metric names that are paths and metric values that are NaN or
infinite. Each version is logged (nothing refused), with names MLflow takes and finite metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from river import compose, linear_model, metrics, preprocessing

from streaming.learning.keys import generate
from streaming.learning.registry import MemoryRegistry
from streaming.learning.spec import CheckpointPolicy, ModelSpec
from streaming.settings import Settings
from streaming.tracking import tracker_for
from tests.streaming.tracking.test_tracker import versions
from tests.support.mlflow_server import MlflowServer, free_port, sqlite_uri, tracked

pytestmark = pytest.mark.unit


class Noted(linear_model.LogisticRegression):
    """A River model with a hyper-parameter longer than any MLflow parameter value."""

    def __init__(self, note: str = "é" * 10_000) -> None:
        super().__init__()
        self.note = note


def stepped() -> compose.Pipeline:
    return compose.Pipeline(
        ("a//b", preprocessing.StandardScaler()),
        ("./x", preprocessing.StandardScaler()),
        ("..", Noted()),
    )


COUNTERS = {"x//y": 3, "nan": math.nan}
HOSTILE_METRICS = {"a//b": 0.5, "..": 0.25, "./m": 0.125, "é" * 300: 1.0, "nan": math.nan, "inf": math.inf}


def spec(name: str) -> ModelSpec:
    return ModelSpec(
        name, "binary", "v", stepped, metrics=(metrics.Accuracy,), checkpoint=CheckpointPolicy(keep=10)
    )


NAMES = ["модель ü", "m" * 240, "with 'quotes' and %20 ?&#"]


def check_logged(uri: str, names: list[str]) -> None:
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert sorted(m.name for m in c.search_registered_models()) == sorted(names)
    for name in names:
        [champion] = [c.get_model_version_by_alias(name, "champion")]
        run = c.get_run(champion.run_id)
        params = run.data.params
        assert params["spec"] == name and params["model"] == "Pipeline"
        assert {"model.a__b.with_std", "model../x.with_std", "model....note"} <= set(params)
        assert len(params["model....note"]) == 6_000 and params["model....note"].endswith("...")
        got = run.data.metrics
        assert got["a__b"] == 0.5 and got["_."] == 0.25 and got["__m"] == 0.125 and got["count.x__y"] == 3
        assert "nan" not in got and "inf" not in got and "count.nan" not in got
        assert all(math.isfinite(v) for v in got.values())


def run_tracker(settings: Settings, reg: MemoryRegistry, specs: list[ModelSpec], n: int) -> Any:
    t = tracker_for(settings, reg, specs)
    assert t is not None
    t.start()
    assert t.flush(300)
    t.close(5)
    return t.stats()


def test_hostile_names_and_values_are_logged_to_a_sqlite_store(tmp_path: Path) -> None:
    reg = MemoryRegistry(signer=generate())
    specs = [spec(n) for n in NAMES]
    for s in specs:
        versions(reg, s, 2, metrics=HOSTILE_METRICS, counters=COUNTERS)
    stats = run_tracker(tracked(Settings(), sqlite_uri(tmp_path), tmp_path / "a"), reg, specs, 2)
    assert stats.refused == 0 and stats.logged == 2 * len(NAMES) and stats.pending == 0
    check_logged(sqlite_uri(tmp_path), NAMES)


def test_hostile_names_and_values_are_logged_over_http(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path / "mlflow", free_port())
    server.start()
    try:
        reg = MemoryRegistry(signer=generate())
        specs = [spec(n) for n in NAMES]
        for s in specs:
            versions(reg, s, 1, metrics=HOSTILE_METRICS, counters=COUNTERS)
        stats = run_tracker(tracked(Settings(), server.uri), reg, specs, 1)
        assert stats.refused == 0 and stats.logged == len(NAMES) and stats.pending == 0
        check_logged(server.uri, NAMES)
    finally:
        server.stop()
