"""Drift detection on one model's state: its loss (0/1 error, or absolute error for regression) and its
chosen input features, each watched by a detector (ADWIN by default). Pure: what to do about a drift (tell
the adapter, start a challenger) is the learner core's (:mod:`streaming.learning.core`).

>>> from river import linear_model, metrics
>>> from streaming.learning.spec import ModelSpec
>>> from streaming.learning.state import new_state
>>> state = new_state(ModelSpec("m", "regression", "v", linear_model.LinearRegression), "m")
>>> loss_drifted(state, 3.0, 1.0), state.loss_sum, state.loss_n
(False, 2.0, 1)
>>> record(state, "loss", 5, ("f", 0, 7))
DriftEvent(model='m', detector='loss', ts=5, n_learned=0, position=('f', 0, 7))
>>> state.counters["drifts"], len(state.drifts)
(1, 1)
"""

from __future__ import annotations

from typing import Any

import cython
import river
from river import base, drift

from streaming.learning.state import DriftEvent, ModelState

__all__ = ["KEPT", "drifted_features", "loss", "loss_drifted", "record"]

# River's ADWIN.update and DriftDetector.drift_detected are written out in loss_drifted as they are in the
# River version pinned (two Python calls less per model and record); with another version, they are called
_ADWIN = drift.ADWIN
_ADWIN_NAMES = ("drift_detected", "_reset", "_helper", "update", "_drift_detected")
_ADWIN_PLAIN = (
    river.__version__ == "0.26.1"
    and _ADWIN.update.__code__.co_names == _ADWIN_NAMES
    and base.DriftDetector.drift_detected.fget.__code__.co_names == ("_drift_detected",)  # type: ignore[attr-defined]
)
if not cython.compiled:  # its C type where compiled (cimported in drifts.pxd), for the typed locals
    CState = ModelState
KEPT = 100  # drift events a state keeps (the latest)


def loss(state: ModelState, y: Any, label_pred: Any) -> float:
    """The loss the detector watches: absolute error for regression (0 before the model can predict),
    else 0/1 error."""
    if state.task == "regression":
        return abs(y - label_pred) if label_pred is not None else 0.0
    return 0.0 if label_pred == y else 1.0


def loss_drifted(state: ModelState, y: Any, label_pred: Any) -> bool:
    """Feed the loss of one learned record to the loss detector: did the model drift *for the worse*?

    A change in the loss is a drift only when the model got worse (learning also changes the loss): the
    detector's mean of the recent window against the mean since the last drift.
    """
    if state is None:  # read as a C struct below where compiled (state.pxd): None would crash the process
        raise TypeError("a ModelState, not None")
    if state.task == "regression":  # loss(), inline
        value = abs(y - label_pred) if label_pred is not None else 0.0
    else:
        value = 0.0 if label_pred == y else 1.0
    state.loss_sum += value
    state.loss_n += 1
    detector = state.loss_detector
    if type(detector) is _ADWIN and _ADWIN_PLAIN:  # ADWIN.update and drift_detected, written out
        if detector._drift_detected:
            detector._reset()
        drifted = detector._drift_detected = detector._helper.update(value)
    else:
        detector.update(value)
        drifted = detector.drift_detected
    if not drifted:
        return False
    worse: bool = detector.estimation > state.loss_sum / state.loss_n
    state.loss_sum, state.loss_n = 0.0, 0
    return worse


@cython.locals(state=CState)
def drifted_features(state: ModelState, x: dict[str, Any]) -> list[str]:
    """Feed the watched features' numbers of a predicted record to their detectors: the detectors
    (``feature:<name>``) that saw a drift."""
    if state is None:  # read as a C struct below where compiled (state.pxd): None would crash the process
        raise TypeError("a ModelState, not None")
    out = []
    for name, detector in state.feature_detectors.items():
        value = x.get(name)
        if isinstance(value, int | float):
            detector.update(value)
            if detector.drift_detected:
                out.append(f"feature:{name}")
    return out


def record(state: ModelState, detector: str, ts: int, position: Any) -> DriftEvent:
    """Record a drift on ``state`` (the latest :data:`KEPT` are kept) and count it."""
    event = DriftEvent(state.name, detector, ts, state.n_learned, position)
    state.drifts.append(event)
    del state.drifts[:-KEPT]
    state.counters["drifts"] += 1
    return event
