"""A Rivulet model version as an MLflow ``pyfunc`` model: the River model inside its Rivulet state, scoring a
pandas frame of feature vectors (one row each, a column per feature) exactly as the scoring API does
(:func:`streaming.learning.state.predict` with ``serving=True`` on
:func:`~streaming.learning.state.select_inputs` of the row; a missing value, ``None`` or NaN, is a feature
left out of the vector).

The frame returned has a column ``prediction`` and, for a classifier, ``proba:<class>`` per class the model
gave a probability for. A row the model cannot score (it raised) gets ``None`` and no probabilities, and
the other rows are scored. Loading one back (``mlflow.pyfunc.load_model("models:/<spec>@champion")``)
unpickles the state: it needs River and Rivulet installed, and trust in the MLflow store, as any pickled
model does; ``unwrap_python_model().state.model`` is the River model.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import river
from mlflow.pyfunc import PythonModel

from streaming.learning.state import ModelState, predict, select_inputs

__all__ = ["RiverPyfunc", "save"]


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
        rows: list[dict[str, Any]] = []
        for record in pd.DataFrame(model_input).to_dict("records"):
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
