"""Continuous learning: model specs, the pure learner core (``core``: the record flow; ``state``: one
model's state and prediction; ``drifts``: drift detection), the router and the merge that feed it, signed
snapshots and the model registry. The learner process (``rivulet learn run``) is
:mod:`streaming.runtime.learner`.

The hot path (``core``, ``state``, ``drifts``, ``evidence``) is compiled from these same ``.py`` files at
install (``setup.py``); a compiled module built from another version of its ``.py`` than the one beside it is
refused at import (:func:`_check_compiled`), so an edit is never silently shadowed by an older build."""

import hashlib
import importlib
from pathlib import Path
from types import ModuleType

from streaming.learning.core import LearnerCore, ModelState, Prediction
from streaming.learning.deadletters import DeadLetter, DeadLetterSink, MemorySink
from streaming.learning.errors import InvalidLabel, LearningError, OutOfDomain, Reason
from streaming.learning.fencing import Fenced, LeaseLost
from streaming.learning.header import CheckpointHeader, HeaderError
from streaming.learning.labels import LabelCheck, check_label
from streaming.learning.leases import Leases, MemoryLeases, RedisLeases
from streaming.learning.registry import MemoryRegistry, NoValidVersion, RedisRegistry, Registry
from streaming.learning.snapshot import SnapshotRejected, open_snapshot, seal
from streaming.learning.spec import CheckpointPolicy, DriftPolicy, ModelSpec, SpecError, load_specs

COMPILED = ("core", "state", "drifts", "evidence")  # built by setup.py where a C compiler is found


def stale(module: ModuleType, source: Path) -> bool:
    """Was ``module`` compiled from other sources than ``source`` and the ``.pxd`` beside it (its C
    types), as they are now? (A compiled module carries their SHA-256 as ``_COMPILED_FROM``; the module run
    from the ``.py`` has none.)"""
    built = getattr(module, "_COMPILED_FROM", None)
    if built is None or not source.is_file():  # the .py itself, or an install without sources
        return False
    pxd = source.with_suffix(".pxd")
    declared = pxd.read_bytes() if pxd.is_file() else b""
    return hashlib.sha256(source.read_bytes() + declared).hexdigest() != built


def _check_compiled() -> None:
    """ImportError if a module of :data:`COMPILED` is :func:`stale`."""
    for name in COMPILED:
        module = importlib.import_module(f"{__name__}.{name}")
        source = Path(__file__).with_name(f"{name}.py")
        if stale(module, source):
            raise ImportError(
                f"{module.__file__} was compiled from another version of {source}: rebuild it "
                "(scripts/bootstrap, or .venv/bin/python setup.py build_ext --inplace)"
            )


__all__ = [
    "CheckpointHeader",
    "CheckpointPolicy",
    "DeadLetter",
    "DeadLetterSink",
    "DriftPolicy",
    "Fenced",
    "HeaderError",
    "InvalidLabel",
    "LabelCheck",
    "LearnerCore",
    "LearningError",
    "LeaseLost",
    "Leases",
    "MemoryLeases",
    "MemoryRegistry",
    "MemorySink",
    "ModelSpec",
    "ModelState",
    "NoValidVersion",
    "OutOfDomain",
    "Prediction",
    "Reason",
    "RedisLeases",
    "RedisRegistry",
    "Registry",
    "SnapshotRejected",
    "SpecError",
    "check_label",
    "load_specs",
    "open_snapshot",
    "seal",
]

_check_compiled()
