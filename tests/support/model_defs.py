"""Model specs used by the tests (on view ``all`` of ``tests.support.feature_defs``)."""

from __future__ import annotations

from river import compose, linear_model, metrics, preprocessing

from streaming.learning.spec import CheckpointPolicy, ModelSpec


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
