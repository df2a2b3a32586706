"""The tracker alone, on the in-memory registry and the real MLflow library (a SQLite store in the test's
directory): a full queue loses nothing the registry still holds, versions the registry trimmed first are
counted as lost, every Nth version is logged and the served one always, and the pyfunc model scores rows
the model cannot take as missing, not as an error."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from river import linear_model, metrics

from streaming.learning.core import LearnerCore
from streaming.learning.keys import generate
from streaming.learning.registry import MemoryRegistry
from streaming.learning.spec import CheckpointPolicy, ModelSpec
from streaming.learning.state import predict, select_inputs
from streaming.settings import Settings
from streaming.tracking import Tracker, tracker_for
from tests.support.mlflow_server import free_port, sqlite_uri, tracked

pytestmark = pytest.mark.unit


def spec(name: str = "lr", keep: int = 10) -> ModelSpec:
    return ModelSpec(
        name,
        "binary",
        "v",
        linear_model.LogisticRegression,
        metrics=(metrics.Accuracy,),
        checkpoint=CheckpointPolicy(keep=keep),
    )


def versions(
    reg: MemoryRegistry, s: ModelSpec, n: int, *, metrics: dict[str, float] | None = None, **header_more: Any
) -> tuple[LearnerCore, list[dict[str, int]]]:
    """``n`` versions of ``s``'s model, 10 records learned between two; each checkpoint's ``saved``. Each
    header's metrics are the model's plus ``metrics``, and ``header_more`` is added to it."""
    core = LearnerCore([s])
    saved = []
    for v in range(n):
        for i in range(10):
            k = 10 * v + i
            core.on_record(f"e{k}", 1_000 * k, {"x": math.sin(k), "y": float(k % 3)}, label=k % 2 == 0)
        state = core.models[s.name]
        header = {"offsets": {"f": {"0": 10 * (v + 1)}}, "n_learned": state.n_learned, "spec": s.name}
        header.update(metrics={**state.metric_values(), **(metrics or {})}, **header_more)
        saved.append({s.name: reg.save(s.name, state, header, keep=s.checkpoint.keep)})
    return core, saved


def tracker(tmp: Path, reg: MemoryRegistry, specs: list[ModelSpec], **more: Any) -> Tracker:
    settings = tracked(Settings(), sqlite_uri(tmp), tmp / "artifacts", **more)
    t = tracker_for(settings, reg, specs)
    assert t is not None
    return t


def rivulet_versions(tmp: Path, spec_name: str) -> list[int]:
    c = MlflowClient(tracking_uri=sqlite_uri(tmp), registry_uri=sqlite_uri(tmp))
    return sorted(int(mv.tags["rivulet.version"]) for mv in c.search_model_versions(f"name = '{spec_name}'"))


def test_a_full_queue_drops_nothing_the_registry_holds(tmp_path: Path) -> None:
    reg = MemoryRegistry(signer=generate())
    s = spec()
    _, saved = versions(reg, s, 6)
    t = tracker(tmp_path, reg, [s], mlflow_queue=2)
    for each in saved:  # the thread not started yet: the third finds the queue full
        t.notify(each)
    assert t.stats().dropped == 4
    t.start()
    assert t.flush(120)
    t.close(5)
    stats = t.stats()
    assert stats.logged == 6 and stats.pending == 0 and stats.lost == 0 and stats.aliases == 1
    assert rivulet_versions(tmp_path, "lr") == [1, 2, 3, 4, 5, 6]  # each once: the resync found them logged


def test_what_a_learner_could_not_log_the_next_one_logs(tmp_path: Path) -> None:
    """MLflow unreachable for a whole tracker's life (a server's port nothing listens on: retried, unlike a
    URI that can never work, ``test_unusable_uri.py``): its versions are counted as missed; a tracker
    started later logs them, with nothing notified."""
    reg = MemoryRegistry(signer=generate())
    s = spec()
    _, saved = versions(reg, s, 3)
    down = tracked(Settings(), f"http://127.0.0.1:{free_port()}", tmp_path / "artifacts")
    first = tracker_for(down.model_copy(update={"mlflow_flush_s": 0.5}), reg, [s])
    assert first is not None
    first.start()
    for each in saved:
        first.notify(each)
    assert not first.flush(1.0)
    first.close(0.5)
    stats = first.stats()
    assert stats.logged == 0 and stats.missed == stats.pending == 3  # still waiting at stop: missed
    second = tracker(tmp_path, reg, [s])
    second.start()
    assert second.flush(120)
    second.close(5)
    assert second.stats().logged == 3 and rivulet_versions(tmp_path, "lr") == [1, 2, 3]


def test_a_rollback_by_hand_moves_the_champion_alias(tmp_path: Path) -> None:
    """``rivulet models rollback`` points the registry's current version back (no checkpoint): the alias
    follows at the tracker's next check."""
    reg = MemoryRegistry(signer=generate())
    s = spec()
    _, saved = versions(reg, s, 3)
    t = tracker(tmp_path, reg, [s], mlflow_reconcile_s=0.2)
    t.start()
    for each in saved:
        t.notify(each)
    assert t.flush(120)
    c = MlflowClient(tracking_uri=sqlite_uri(tmp_path), registry_uri=sqlite_uri(tmp_path))
    assert c.get_model_version_by_alias("lr", "champion").tags["rivulet.version"] == "3"
    reg.set_current("lr", 2)  # what the command does
    deadline = time.monotonic() + 60
    while c.get_model_version_by_alias("lr", "champion").tags["rivulet.version"] != "2":
        assert time.monotonic() < deadline, t.stats()
        time.sleep(0.1)
    t.close(5)
    assert t.stats().aliases == 2 and rivulet_versions(tmp_path, "lr") == [1, 2, 3]


