"""The MLflow calls of the tracker: one model version as a run and a registered model version, the alias.

Each version is found again by its tag ``rivulet.key`` (a hash of the Rivulet model name and version: no
quoting of hostile names in a filter), so logging one twice (a retry after a failure half-way, a learner
restarted) registers it once. The registered model is named after the spec (the name served); a
challenger's versions are versions of its spec's registered model, its name in the tag ``rivulet.model``.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from streaming.learning.state import ModelState
from streaming.tracking import pyfunc
from streaming.tracking.describe import metric_values, value, version_tags

__all__ = ["ALIAS", "MlflowWriter", "permanent", "version_key"]

ALIAS = "champion"
# MLflow's answers that no retry changes: the input is refused (a name, a value)
_PERMANENT = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE", "RESOURCE_LIMIT_EXCEEDED"})


def permanent(exc: BaseException) -> bool:
    """An error no retry changes: MLflow refused the input, or writing this version failed on our side (a
    state that does not pickle); MLflow unreachable, a 5xx, a timeout (an ``OSError``) are retried. One
    version that cannot be written must not hold back every later one."""
    if isinstance(exc, MlflowException):
        return exc.error_code in _PERMANENT
    return not isinstance(exc, OSError)  # requests' errors, sockets, files: the transport


def version_key(model: str, version: int) -> str:
    return hashlib.sha256(f"{model}\x00{version}".encode()).hexdigest()[:32]


class MlflowWriter:
    """Writes to one MLflow tracking server and registry."""

    def __init__(
        self, tracking_uri: str, registry_uri: str | None, experiment: str, artifact_location: str | None
    ) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
        self.experiment, self.artifact_location = experiment, artifact_location
        self._experiment_id: str | None = None
        self._registered: set[str] = set()

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=self.artifact_location
                    )
                except MlflowException as exc:  # created meanwhile by another learner
                    found = self.client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise exc from None
            if found is not None:
                self._experiment_id = str(found.experiment_id)
        assert self._experiment_id is not None
        return self._experiment_id

    def find(self, model: str, version: int) -> str | None:
        """The MLflow version number registered for Rivulet's ``model`` ``version``, if any."""
        found = self.client.search_model_versions(
            f"tags.`rivulet.key` = '{version_key(model, version)}'", max_results=5
        )
        return str(found[0].version) if found else None

    def log(self, spec: str, header: Mapping[str, Any], state: ModelState, params: Mapping[str, str]) -> str:
        """Log one version (a run: params, metrics at step ``n_learned``, lineage tags, the pyfunc model and
        the signed header's content) and register it as a version of ``spec``; its MLflow version."""
        model, version = str(header["model"]), int(header["version"])
        found = self.find(model, version)
        if found is not None:
            return found
        tags = {**version_tags(header), "rivulet.key": version_key(model, version)}
        self._register(spec)  # first: a name MLflow refuses leaves no run behind
        run = self.client.create_run(
            self.experiment_id(), run_name=value(f"{model} v{version}", 250), tags=tags
        )
        run_id = run.info.run_id
        try:
            step = int(header.get("n_learned") or 0)
            ts = int(float(header.get("saved_at") or 0) * 1000)
            metrics = [Metric(k, v, ts, step) for k, v in metric_values(header).items()]
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, max(len(items), len(metrics), 1), 100):
                self.client.log_batch(run_id, metrics=metrics[i : i + 100], params=items[i : i + 100])
            with tempfile.TemporaryDirectory(prefix="rivulet-mlflow-") as tmp:
                path = pyfunc.save(state, Path(tmp))
                self.client.log_artifacts(run_id, str(path), "model")
            self.client.log_dict(run_id, dict(header), "rivulet/header.json")
            self.client.set_terminated(run_id)
        except BaseException:
            with contextlib.suppress(Exception):  # MLflow down: the run stays open, retried in a new one
                self.client.set_terminated(run_id, "FAILED")
            raise
        mv = self.client.create_model_version(spec, source=f"runs:/{run_id}/model", run_id=run_id, tags=tags)
        return str(mv.version)

    def _register(self, spec: str) -> None:
        if spec in self._registered:
            return
        try:
            self.client.create_registered_model(spec, tags={"rivulet.spec": value(spec, 5_000)})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        self._registered.add(spec)

    def alias(self, spec: str, mlflow_version: str) -> bool:
        """Point ``champion`` of ``spec`` at ``mlflow_version``; whether it moved."""
        current = self.client.get_registered_model(spec).aliases.get(ALIAS)
        if current is not None and str(current) == mlflow_version:
            return False
        self.client.set_registered_model_alias(spec, ALIAS, mlflow_version)
        return True
