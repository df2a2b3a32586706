"""Continuous learning: model specs, the pure learner core, signed snapshots, the model registry and the
learner worker (``rivulet learn run``)."""

from streaming.learning.core import LearnerCore, ModelState, Prediction
from streaming.learning.registry import ModelRegistry, NoValidVersion
from streaming.learning.snapshot import SnapshotRejected, open_snapshot, seal
from streaming.learning.spec import CheckpointPolicy, DriftPolicy, ModelSpec, SpecError, load_specs

__all__ = [
    "CheckpointPolicy",
    "DriftPolicy",
    "LearnerCore",
    "ModelRegistry",
    "ModelSpec",
    "ModelState",
    "NoValidVersion",
    "Prediction",
    "SnapshotRejected",
    "SpecError",
    "load_specs",
    "open_snapshot",
    "seal",
]
