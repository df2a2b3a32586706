"""Model specs used by the tests (on view ``all`` of ``tests.support.feature_defs``)."""

from __future__ import annotations

import math

from river import base, compose, linear_model, metrics, preprocessing, tree

from streaming.learning.evidence import PromotionPolicy
from streaming.learning.spec import CheckpointPolicy, DriftPolicy, ModelSpec


def scaled_lr() -> compose.Pipeline:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


LR = ModelSpec(
    name="lr",
    task="binary",
    view="all",
    model=scaled_lr,
    # ROCAUC keeps confusion matrices (defaultdicts that reading changes): verify must still match bytes
    metrics=(metrics.LogLoss, metrics.ROCAUC),
    checkpoint=CheckpointPolicy(every_records=300, every_seconds=0.5, keep=50),
)
MODELS = [LR]


def hoeffding_tree() -> tree.HoeffdingTreeClassifier:
    return tree.HoeffdingTreeClassifier()


# the champion/challenger lifecycle (issue 14): a tree whose loss drift starts a fresh challenger
LIFECYCLE = ModelSpec(
    name="m",
    task="binary",
    view="all",
    model=hoeffding_tree,
    metrics=(metrics.Accuracy,),
    drift=DriftPolicy(reaction="challenger", max_challengers=2),
    promotion=PromotionPolicy(),
    checkpoint=CheckpointPolicy(every_records=500, every_seconds=1e9, keep=50),
)


# a spec whose challengers only an operator starts (rivulet models challenge), checkpointed every second:
# the probation drill (tests/serving/test_probation_drill.py)
BY_HAND = ModelSpec(
    name="pm",
    task="binary",
    view="all",
    model=hoeffding_tree,
    metrics=(metrics.Accuracy,),
    drift=DriftPolicy(max_challengers=2),
    promotion=PromotionPolicy(min_labelled=200, probation=2_000),
    checkpoint=CheckpointPolicy(every_records=500, every_seconds=0.5, keep=50),
)


def trio_spec(name: str) -> ModelSpec:
    """One of three specs that learners share out (``t1``..``t3``: shard ``i/3`` prefers ``t{i+1}``, shard
    ``0/2`` prefers ``t1`` and ``t3``)."""
    return ModelSpec(
        name=name,
        task="binary",
        view="all",
        model=scaled_lr,
        metrics=(metrics.LogLoss, metrics.ROCAUC),
        checkpoint=CheckpointPolicy(every_records=300, every_seconds=0.5, keep=50),
    )


# several learner processes sharing specs (tests/streaming/runtime/test_learner_takeover.py)
TRIO = [trio_spec("t1"), trio_spec("t2"), trio_spec("t3")]
TRIO_T1 = TRIO[:1]


class Unbounded(base.Regressor):
    """A regressor whose prediction is ``value`` whatever the input (an infinity, a NaN: a diverged model)."""

    def __init__(self, value: float = math.inf) -> None:
        self.value = value

    def learn_one(self, x: dict, y: float) -> None:
        pass

    def predict_one(self, x: dict) -> float:
        return self.value
