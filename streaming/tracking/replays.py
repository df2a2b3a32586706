"""A replay to MLflow (``rivulet replay`` with ``RIVULET_MLFLOW_TRACKING_URI`` set): a run per candidate in
the experiment ``<RIVULET_MLFLOW_EXPERIMENT>-replays``, with the spec as parameters, each metric curve as
a metric history (step = features records replayed, timestamp = the event time there), the final metrics
at the step of the last record, each drift as the metric ``drift`` (1 at its step) and the artifact
``drifts.json``, the report (``replay.html``, ``replay.json``) as artifacts, and the range replayed as the
run's dataset input: its source and range in ``source``, the feature definitions' hash in the digest (the
same range of the same topic under the same features is the same dataset)."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException

from streaming.learning.spec import ModelSpec
from streaming.replay.runner import ReplayResult
from streaming.settings import Settings
from streaming.tracking.describe import MAX_TAG, key, spec_params, value
from streaming.tracking.tracker import http_defaults
from streaming.tracking.uri import check_uri

__all__ = ["client_for", "dataset_of", "log_replay"]


def _dumps(v: Any) -> str:
    return orjson.dumps(v, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS).decode()


def dataset_of(result: ReplayResult, feature_hashes: Mapping[str, str]) -> Dataset:
    """The range replayed as an MLflow dataset: named by its source, digested with its features."""
    source = {"source": result.source, "range": result.range, "order": result.order, "labels": result.labels}
    digest = hashlib.sha256(_dumps({**source, "features": dict(feature_hashes)}).encode()).hexdigest()[:16]
    profile: dict[str, Any] = {"records": result.records, "read": result.read, "first_ts": result.first_ts}
    profile.update({"last_ts": result.last_ts, "feature_hashes": dict(feature_hashes)})
    return Dataset(
        name=value(result.source, 500),
        digest=digest,
        source_type="rivulet",
        source=value(_dumps(source), 60_000),
        profile=value(_dumps(profile), 60_000),
    )


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _metrics(model: Any) -> list[Metric]:
    out: list[Metric] = []
    last: dict[str, tuple[int, float]] = {}
    for records, ts, values in model.curve:
        for name, v in (values or {}).items():
            if _finite(v):
                out.append(Metric(key(name), float(v), int(ts or 0), int(records)))
                last[key(name)] = (int(records), float(v))
    end = max((int(r) for r, _, _ in model.curve), default=0)
    for name, v in model.metrics.items():  # the final value, unless the curve ends with it
        if _finite(v) and last.get(key(name)) != (end, float(v)):
            out.append(Metric(key(name), float(v), 0, end))
    for d in model.drifts:
        out.append(Metric("drift", 1.0, int(d.get("ts") or 0), int(d.get("records") or 0)))
    return out


def client_for(settings: Settings) -> MlflowClient:
    """The client of the settings' tracking URI (set). Building it resolves the store: a URI MLflow has no
    store for, or one it refuses (a file store), raises here, before anything is replayed
    (:func:`streaming.tracking.tracker.never_connects` tells those apart)."""
    uri = settings.mlflow_tracking_uri
    assert uri
    check_uri(uri)  # settings built without validation
    if settings.mlflow_registry_uri:
        check_uri(settings.mlflow_registry_uri, registry=True)
    http_defaults(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=settings.mlflow_registry_uri or uri)


def log_replay(
    settings: Settings,
    result: ReplayResult,
    specs: Sequence[ModelSpec],
    feature_hashes: Mapping[str, str],
    paths: Mapping[str, Path],
) -> dict[str, str]:
    """Log ``result`` (its report written at ``paths``: ``json``, ``html``); model -> run id. Raises what
    MLflow raises: the caller reports it, the replay's own outputs stand."""
    if not settings.mlflow_tracking_uri:
        return {}
    client = client_for(settings)
    name = f"{settings.mlflow_experiment}-replays"
    found = client.get_experiment_by_name(name)
    if found is not None:
        experiment = str(found.experiment_id)
    else:
        try:
            experiment = client.create_experiment(name, artifact_location=settings.mlflow_artifact_location)
        except MlflowException:
            again = client.get_experiment_by_name(name)
            if again is None:
                raise
            experiment = str(again.experiment_id)
    by_name = {s.name: s for s in specs}
    dataset = dataset_of(result, feature_hashes)
    runs = {}
    for model_name, model in result.models.items():
        spec = by_name.get(model.spec)
        tags = {
            "rivulet.replay.source": value(result.source, MAX_TAG),
            "rivulet.replay.range": value(_dumps(result.range), MAX_TAG),
            "rivulet.replay.order": result.order,
            "rivulet.replay.labels": value(result.labels, MAX_TAG),
            "rivulet.model": value(model_name, MAX_TAG),
            "rivulet.spec": value(model.spec, MAX_TAG),
            "rivulet.view": value(model.view, MAX_TAG),
            "rivulet.role": model.role,
            "rivulet.status": model.status,
        }
        if model.view in feature_hashes:
            tags["rivulet.feature_hash"] = feature_hashes[model.view]
        run = client.create_run(experiment, run_name=value(f"replay {model_name}", 250), tags=tags)
        run_id = run.info.run_id
        try:
            params = [Param(k, v) for k, v in (spec_params(spec) if spec is not None else {}).items()]
            metrics = _metrics(model)
            for i in range(0, max(len(params), 1), 100):
                client.log_batch(run_id, params=params[i : i + 100])
            for i in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[i : i + 1000])
            client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "replay")])])
            client.log_dict(run_id, {"drifts": model.drifts}, "drifts.json")
            for path in paths.values():
                client.log_artifact(run_id, str(path))
            client.set_terminated(run_id)
        except BaseException:
            with contextlib.suppress(Exception):  # MLflow down: the run stays open
                client.set_terminated(run_id, "FAILED")
            raise
        runs[model_name] = run_id
    return runs
