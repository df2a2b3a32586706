"""A replay in MLflow (a SQLite store in the test's directory): a run per candidate whose final metrics are
the replay's own and River's progressive validation on the same dataset, the curves as metric histories,
the report as artifacts, the range as the dataset input; and ``rivulet replay`` logging it, or saying why
not when MLflow is unreachable, its own outputs written either way."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from mlflow import MlflowClient
from river import datasets, evaluate, linear_model, metrics, preprocessing, tree
from typer.testing import CliRunner

from features.definitions import FeatureView
from streaming.cli import app
from streaming.ingest.rows import RowMapping
from streaming.learning.spec import ModelSpec
from streaming.replay.report import curve_points, write_outputs
from streaming.replay.runner import LabelMode, Replay
from streaming.replay.sources import file_records
from streaming.settings import Settings
from streaming.tracking.replays import log_replay
from tests.support.mlflow_server import free_port, sqlite_uri, tracked

pytestmark = pytest.mark.unit

RAW = FeatureView(name="raw", include_fields=True)
MAPPING = RowMapping(entities=10, start_ts=1_700_000_000_000, step_ms=1_000)


def lr() -> object:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


SPECS = [
    ModelSpec("lr", "binary", "raw", lr, metrics=(metrics.LogLoss, metrics.Accuracy)),  # type: ignore[arg-type]
    ModelSpec("tree", "binary", "raw", tree.HoeffdingTreeClassifier, metrics=(metrics.Accuracy,)),
]


def test_a_replay_is_a_run_per_candidate_with_river_s_metrics(tmp_path: Path) -> None:
    replay = Replay(SPECS, views=[RAW], labels=LabelMode("records", 25), sample_every=100)
    replay.run(file_records("river:Phishing", MAPPING))
    result = replay.finish("river:Phishing", {"limit": None}, "event-time")
    paths = write_outputs(result, tmp_path / "out")
    uri = sqlite_uri(tmp_path)
    s = tracked(Settings(), uri, tmp_path / "artifacts")
    runs = log_replay(s, result, SPECS, {"raw": RAW.fingerprint()}, paths)
    assert set(runs) == {"lr", "tree"}
    c = MlflowClient(tracking_uri=uri)
    expected = {
        ("lr", "LogLoss"): evaluate.progressive_val_score(
            datasets.Phishing(), lr(), metrics.LogLoss(), delay=25
        ),
        ("tree", "Accuracy"): evaluate.progressive_val_score(
            datasets.Phishing(), tree.HoeffdingTreeClassifier(), metrics.Accuracy(), delay=25
        ),
    }
    for (model, metric), river_metric in expected.items():
        run = c.get_run(runs[model])
        assert run.data.metrics[metric] == pytest.approx(result.models[model].metrics[metric], rel=1e-12)
        assert run.data.metrics[metric] == pytest.approx(river_metric.get(), rel=1e-12)
        history = sorted((m.step, m.value) for m in c.get_metric_history(runs[model], metric))
        assert history == curve_points(result, model, metric)  # the curve, point for point
        assert {a.path for a in c.list_artifacts(runs[model])} == {
            "drifts.json",
            "replay.html",
            "replay.json",
        }
        assert run.data.tags["rivulet.feature_hash"] == RAW.fingerprint()
        assert run.data.params["task"] == "binary" and run.data.params["spec"] == model
        [given] = run.inputs.dataset_inputs
        assert given.dataset.name == "river:Phishing" and given.dataset.source_type == "rivulet"
        assert orjson.loads(given.dataset.source)["labels"] == result.labels
    # the same range under the same features is the same dataset; other features, another
    again = log_replay(s, result, SPECS, {"raw": RAW.fingerprint()}, paths)
    other = log_replay(s, result, SPECS, {"raw": "another"}, paths)
    digest = {r: c.get_run(ids["lr"]).inputs.dataset_inputs[0].dataset.digest for r, ids in
              {"first": runs, "again": again, "other": other}.items()}  # fmt: skip
    assert digest["first"] == digest["again"] != digest["other"]


def test_rivulet_replay_logs_to_mlflow_or_says_why_not(tmp_path: Path) -> None:
    args = ["replay", "dataset", "river:Phishing", "--limit", "300", "--quiet"]
    uri = sqlite_uri(tmp_path)
    env = {"RIVULET_MLFLOW_TRACKING_URI": uri, "RIVULET_MLFLOW_ARTIFACT_LOCATION": (tmp_path / "a").as_uri()}
    env["RIVULET_MODELS_MODULE"] = "streaming.learning.examples"
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o1")], env=env)
    assert res.exit_code == 0, res.output
    result = orjson.loads((tmp_path / "o1" / "replay.json").read_bytes())
    c = MlflowClient(tracking_uri=uri)
    experiment = c.get_experiment_by_name("rivulet-replays")
    assert experiment is not None
    runs = c.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["rivulet.model"] for r in runs) == sorted(result["models"])
    for r in runs:
        final = result["models"][r.data.tags["rivulet.model"]]["metrics"]
        assert {k: r.data.metrics[k] for k in final} == pytest.approx(final, rel=1e-12)
    down = {**env, "RIVULET_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o2")], env=down)
    assert res.exit_code == 0, res.output  # the replay stands
    assert "MLflow: the replay was not logged" in res.output
    assert orjson.loads((tmp_path / "o2" / "replay.json").read_bytes())["records"] == 300
