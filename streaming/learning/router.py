"""Records to the learner core: what the live learner, ``rivulet replay`` and ``rivulet models verify``
do with each record of the features, labels and predictions topics, in one place.

A features record is predicted on (and learned from, if its label rides along) by the models of its view;
a served prediction is remembered so a label for its ``prediction_id`` trains on the features as served;
a label is joined to its pending prediction. With ``track=True`` (the live learner and ``verify``) the
router also keeps, per model, the position after the last record it processed on every partition and the
order it processed them in (:class:`~streaming.learning.merge.OrderJournal`): a checkpoint stores both,
which is what makes every version rebuildable.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from features.errors import FeaturesError
from features.events import Label
from streaming.learning.core import LearnerCore
from streaming.learning.merge import OrderJournal, Positioned
from streaming.learning.spec import SpecError
from streaming.logs import get_logger

__all__ = ["Offsets", "Router", "TopicRoles"]

log = get_logger("rivulet.learn")
Offsets = dict[str, dict[int, int]]  # topic -> partition -> next offset to process


@dataclass(frozen=True, slots=True)
class TopicRoles:
    features: str
    labels: str
    predictions: str


class Router:
    def __init__(self, core: LearnerCore, roles: TopicRoles, *, track: bool = True) -> None:
        self.core = core
        self.roles = roles
        self.track = track
        self.offsets: dict[str, Offsets] = {}  # model -> its positions
        self.journals: dict[str, OrderJournal] = {}  # model -> order since its last checkpoint
        # model -> where its journal starts: the version it was restored from (None: a fresh model) and the
        # positions at that point
        self.bases: dict[str, dict[str, Any]] = {}
        self._checked: set[str] = set()
        self._views: dict[str, Any] = {}  # model -> the view it reads
        self._by_view: dict[Any, list[str]] = {}  # view -> the models reading it
        self.malformed = 0  # features records without a vector, an event id or an event time

    def start(self, model: str, offsets: Offsets, version: int | None) -> None:
        """Begin tracking ``model`` from ``offsets`` (its restored checkpoint's, or ``{}`` for a new one)."""
        self.offsets[model] = copy.deepcopy(offsets)
        self.bases[model] = {"version": version, "offsets": copy.deepcopy(offsets)}
        self.journals[model] = OrderJournal()

    def rebase(self, model: str, version: int) -> None:
        """``model`` was checkpointed as ``version``: its next journal starts here."""
        self.bases[model] = {"version": version, "offsets": copy.deepcopy(self.offsets.get(model, {}))}
        self.journals[model] = OrderJournal()

    def fresh(self, model: str, rec: Positioned) -> bool:
        """The model has not processed this record yet (it may be behind the others after a restore)."""
        return rec.offset >= self.offsets.get(model, {}).get(rec.topic, {}).get(rec.partition, 0)

    def process(self, rec: Positioned) -> None:
        core, roles = self.core, self.roles
        position = (rec.topic, rec.partition, rec.offset)
        data = rec.value
        track = self.track
        if track:
            before = set(core.models)
            for m in before:
                if m not in self.offsets:
                    self.start(m, {}, None)
            fresh = [m for m in core.models if self.fresh(m, rec)]
        else:
            fresh = list(core.models)
        if not isinstance(data, dict):
            log.warning(
                "undecodable record skipped", topic=rec.topic, partition=rec.partition, offset=rec.offset
            )
        elif rec.topic == roles.features:
            self.features(data, position, fresh)
        elif rec.topic == roles.predictions:
            self.prediction(data, position, fresh)
        elif rec.topic == roles.labels:
            self.label(data, position, fresh)
        if not track:
            return
        tp = (rec.topic, rec.partition)
        for m in fresh:
            if not self.journals[m].has(tp):
                # this version's first record from the partition: its base position is this offset (past
                # any records the log no longer held, or the base had no position for the partition)
                self.bases[m]["offsets"].setdefault(rec.topic, {})[rec.partition] = rec.offset
            self.offsets[m].setdefault(rec.topic, {})[rec.partition] = rec.offset + 1
            self.journals[m].add(tp)
        for m in core.models:
            if m not in before:
                # a challenger started by a drift while this record was processed: it is born after it,
                # with the positions of the model it challenges
                parent = core.models[m].spec
                self.start(m, self.offsets.get(parent, {}), None)

    def _of_view(self, view: Any, models: Any) -> list[str]:
        core = self.core
        views = self._views
        if len(views) != len(core.models):  # a model was added (a challenger) or replaced
            views.clear()
            views.update({m: core.specs[st.spec].view for m, st in core.models.items()})
            self._by_view.clear()
        if models is None:  # every model: one list per view, kept until the models change
            chosen = self._by_view.get(view)
            if chosen is None:
                chosen = self._by_view[view] = [m for m in core.models if views.get(m) == view]
            return chosen
        return [m for m in models if views.get(m) == view]

    def features(self, data: dict[str, Any], position: Any, models: list[str] | None = None) -> None:
        """A features record: the models of its view (of ``models``, default all) predict, and learn if its
        label rides along."""
        chosen = self._of_view(data.get("view"), models)
        if not chosen:
            return
        vector, event = data.get("features"), data.get("event")
        if not (
            isinstance(vector, dict)
            and isinstance(event, dict)
            and isinstance(event.get("event_id"), str)
            and type(event.get("ts")) is int
        ):
            self.malformed += 1
            log.warning("malformed features record skipped", position=position)
            return
        if not self._checked.issuperset(chosen):
            for m in chosen:
                if m not in self._checked:
                    self._check_features(m, vector)
        self.core.on_record(event["event_id"], event["ts"], vector, event.get("label"), position, only=chosen)

    def prediction(self, data: dict[str, Any], position: Any, models: list[str] | None = None) -> None:
        """A score served by the API: the models of its view predict on the features *as served*, and
        learn from them when a label arrives for its prediction_id."""
        chosen = self._of_view(data.get("view"), models)
        if chosen and isinstance(data.get("features"), dict) and data.get("prediction_id"):
            self.core.on_record(
                f"p:{data['prediction_id']}",
                int(data.get("ts") or 0),
                data["features"],
                None,
                position,
                only=chosen,
            )

    def label(self, data: dict[str, Any], position: Any, models: list[str] | None = None) -> None:
        """A label: joined to its pending prediction (by event id or prediction id)."""
        try:
            label = Label.parse(data)
        except FeaturesError:
            log.warning("invalid label skipped", position=position)
        else:
            self.core.on_label(label.join_key, label.label, label.ts, position, only=models)

    def _check_features(self, model: str, vector: dict[str, Any]) -> None:
        spec = self.core.specs[self.core.models[model].spec]
        missing = sorted(set(spec.features or ()) - set(vector))
        if missing:
            raise SpecError(
                spec.name, f"unknown features {missing}: view {spec.view!r} gives {sorted(vector)}"
            )
        self._checked.add(model)
