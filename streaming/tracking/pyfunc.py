"""A Rivulet model version as an MLflow ``pyfunc`` model: the River model inside its Rivulet state, scoring a
pandas frame of feature vectors (one row each, a column per feature) exactly as the scoring API does
(:func:`streaming.learning.state.predict` with ``serving=True`` on
:func:`~streaming.learning.state.select_inputs` of the row; a missing value, ``None`` or NaN, is a feature
left out of the vector).

Besides a frame it takes a dict of features (one row), a dict of columns, a list of dicts and a numpy
record array (:func:`frame_of`); what names no feature (``None``, a plain array) is refused clearly.
The frame returned has a column ``prediction`` and, for a classifier, ``proba:<class>`` per class the model
gave a probability for. A row the model cannot score (it raised) gets ``None`` and no probabilities, and
the other rows are scored. Loading one back (``mlflow.pyfunc.load_model("models:/<spec>@champion")``)
unpickles the state: it needs River and Rivulet installed, and trust in the MLflow store, as any pickled
model does; ``unwrap_python_model().state.model`` is the River model.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import river
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from streaming.learning.state import ModelState, predict, select_inputs

__all__ = ["RiverPyfunc", "frame_of", "save"]


class RiverPyfunc(PythonModel):
    """See the module docstring. The state is read from the artifact ``state`` when MLflow loads it."""

    def __init__(self) -> None:
        self.state: ModelState | None = None

    def load_context(self, context: Any) -> None:
        with open(context.artifacts["state"], "rb") as f:
            self.state = pickle.load(f)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        state = self.state
        if state is None:
            raise RuntimeError("the model's state is not loaded")
        model_input = frame_of(model_input)
        rows: list[dict[str, Any]] = []
        for record in model_input.to_dict("records"):
            vector = {str(k): v for k, v in record.items() if not _missing(v)}
            row: dict[str, Any] = {"prediction": None}
            try:
                label, proba = predict(state, select_inputs(vector, state.features), serving=True)
            except Exception:  # this row's problem: the others are scored
                rows.append(row)
                continue
            row["prediction"] = label
            for cls, p in (proba or {}).items():
                row[f"proba:{cls}"] = float(p)
            rows.append(row)
        frame = pd.DataFrame(rows, index=model_input.index if len(rows) == len(model_input) else None)
        if "prediction" not in frame.columns:  # no rows: the caller still finds the column
            frame["prediction"] = pd.Series(dtype=object)
        return frame


def frame_of(model_input: Any) -> pd.DataFrame:
    """The rows to score: a pandas DataFrame as it is; a dict of feature values (or a pandas Series) as one
    row; a dict of columns (lists of equal length) or a list of dicts as rows; a numpy record array by its
    field names. Anything else (``None``, a plain numpy array or list of lists, which name no feature) is
    refused with one clear error, MLflow's ``INVALID_PARAMETER_VALUE`` (a 400 from ``mlflow models serve``).

    >>> frame_of({"a": 1.0, "b": "x"}).to_dict("records")
    [{'a': 1.0, 'b': 'x'}]
    >>> frame_of([{"a": 1.0}, {"b": 2}]).shape
    (2, 2)
    >>> try:
    ...     frame_of(None)
    ... except MlflowException as exc:
    ...     print(exc.error_code, exc.message.split(";")[-1])
    INVALID_PARAMETER_VALUE  got None
    """
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, pd.Series):
        return pd.DataFrame([model_input.to_dict()])
    if isinstance(model_input, np.ndarray) and model_input.dtype.names:
        return pd.DataFrame(model_input)
    if isinstance(model_input, Mapping):
        if not any(isinstance(v, list | tuple | np.ndarray | pd.Series) for v in model_input.values()):
            return pd.DataFrame([dict(model_input)])
        try:
            return pd.DataFrame(dict(model_input))
        except ValueError as exc:  # columns of different lengths
            raise _refused(f"a dict of columns whose lengths differ ({exc})") from None
    if isinstance(model_input, list | tuple) and all(isinstance(r, Mapping) for r in model_input):
        return pd.DataFrame([dict(r) for r in model_input])
    if isinstance(model_input, np.ndarray | list | tuple):
        got = f"{type(model_input).__name__} whose rows name no feature"
    else:
        got = "None" if model_input is None else type(model_input).__name__
    raise _refused(got)


def _refused(got: str) -> MlflowException:
    return MlflowException(
        "the model scores feature vectors: a pandas DataFrame (a column per feature), a dict of features, or "
        f"a list of them; got {got}",
        error_code=INVALID_PARAMETER_VALUE,
    )


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def save(state: ModelState, directory: Path) -> Path:
    """Write ``state`` as an MLflow pyfunc model in ``directory/model`` (which must not exist)."""
    directory.mkdir(parents=True, exist_ok=True)
    blob = directory / "state.pkl"
    blob.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    path = directory / "model"
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=RiverPyfunc(),
        artifacts={"state": str(blob)},
        pip_requirements=[f"river=={river.__version__}", f"pandas=={pd.__version__}"],
    )
    return path
