"""Continuous learning: model specs, the pure learner core (``core``: the record flow; ``state``: one
model's state and prediction; ``drifts``: drift detection), the router and the merge that feed it, signed
snapshots and the model registry. The learner process (``rivulet learn run``) is
:mod:`streaming.runtime.learner`."""

from streaming.learning.core import LearnerCore, ModelState, Prediction
from streaming.learning.deadletters import DeadLetter, DeadLetterSink, MemorySink
from streaming.learning.errors import InvalidLabel, LearningError, OutOfDomain, Reason
from streaming.learning.header import CheckpointHeader, HeaderError
from streaming.learning.labels import LabelCheck, check_label
from streaming.learning.registry import MemoryRegistry, NoValidVersion, RedisRegistry, Registry
from streaming.learning.snapshot import SnapshotRejected, open_snapshot, seal
from streaming.learning.spec import CheckpointPolicy, DriftPolicy, ModelSpec, SpecError, load_specs

__all__ = [
    "CheckpointHeader",
    "CheckpointPolicy",
    "DeadLetter",
    "DeadLetterSink",
    "DriftPolicy",
    "HeaderError",
    "InvalidLabel",
    "LabelCheck",
    "LearnerCore",
    "LearningError",
    "MemoryRegistry",
    "MemorySink",
    "ModelSpec",
    "ModelState",
    "NoValidVersion",
    "OutOfDomain",
    "Prediction",
    "Reason",
    "RedisRegistry",
    "Registry",
    "SnapshotRejected",
    "SpecError",
    "check_label",
    "load_specs",
    "open_snapshot",
    "seal",
]
