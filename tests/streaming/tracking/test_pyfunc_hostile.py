"""The pyfunc model given hostile frames (no rows, inf, a column of strings): it answers a frame with a
``prediction`` column per input row, never an unclear error for the caller."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from river import linear_model, metrics

from streaming.learning.core import LearnerCore
from streaming.learning.spec import ModelSpec
from streaming.tracking.pyfunc import RiverPyfunc

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
