"""Model specs for the bundled demo streams: two models on the ``customer`` view of ``features.examples``
(Agrawal loan applications, label: approved or not); the logistic regression's drifts start challengers
that paired evidence can promote (issue 14)."""

from __future__ import annotations

from river import compose, linear_model, metrics, preprocessing, tree

from streaming.learning.evidence import PromotionPolicy
from streaming.learning.spec import CheckpointPolicy, DriftPolicy, ModelSpec

__all__ = ["MODELS"]


def scaled_logistic_regression() -> compose.Pipeline:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


MODELS = [
    ModelSpec(
        name="approval-lr",
        task="binary",
        view="customer",
        model=scaled_logistic_regression,
        metrics=(metrics.Accuracy, metrics.LogLoss, metrics.ROCAUC),
        # a drift of its loss or of salary starts a challenger (a Hoeffding tree, fresh) that predicts on the
        # same records; paired evidence promotes it, and /v1/models/approval-lr/predict follows
        drift=DriftPolicy(features=("salary",), reaction="challenger", max_challengers=2),
        promotion=PromotionPolicy(challenger=tree.HoeffdingTreeClassifier),
        checkpoint=CheckpointPolicy(every_records=2_000, every_seconds=2.0),
    ),
    ModelSpec(
        name="approval-tree",
        task="binary",
        view="customer",
        model=tree.HoeffdingTreeClassifier,
        metrics=(metrics.Accuracy, metrics.LogLoss, metrics.ROCAUC),
        checkpoint=CheckpointPolicy(every_records=2_000, every_seconds=2.0),
    ),
]
