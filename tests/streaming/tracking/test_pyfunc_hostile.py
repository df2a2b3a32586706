"""The pyfunc model given hostile frames (no rows, inf, a column of strings) and inputs that are no frame (a
dict, a list of dicts, a numpy array, None): it answers a frame with a ``prediction`` column per input row,
or refuses what names no feature with one clear error, never an unclear crash for the caller."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from river import linear_model, metrics

from streaming.learning.core import LearnerCore
from streaming.learning.spec import ModelSpec
from streaming.tracking.pyfunc import RiverPyfunc, save

pytestmark = pytest.mark.unit


def loaded() -> RiverPyfunc:
    s = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
    core = LearnerCore([s])
    for k in range(40):
        core.on_record(f"e{k}", 1_000 * k, {"x": math.sin(k), "y": float(k % 3)}, label=k % 2 == 0)
    model = RiverPyfunc()
    model.state = core.models["lr"]
    return model


def test_a_frame_without_rows_gives_a_frame_with_the_prediction_column() -> None:
    out = loaded().predict(None, pd.DataFrame({"x": [], "y": []}))
    assert "prediction" in out.columns and len(out) == 0


def test_hostile_rows_each_get_a_row_with_the_input_index() -> None:
    frame = pd.DataFrame(
        {"x": [math.inf, 1.0, "s", None], "y": [1.0, -math.inf, 2.0, None], "zz": [1, 2, 3, 4]},
        index=[10, 11, 12, 13],
    )
    out = loaded().predict(None, frame)
    assert list(out.index) == [10, 11, 12, 13] and "prediction" in out.columns


ROWS = [{"x": 0.3, "y": 2.0}, {"x": -1.0, "y": 0.0}]


@pytest.mark.parametrize(
    ("given", "rows"),
    [
        (ROWS[0], ROWS[:1]),
        (pd.Series(ROWS[0]), ROWS[:1]),
        ({"x": [0.3, -1.0], "y": [2.0, 0.0]}, ROWS),
        (ROWS, ROWS),
        (tuple(ROWS), ROWS),
        (np.array([(0.3, 2.0), (-1.0, 0.0)], dtype=[("x", "f8"), ("y", "f8")]), ROWS),
        ([], []),
    ],
    ids=["dict", "series", "dict of columns", "list of dicts", "tuple of dicts", "record array", "empty"],
)
def test_inputs_that_name_their_features_are_scored_as_the_frame(given: object, rows: list) -> None:
    model = loaded()
    out = model.predict(None, given)  # type: ignore[arg-type]
    expected = model.predict(None, pd.DataFrame(rows, columns=["x", "y"]))
    assert out.reset_index(drop=True).to_dict("records") == expected.to_dict("records")
    assert len(out) == len(rows) and "prediction" in out.columns


@pytest.mark.parametrize(
    "given",
    [None, np.array([[0.3, 2.0]]), [[0.3, 2.0]], "x=1", 3, {"x": [1.0, 2.0], "y": [1.0]}, [ROWS[0], 5]],
    ids=["None", "array", "list of lists", "str", "int", "ragged columns", "a dict and a number"],
)
def test_inputs_that_name_no_feature_are_refused_clearly(given: object, tmp_path: Path) -> None:
    """Refused with MLflow's INVALID_PARAMETER_VALUE (a 400 when served), saying what it takes: they were
    an AttributeError or pandas' TypeError, directly and through the model loaded back from MLflow."""
    model = loaded()
    assert model.state is not None
    back = mlflow.pyfunc.load_model(str(save(model.state, tmp_path)))
    for predict in (lambda v: model.predict(None, v), back.predict):
        with pytest.raises(MlflowException, match="the model scores feature vectors") as caught:
            predict(given)
        assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