def test_versions_the_registry_trimmed_first_are_lost_and_every_nth_is_logged(tmp_path: Path) -> None:
    reg = MemoryRegistry(signer=generate())
    s = spec(keep=3)
    _, saved = versions(reg, s, 9)  # the registry keeps 7, 8, 9
    t = tracker(tmp_path, reg, [s], mlflow_every=2)
    for each in saved:
        t.notify(each)
    t.start()
    assert t.flush(120)
    t.close(5)
    stats = t.stats()
    # even versions: 2, 4, 6, 8; the tracker keeps the newest 3 (keep) of them: 2 lost before any attempt;
    # 4 and 6 are gone from the registry when tried; 8 is logged, and 9 as the version served
    assert rivulet_versions(tmp_path, "lr") == [8, 9]
    assert stats.logged == 2 and stats.lost == 3 and stats.pending == 0
    c = MlflowClient(tracking_uri=sqlite_uri(tmp_path), registry_uri=sqlite_uri(tmp_path))
    assert c.get_model_version_by_alias("lr", "champion").tags["rivulet.version"] == "9"


def test_a_spec_value_mlflow_refuses_is_counted_not_retried(tmp_path: Path) -> None:
    """A spec name MLflow refuses as a registered model (``.``, which Rivulet takes): refused once per
    version, never sent again, the other spec logged."""
    reg = MemoryRegistry(signer=generate())
    good, bad = spec("lr"), spec(".")
    _, saved_good = versions(reg, good, 2)
    _, saved_bad = versions(reg, bad, 2)
    t = tracker(tmp_path, reg, [good, bad])
    t.start()
    for each in saved_good + saved_bad:
        t.notify(each)
    assert t.flush(120)
    t.notify({".": saved_bad[-1]["."]})  # again: not sent again
    assert t.flush(120)
    t.close(5)
    stats = t.stats()
    assert stats.refused == 2 and stats.logged == 2 and stats.pending == 0 and stats.errors == 0
    assert rivulet_versions(tmp_path, "lr") == [1, 2]


def test_the_pyfunc_scores_rows_as_rivulet_and_a_row_it_cannot_take_as_missing(tmp_path: Path) -> None:
    reg = MemoryRegistry(signer=generate())
    s = spec()
    core, saved = versions(reg, s, 2)
    t = tracker(tmp_path, reg, [s])
    t.start()
    for each in saved:
        t.notify(each)
    assert t.flush(120)
    t.close(5)
    mlflow.set_tracking_uri(sqlite_uri(tmp_path))
    mlflow.set_registry_uri(sqlite_uri(tmp_path))
    model = mlflow.pyfunc.load_model("models:/lr@champion")
    rows = [{"x": 0.3, "y": 1.0}, {"x": -2.0, "y": None}, {"x": math.nan, "y": 2.0}, {"x": "text", "y": 1.0}]
    out = model.predict(pd.DataFrame(rows))
    state = reg.load("lr", 2).state
    for i, row in enumerate(rows[:3]):  # a missing value (None, NaN) is a feature left out
        x = {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
        label, proba = predict(state, select_inputs(x, state.features), serving=True)
        assert out["prediction"][i] == label and out["proba:True"][i] == proba[True]
    # a string feature: select_inputs leaves it out for a model of numbers, as the API does
    label, proba = predict(state, select_inputs(rows[3], state.features), serving=True)
    assert out["prediction"][3] == label and out["proba:True"][3] == proba[True]
    assert model.unwrap_python_model().state.model.weights == core.models["lr"].model.weights


def test_what_is_retried_and_what_is_refused() -> None:
    """MLflow unreachable (the transport's OSError, an MLflow error of the server) is retried; MLflow refusing
    the input, or a version that cannot be written on our side, is refused: it must not hold back the rest."""
    import pickle

    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

    from streaming.tracking.writer import permanent

    assert permanent(MlflowException("bad name", error_code=INVALID_PARAMETER_VALUE))
    assert permanent(pickle.PicklingError("a lambda")) and permanent(RecursionError())
    assert not permanent(MlflowException("server error", error_code=INTERNAL_ERROR))
    assert not permanent(requests.exceptions.ConnectionError("refused")) and not permanent(TimeoutError())
