"""Model specs for the bundled demo streams: a champion and a challenger on the ``customer`` view of
``features.examples`` (Agrawal loan applications, label: approved or not)."""

from __future__ import annotations

from river import compose, linear_model, metrics, preprocessing, tree

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
        drift=DriftPolicy(features=("salary",)),
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
