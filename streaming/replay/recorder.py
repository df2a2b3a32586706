"""What one model saw: every record it predicted on, with the label it learned for it, in the order the
learner core took them. ``rivulet export`` runs a replay (or a version's history) through a
:class:`Recorder` in place of the plain :class:`~streaming.learning.core.LearnerCore`: the join of labels to
records is the core's own (inline labels, late labels by ``event_id`` or ``prediction_id``, labels that
came before their record, expiry), nothing is joined a second time here.

Each row is numbered by *steps*: every prediction and every learning of the model is one step, so a
row's ``predicted_step`` and ``learned_step`` say where each happened among all the others. That is all
River's ``evaluate.progressive_val_score`` needs to learn in the same order (``moment`` the predicted
step, ``delay`` the difference):

>>> from river import linear_model, metrics
>>> from streaming.learning.spec import ModelSpec
>>> spec = ModelSpec("lr", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
>>> core = Recorder([spec], "lr")
>>> _ = core.on_record("e1", 1_000, {"x": 1.0}, label=True, position=("f", 0, 0))
>>> _ = core.on_record("e2", 2_000, {"x": 0.5}, position=("f", 0, 1))
>>> _ = core.on_record("e3", 3_000, {"x": 0.2}, position=("f", 0, 2))
>>> core.on_label("e2", False, 3_500, ("l", 0, 0))
'learned'
>>> [(r.key, r.label, r.predicted_step, r.learned_step) for r in core.rows]
[('e1', True, 0, 1), ('e2', False, 2, 4), ('e3', None, 3, None)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streaming.learning.core import LearnerCore, ModelState
from streaming.learning.spec import ModelSpec

__all__ = ["Recorder", "Row"]

Position = tuple[str, int, int] | None


@dataclass(slots=True)
class Row:
    """A record the model predicted on: its key (``event_id``, or ``p:<prediction_id>`` for a served
    prediction), event time, position and inputs; and, once learned, the label, the time it was learned
    at (the later of the label's and the record's) and the label's position."""

    key: str
    ts: int
    position: Position
    x: Mapping[str, Any]
    entity: str | None
    predicted_step: int | None
    label: Any = None
    learned_ts: int | None = None
    label_position: Position = None
    learned_step: int | None = None


class Recorder(LearnerCore):
    """A learner core that also records, for the model ``target``, each prediction and each learning."""

    def __init__(self, specs: Sequence[ModelSpec], target: str, **limits: int) -> None:
        super().__init__(specs, **limits)
        self.target = target
        self.rows: list[Row] = []
        self.step = 0
        self._open: dict[str, Row] = {}  # predicted, not learned yet: by key
        self._settling: str | None = None
        # the features record being routed (``Replay.on_features``, or the history's reader): its entity
        self.context: Mapping[str, Any] | None = None

    def see(self, record: Any) -> None:
        """The record the router is about to hand over (its entity is not in what the core is given)."""
        self.context = record if isinstance(record, dict) else None

    def _predicted(self, key: str, x: Mapping[str, Any], ts: int, position: Any) -> None:
        ctx = self.context
        entity = ctx.get("entity") if ctx is not None else None
        ev = ctx.get("event") if ctx is not None else None
        if not (isinstance(ev, dict) and ev.get("event_id") == key) and not (
            ctx is not None and key == f"p:{ctx.get('prediction_id')}"
        ):
            entity = None  # not the record this prediction is on
        row = Row(key, ts, _position(position), x, entity if type(entity) is str else None, self.step)
        self.step += 1
        self.rows.append(row)
        self._open[key] = row

    def _settle(
        self,
        state: ModelState,
        key: str,
        x: dict[str, Any],
        label: Any,
        label_pred: Any,
        proba: Any,
        ts: int,
        position: Any,
        known: bool | None = None,
    ) -> None:
        if state.name != self.target:
            super()._settle(state, key, x, label, label_pred, proba, ts, position, known)
            return
        self._predicted(key, x, ts, position)
        self._settling = key
        try:
            super()._settle(state, key, x, label, label_pred, proba, ts, position, known)
        finally:
            self._settling = None

    def _learn(
        self,
        state: ModelState,
        key: str,
        x: dict[str, Any],
        y: Any,
        label_pred: Any,
        proba: Any,
        ts: int,
        position: Any,
        late: bool = False,
        known: bool | None = None,
    ) -> None:
        if state.name != self.target:
            super()._learn(state, key, x, y, label_pred, proba, ts, position, late, known)
            return
        if not late and self._settling != key:  # its label rode along: predicted and learned at once
            self._predicted(key, x, ts, position)
        before = state.counters["learned"]
        super()._learn(state, key, x, y, label_pred, proba, ts, position, late, known)
        if state.counters["learned"] == before:  # not learned: rejected, or the model was quarantined
            return
        row = self._open.pop(key, None)
        if row is None:  # predicted before the history began (a version restored with it pending)
            row = Row(key, ts, None, x, None, None)
            self.rows.append(row)
        row.label, row.learned_ts, row.label_position = y, ts, _position(position)
        row.learned_step = self.step
        self.step += 1


def _position(position: Any) -> Position:
    if isinstance(position, tuple) and len(position) == 3:
        return position
    return None
