"""Records to the learner core: what the live learner, ``rivulet replay``, ``rivulet models verify`` and the
demo do with each record of the features, labels and predictions topics, in one place.

A features record is predicted on (and learned from, if its label rides along) by the models of its view;
a served prediction is remembered so a label for its ``prediction_id`` trains on the features as served;
a label is joined to its pending prediction. With ``track=True`` (the live learner and ``verify``) the
router also keeps, per model, the position after the last record it processed on every partition and the
order it processed them in (:class:`~streaming.learning.merge.OrderJournal`): a checkpoint stores both,
which is what makes every version rebuildable.

Every record is validated before the core sees it; a bad one is *rejected* (never fatal): counted per
model and reason in ``ModelState.rejected`` and sent to the dead-letter sink with its reason, the stage
(``learner``), its position and its original bytes (:mod:`streaming.learning.deadletters`). The reasons
(:class:`~streaming.learning.errors.Reason`):

- ``undecodable``: not a JSON object;
- ``malformed_features``: a features record without a view, a vector (a mapping), an event id (a string of
  at most 200 characters),
  an event time (an int within the event schema's years 1-9999), or without a feature its model declares;
- ``malformed_prediction``: a served prediction without a view, a ``prediction_id`` (a string), a
  features mapping or a time (as for features records);
- ``malformed_label``: not a label (:meth:`features.events.Label.parse` refuses it);
- ``label_type`` / ``label_class`` / ``label_domain``: a label the model's task cannot take
  (:func:`~streaming.learning.labels.check_label`), rejected for that model only;
- ``value_domain``: a vector value outside the numeric domain (:mod:`streaming.learning.domain`) or not a
  scalar;
- ``model_error`` / ``learn_error``: the model raised on the record (see :mod:`streaming.learning.core`);
- ``control``: a control record (:mod:`streaming.learning.controls`) the learner does not apply: not
  signed by a key of its keyring, or refused (an unknown spec, a challenger that is not running, an id
  applied already); a control it applies starts, promotes or retires a challenger at this record;
- ``error``: anything else raised while routing the record (a defect on an input nobody foresaw): the
  models it was routed to are quarantined, since their state may be partly updated.

A rejected record still advances the positions (it was consumed), and the models process the good records
around it exactly as if it had never been sent.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from features.errors import FeaturesError
from features.events import Label
from streaming.learning.controls import CONTROL_FIELD, ControlRefused, is_control, open_control
from streaming.learning.core import LearnerCore
from streaming.learning.deadletters import DeadLetterSink, learner_letter
from streaming.learning.domain import check_vector
from streaming.learning.errors import InvalidLabel, OutOfDomain, Reason
from streaming.learning.keys import Keyring
from streaming.learning.labels import check_label
from streaming.learning.merge import MAX_ID_CHARS, OrderJournal, Positioned, Undecodable
from streaming.learning.merge import is_id as _id
from streaming.learning.merge import is_time as _time
from streaming.logs import get_logger

__all__ = ["Offsets", "Router", "TopicRoles"]

log = get_logger("rivulet.learn")
Offsets = dict[str, dict[int, int]]  # topic -> partition -> next offset to process
Position = tuple[str, int, int] | None
Json = dict[str, Any]  # a record's value, decoded
Models = list[str] | None  # the models a record is for (None: every model)
Bytes = bytes | None  # a record's original bytes or Kafka key, when the source had them


@dataclass(frozen=True, slots=True)
class TopicRoles:
    features: str
    labels: str
    predictions: str


class Router:
    def __init__(
        self,
        core: LearnerCore,
        roles: TopicRoles,
        *,
        track: bool = True,
        sink: DeadLetterSink | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.core = core
        self.keyring = keyring  # the keys whose control records are applied (None: every one is refused)
        self.roles = roles
        self.track = track
        self.sink = sink  # None: rejections are counted, not sent anywhere
        self.offsets: dict[str, Offsets] = {}  # model -> its positions
        self.journals: dict[str, OrderJournal] = {}  # model -> order since its last checkpoint
        # model -> where its journal starts: the version it was restored from (None: a fresh model) and the
        # positions at that point
        self.bases: dict[str, dict[str, Any]] = {}
        self._views: dict[str, Any] = {}  # model -> the view it reads
        self._by_view: dict[Any, list[str]] = {}  # view -> the models reading it
        # the rejections of the record being processed: reason -> (first detail, models)
        self._rejects: dict[Reason, tuple[str, list[str]]] = {}
        core.on_reject = self._rejected
        self._checks: dict[str, Callable[[Any], Any]] = {}  # spec -> its label check
        self._logged: dict[Reason, int] = {}  # rejections per reason, for bounded logging

    def start(self, model: str, offsets: Offsets, version: int | None) -> None:
        """Begin tracking ``model`` from ``offsets`` (its restored checkpoint's, or ``{}`` for a new one)."""
        self.offsets[model] = copy.deepcopy(offsets)
        self.bases[model] = {"version": version, "offsets": copy.deepcopy(offsets)}
        self.journals[model] = OrderJournal()

    def forget(self, model: str) -> None:
        """``model`` left the core (a retired challenger past retention): nothing of it is tracked."""
        for kept in (self.offsets, self.journals, self.bases, self._views):
            kept.pop(model, None)
        self._by_view.clear()

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
        try:
            if not isinstance(data, dict):
                self.undecodable(data, position, fresh, raw=rec.raw, key=rec.key)
            elif rec.topic == roles.features:
                if is_control(data):
                    self.control(data, position, fresh, raw=rec.raw, key=rec.key)
                else:
                    self.features(data, position, fresh, raw=rec.raw, key=rec.key)
            elif rec.topic == roles.predictions:
                self.prediction(data, position, fresh, raw=rec.raw, key=rec.key)
            elif rec.topic == roles.labels:
                self.label(data, position, fresh, raw=rec.raw, key=rec.key)
        except Exception as exc:  # one record never stops the learner (see _failed)
            self._failed(rec, position, fresh, exc)
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

    def _failed(self, rec: Positioned, position: Position, fresh: list[str], exc: Exception) -> None:
        """Anything raised while routing ``rec`` that is not a rejection (a defect on an input nobody
        foresaw): stopping would meet the same record again after every restart. The record is an ``error``
        dead letter, and the models it was routed to are quarantined (their state may be partly updated);
        the others, and the positions, go on."""
        data = rec.value
        models = fresh
        if isinstance(data, dict) and rec.topic in (self.roles.features, self.roles.predictions):
            try:
                models = self._of_view(data.get("view"), fresh)
            except Exception:  # an unhashable view: every model that saw the record
                models = fresh
        detail = f"{type(exc).__name__}: {exc}"[:1_000]
        if Reason.ERROR not in self._logged:  # the traceback once; then the bounded rejection warnings
            log.error("record failed", position=position, models=models, error=detail, exc_info=exc)
        self._reject(models, Reason.ERROR, detail)
        self._send(position, rec.raw, rec.key, data)
        for m in models:
            state = self.core.models.get(m)
            if state is not None and not state.quarantined:
                self.core.quarantine(state, f"error on {position}: {detail}")

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
                chosen = [m for m in core.models if views.get(m) == view]
                if chosen:  # a view no model reads is not kept: a producer can send any number of them
                    self._by_view[view] = chosen
            return chosen
        return [m for m in models if views.get(m) == view]

    # ------------------------------------------------------------------ the kinds of records

    def undecodable(
        self, data: Any, position: Position, models: Models = None, *, raw: Bytes = None, key: Bytes = None
    ) -> None:
        """A record that is not a JSON object (:class:`~streaming.learning.merge.Undecodable`, or another
        JSON value): rejected for every model (of ``models``)."""
        detail = data.error if isinstance(data, Undecodable) else f"not a JSON object: {type(data).__name__}"
        self._reject_all(models, Reason.UNDECODABLE, detail)
        self._send(position, raw, key, data)

    def features(
        self, data: Json, position: Position, models: Models = None, *, raw: Bytes = None, key: Bytes = None
    ) -> None:
        """A features record: the models of its view (of ``models``, default all) predict, and learn if its
        label rides along."""
        chosen = self._viewed(data, models, Reason.MALFORMED_FEATURES)
        vector, event = data.get("features"), data.get("event")
        if not chosen:
            pass
        elif not (
            isinstance(vector, dict)
            and isinstance(event, dict)
            and _id(event.get("event_id"))
            and _time(event.get("ts"))
        ):
            self._reject(chosen, Reason.MALFORMED_FEATURES, "no vector, event id or event time")
        elif self._domain(chosen, vector) and (chosen := self._declared(chosen, vector)):
            event_id, ts, label = event["event_id"], event["ts"], event.get("label")
            on_record = self.core.on_record
            if label is None:
                on_record(event_id, ts, vector, None, position, only=chosen, predictions=False)
            else:
                for y, group in self._labels(chosen, label):
                    on_record(event_id, ts, vector, y, position, only=group, predictions=False)
        self._send(position, raw, key, data)

    def control(
        self, data: Json, position: Position, models: Models = None, *, raw: Bytes = None, key: Bytes = None
    ) -> None:
        """A control record: applied by the core if its signature checks out against the keyring and its
        spec's champion has not processed it yet (a restored learner meets it again only if its checkpoint
        was before it); else rejected (``control``) for the spec's models, or every model (of ``models``)."""
        core = self.core
        chosen = list(core.models) if models is None else models
        try:
            ctl = open_control(data, self.keyring)
            champion = core.champion(ctl.spec)
            if champion is not None and champion.name not in chosen:
                return  # processed before the checkpoint this learner was restored from
            if any(
                ctl.id in st.controls
                for m, st in core.models.items()
                if st.spec == ctl.spec and m not in chosen
            ):
                return  # applied by a model of its spec restored from a later version than these ones
            decision = core.apply_control(ctl, position)
        except ControlRefused as exc:
            spec = data.get(CONTROL_FIELD)
            named = [m for m in chosen if m in core.models and _names(spec, core.models[m].spec)]
            self._reject(named or chosen, Reason.CONTROL, str(exc))
        else:
            log.info(
                "control applied",
                action=ctl.action,
                spec=ctl.spec,
                model=decision.model,
                id=ctl.id,
                position=position,
            )
        self._send(position, raw, key, data)

    def prediction(
        self, data: Json, position: Position, models: Models = None, *, raw: Bytes = None, key: Bytes = None
    ) -> None:
        """A score served by the API: the models of its view predict on the features *as served*, and
        learn from them when a label arrives for its prediction_id."""
        chosen = self._viewed(data, models, Reason.MALFORMED_PREDICTION)
        pid, vector, ts = data.get("prediction_id"), data.get("features"), data.get("ts")
        if not chosen:
            pass
        elif not (_id(pid) and isinstance(vector, dict) and _time(ts)):
            self._reject(chosen, Reason.MALFORMED_PREDICTION, "no prediction_id, features or time")
        elif self._domain(chosen, vector):
            self.core.on_record(f"p:{pid}", ts, vector, None, position, only=chosen, predictions=False)
        self._send(position, raw, key, data)

    def label(
        self, data: Json, position: Position, models: Models = None, *, raw: Bytes = None, key: Bytes = None
    ) -> None:
        """A label: checked against each model's task, then joined to its pending prediction (by event id
        or prediction id)."""
        try:
            label = Label.parse(data)
        except FeaturesError as exc:
            self._reject_all(models, Reason.MALFORMED_LABEL, str(exc))
        else:
            if _id(label.event_id if label.event_id is not None else label.prediction_id):
                self._join(label.join_key, label.label, label.ts, position, models)
            else:
                self._reject_all(
                    models, Reason.MALFORMED_LABEL, f"an id is at most {MAX_ID_CHARS} characters"
                )
        self._send(position, raw, key, data)

    def join(
        self, key: str, label: Any, ts: int, position: Position = None, models: list[str] | None = None
    ) -> None:
        """Join ``label`` to record ``key`` for each model (of ``models``) whose task can take it (a label
        held back by a replay, revealed later)."""
        self._join(key, label, ts, position, models)
        self._send(position, None, None, {"event_id": key, "label": label, "ts": ts})

    def _join(self, key: str, label: Any, ts: int, position: Position, models: list[str] | None) -> None:
        chosen = list(self.core.models) if models is None else models
        on_label = self.core.on_label
        for y, group in self._labels(chosen, label):
            on_label(key, y, ts, position, only=group)

    # ------------------------------------------------------------------ checks

    def _viewed(self, data: dict[str, Any], models: list[str] | None, reason: Reason) -> list[str]:
        """The models (of ``models``, default all) that read the record's view; none without a view (a
        string), and the record is rejected for every model (with ``reason``)."""
        view = data.get("view")
        if type(view) is not str:
            self._reject_all(models, reason, "no view")
            return []
        return self._of_view(view, models)

    def _labels(self, models: list[str], label: Any) -> list[tuple[Any, list[str]]]:
        """The models that can take ``label``, grouped by the label normalised for them (in their order);
        the others are rejected."""
        core = self.core
        groups: dict[tuple[type, Any], tuple[Any, list[str]]] = {}
        for m in models:
            state = core.models.get(m)
            if state is None or state.quarantined:
                continue
            check = self._checks.get(state.spec)
            if check is None:
                spec = core.specs[state.spec]
                check = self._checks[state.spec] = _checker(spec.task, spec.classes)
            try:
                y = check(label)
            except InvalidLabel as exc:
                core.reject(state, exc.reason, exc.detail)
                continue
            group = groups.get((type(y), y))
            if group is None:
                groups[(type(y), y)] = (y, [m])
            else:
                group[1].append(m)
        return list(groups.values())

    def _domain(self, models: list[str], vector: dict[str, Any]) -> bool:
        try:
            check_vector(vector)
        except OutOfDomain as exc:
            self._reject(models, exc.reason, exc.detail)
            return False
        return True

    def _declared(self, models: list[str], vector: dict[str, Any]) -> list[str]:
        """The models whose declared features the vector has (the others reject it)."""
        core = self.core
        out = []
        for m in models:
            names = core.models[m].features
            if names is not None and not all(n in vector for n in names):
                missing = sorted(set(names) - set(vector))
                core.reject(core.models[m], Reason.MALFORMED_FEATURES, f"no features {missing}")
            else:
                out.append(m)
        return out

    # ------------------------------------------------------------------ rejections

    def _reject_all(self, models: list[str] | None, reason: Reason, detail: str) -> None:
        self._reject(list(self.core.models) if models is None else models, reason, detail)

    def _reject(self, models: list[str], reason: Reason, detail: str) -> None:
        core = self.core
        for m in models:
            state = core.models.get(m)
            if state is not None and not state.quarantined:
                core.reject(state, reason, detail)

    def _rejected(self, model: str, reason: Reason, detail: str) -> None:
        """The core's ``on_reject``: collected until the record is done (one letter per reason)."""
        found = self._rejects.get(reason)
        if found is None:
            self._rejects[reason] = (detail, [model])
        else:
            found[1].append(model)

    def _send(self, position: Position, raw: bytes | None, key: bytes | None, data: Any) -> None:
        rejects, self._rejects = self._rejects, {}
        if not rejects:
            return
        if raw is None and not isinstance(data, Undecodable):
            try:
                raw = orjson.dumps(data)
            except TypeError:
                raw = repr(data).encode()
        topic, partition, offset = position if position is not None else ("", None, None)
        for reason, (detail, models) in rejects.items():
            n = self._logged[reason] = self._logged.get(reason, 0) + 1
            if n <= 10 or not n & (n - 1):  # the first ten of each reason, then the 16th, 32nd, 64th...
                log.warning(
                    "record rejected",
                    reason=reason.value,
                    detail=detail,
                    models=models,
                    position=position,
                    rejected_so_far=n,
                )
            if self.sink is not None:
                self.sink.send(
                    learner_letter(reason.value, detail, topic, partition, offset, raw, key, tuple(models))
                )


def _names(control: Any, spec: str) -> bool:
    """Whether an (unverified) control's text names ``spec`` (its refusal is counted for that spec's
    models)."""
    if type(control) is not str:
        return False
    try:
        body = orjson.loads(control)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("spec") == spec


def _checker(task: str, classes: tuple[Any, ...] | None) -> Callable[[Any], Any]:
    def check(label: Any) -> Any:
        return check_label(task, label, classes)

    return check
