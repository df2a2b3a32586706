"""What a model version says in MLflow, before MLflow sees it: names it takes, values within its limits, the
spec's hyper-parameters, the lineage tags of a signed header."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from river import metrics, tree

from streaming.learning.evidence import PromotionPolicy
from streaming.learning.spec import ModelSpec
from streaming.tracking.describe import (
    MAX_KEY,
    MAX_TAG,
    MAX_VALUE,
    key,
    metric_values,
    spec_params,
    value,
    version_tags,
)
from tests.support.model_defs import LIFECYCLE, LR

pytestmark = pytest.mark.unit

# MLflow's own rule for parameter and metric names (mlflow.utils.validation, POSIX), and its path check
MLFLOW_NAME = re.compile(r"^[/\w.\- :]*$")


@given(st.text(max_size=400))
def test_any_name_becomes_one_mlflow_takes(name: str) -> None:
    k = key(name)
    assert k and len(k) <= MAX_KEY and MLFLOW_NAME.match(k) and ":" not in k
    assert not k.startswith("/") and ".." not in k


@given(st.text(max_size=8_000))
def test_values_are_kept_whole_or_cut_within_the_limit(text: str) -> None:
    v = value(text)
    assert len(v) <= MAX_VALUE
    assert v == text if len(text) <= MAX_VALUE else v.endswith("...") and text.startswith(v[:-3])


def test_a_spec_as_parameters_names_its_model_and_hyper_parameters() -> None:
    params = spec_params(LR)
    assert params["model"] == "Pipeline" and params["task"] == "binary" and params["view"] == "all"
    assert params["metrics"] == "LogLoss,ROCAUC" and params["checkpoint.every_records"] == "300"
    # the steps of the pipeline and their hyper-parameters, as River reports them
    assert params["model.StandardScaler.with_std"] == "True"
    assert params["model.LogisticRegression.optimizer"] == "SGD"
    assert params["model.LogisticRegression.optimizer.lr.learning_rate"] == "0.01"
    assert params["model.LogisticRegression.l2"] == repr(LR.model()["LogisticRegression"].l2)
    assert all(len(v) <= MAX_VALUE and MLFLOW_NAME.match(k) for k, v in params.items())
    lifecycle = spec_params(LIFECYCLE)
    assert lifecycle["promotion.margin"] == repr(PromotionPolicy().margin)
    assert lifecycle["drift.reaction"] == "challenger" and lifecycle["model"] == "HoeffdingTreeClassifier"
    assert lifecycle["model.grace_period"] == repr(tree.HoeffdingTreeClassifier().grace_period)


def test_a_spec_whose_model_cannot_be_built_is_described_without_it() -> None:
    def broken() -> tree.HoeffdingTreeClassifier:
        raise RuntimeError("no")

    spec = ModelSpec("x", "binary", "v", broken, metrics=(metrics.Accuracy,))
    assert spec_params(spec)["model"] == "not described: RuntimeError"


def test_metrics_are_the_finite_numbers_of_the_header() -> None:
    header = {
        "metrics": {"LogLoss": 0.5, "ROCAUC": math.nan, "bad name?": 1, "flag": True},
        "counters": {"drifts": 2, "pending": math.inf},
    }
    assert metric_values(header) == {"LogLoss": 0.5, "bad name_": 1.0, "count.drifts": 2.0}


def test_lineage_tags_of_a_header() -> None:
    header = {
        "model": "m~17",
        "version": 4,
        "spec": "m",
        "offsets": {"t.features": {"0": 10, "1": 7}},
        "feature_hash": "abc",
        "river": "0.26.1",
        "python": "3.11.7",
        "key_id": "k1",
        "n_learned": 17,
        "role": None,
    }
    tags = version_tags(header)
    assert tags["rivulet.model"] == "m~17" and tags["rivulet.version"] == "4"
    assert (
        tags["rivulet.offsets"] == '{"t.features":{"0":10,"1":7}}' and tags["rivulet.feature_hash"] == "abc"
    )
    assert tags["rivulet.river_version"] == "0.26.1" and tags["rivulet.python_version"] == "3.11.7"
    assert tags["rivulet.key_id"] == "k1" and "rivulet.role" not in tags  # None: no tag
    huge = version_tags({**header, "offsets": {f"t{i}": {"0": i} for i in range(2_000)}})
    assert len(huge["rivulet.offsets"]) == MAX_TAG
