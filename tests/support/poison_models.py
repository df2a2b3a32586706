"""Models for the poison-record tests of the learner (view ``all``): a scaled logistic regression and a
Hoeffding tree (whose classes would show a label like ``banana`` if one were ever learned)."""

from __future__ import annotations

from river import metrics, tree

from streaming.learning.spec import CheckpointPolicy, ModelSpec
from tests.support.model_defs import scaled_lr

POLICY = CheckpointPolicy(every_records=400, every_seconds=0.3, keep=100)
MODELS = [
    ModelSpec(
        "lr", "binary", "all", scaled_lr, metrics=(metrics.LogLoss, metrics.Accuracy), checkpoint=POLICY
    ),
    ModelSpec(
        "tree",
        "binary",
        "all",
        tree.HoeffdingTreeClassifier,
        metrics=(metrics.LogLoss, metrics.Accuracy),
        checkpoint=POLICY,
    ),
]
