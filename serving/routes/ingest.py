"""Ingest (scope ``ingest``: it writes training data): events and late labels, validated as the SDK does,
published to Kafka, 202 once Kafka has them.

Labels (``/v1/labels``, and an event's own ``label`` on ``/v1/events``) are checked against the tasks of
the models this replica serves (:func:`check_label`): a label that no served model could take
(``"banana"`` for binary models, ``1e300`` for a regression) is a 400 naming the item, and nothing of the
request is published. With no model loaded yet, labels are accepted as the schema
allows them (a scalar in the numeric domain): the learner's router checks each label again per model and
dead-letters what a model cannot take, so an early label is never a danger to a model, only possibly
useless."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request, status
from pydantic import BaseModel

from features.errors import InvalidEvent
from features.events import Event, Label
from serving.auth import Scope, scoped_route
from serving.bodies import json_body, validated
from serving.errors import BadRequest, InvalidLabelRequest, KafkaUnavailable
from serving.models import LoadedModel
from serving.schemas import EventsRequest, IngestResponse, LabelsRequest, errors
from serving.services import Services, ServicesDep
from streaming.learning.errors import InvalidLabel
from streaming.learning.labels import check_label

__all__ = ["BODIES", "label_problem", "router"]

router = APIRouter(route_class=scoped_route(Scope.INGEST), tags=["ingest"])
INGEST = errors(400, 401, 403, 413, 422, 503)
BODIES = (EventsRequest, LabelsRequest)  # validated off the event loop: their schemas added to the OpenAPI
Records = tuple[list[tuple[bytes, bytes]], list[str]]  # Kafka records (key, value) and their ids
M = TypeVar("M", bound=EventsRequest | LabelsRequest)


async def _ingest(svc: Services, topic: str, records: list[tuple[bytes, bytes]], ids: list[str]) -> None:
    """Publish ``records`` (their ids ``ids``), one by one. A failure is a 503 saying which ids may already
    be on Kafka (those sent before it, or all once sending is over: an unacknowledged record may still have
    been written) and that a retry must reuse these ids: the learner de-duplicates by event id."""
    producer = svc.producer
    if producer is None:
        raise KafkaUnavailable("Kafka is unreachable: nothing was accepted")
    futures = []
    try:  # send itself raises when the topic's metadata does not come (aiokafka's KafkaTimeoutError)
        for key, value in records:
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
    except Exception as exc:
        raise KafkaUnavailable(_partly(exc, ids, len(futures))) from exc


def _partly(exc: Exception, ids: list[str], sent: int) -> str:
    """The 503's detail when Kafka failed after ``sent`` of the records with ``ids`` were handed over.

    >>> d = _partly(RuntimeError("down"), ["a", "b", "c"], 1)
    >>> "the first 1 of 3 may have been accepted, ids ['a']" in d, "with the same ids" in d
    (True, True)
    >>> "any of the 2 may have been accepted" in _partly(RuntimeError("down"), ["a", "b"], 2)
    True
    """
    if sent == 0:
        return f"Kafka did not take the records ({exc}): nothing was accepted"
    if sent < len(ids):
        which = f"the first {sent} of {len(ids)} may have been accepted, ids {ids[:sent]}"
        which += "; the others were not sent"
    else:
        which = f"any of the {len(ids)} may have been accepted, ids {ids}"
    return (
        f"Kafka did not acknowledge the records ({exc}): {which}. Retry the whole request with the same ids "
        "(events with these event_ids): the learner de-duplicates by event id"
    )


def _route(path: str, body: type[BaseModel]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An ingest route: 202 with the ids once Kafka has the records; its body documented in the schema."""
    return router.post(
        path,
        response_model=IngestResponse,
        status_code=status.HTTP_202_ACCEPTED,
        responses=INGEST,
        openapi_extra=json_body(body),
    )


async def _publish(
    request: Request, svc: Services, body: type[M], topic: str, records: Callable[[M], Records]
) -> IngestResponse:
    """Validate the body in a thread (:mod:`serving.bodies`), make its records there, publish them."""
    out, ids = await validated(request, body, records)
    await _ingest(svc, topic, out, ids)
    return IngestResponse(ids=ids)


@_route("/v1/events", EventsRequest)
async def post_events(request: Request, svc: ServicesDep) -> IngestResponse:
    """Publish events (validated as by the SDK); 202 with their ids once Kafka has them. An event's own
    ``label`` must fit some served model, as on ``/v1/labels``, and its time may not be further ahead of now
    than ``RIVULET_FEATURES_MAX_AHEAD_MS`` (400 naming the item otherwise; nothing is published). The body
    is validated in a thread (:mod:`serving.bodies`)."""
    served = list(svc.models.models.values())
    # the feature worker dead-letters an event this far ahead of its record's time ('future': it would make
    # every later event of its entity late); the record is stamped after now, so refuse it here, visibly
    ahead_ms = int(time.time() * 1000) + svc.settings.features_max_ahead_ms

    def records(body: EventsRequest) -> Records:
        return _events(body, served, ahead_ms, svc.settings.features_max_ahead_ms)

    return await _publish(request, svc, EventsRequest, svc.settings.topics.events, records)


def _events(body: EventsRequest, served: list[LoadedModel], ahead_ms: int, max_ahead_ms: int) -> Records:
    """The events' Kafka records and ids, or the first item's error (blocking: CPU only)."""
    records = []
    ids = []
    for i, raw in enumerate(body.events):
        if raw.label is not None and (problem := label_problem(raw.label, served)) is not None:
            raise InvalidLabelRequest(f"events[{i}].label: {problem}")
        try:
            event = Event.parse(raw.model_dump(exclude_none=True))
            value = event.to_json()
        except InvalidEvent as exc:
            raise BadRequest(f"events[{i}].{exc}") from exc
        except (orjson.JSONEncodeError, TypeError, ValueError, OverflowError) as exc:
            raise BadRequest(f"events[{i}]: cannot be serialised ({exc})") from exc
        if event.ts > ahead_ms:
            raise BadRequest(
                f"events[{i}].ts: {event.ts} is more than RIVULET_FEATURES_MAX_AHEAD_MS "
                f"({max_ahead_ms} ms) ahead of now; the feature worker would refuse it"
            )
        records.append((event.entity.encode(), value))
        ids.append(event.event_id)
    return records, ids


def label_problem(label: Any, models: Iterable[LoadedModel]) -> str | None:
    """None when some served model (or none at all is loaded) could take ``label``; else why not, one
    reason per kind of model.

    The models are deduplicated by (task, classes), so the message names each kind once."""
    kinds = {(m.task, m.classes) for m in models}
    if not kinds:
        return None
    reasons = []
    for task, classes in sorted(kinds, key=repr):
        try:
            check_label(task, label, classes)
            return None
        except InvalidLabel as exc:
            reasons.append(f"{task} model: {exc}")
    return f"{label!r} fits no served model ({'; '.join(reasons)})"


@_route("/v1/labels", LabelsRequest)
async def post_labels(request: Request, svc: ServicesDep) -> IngestResponse:
    """Publish late labels, for an ``event_id`` or a ``prediction_id`` (``ts`` defaults to now); each must
    fit the task of some served model (400 naming the item otherwise, and nothing is published). The body
    is validated in a thread (:mod:`serving.bodies`)."""
    served = list(svc.models.models.values())
    now_ms = int(time.time() * 1000)

    def records(body: LabelsRequest) -> Records:
        return _labels(body, served, now_ms)

    return await _publish(request, svc, LabelsRequest, svc.settings.topics.labels, records)


def _labels(body: LabelsRequest, served: list[LoadedModel], now_ms: int) -> Records:
    """The labels' Kafka records and join keys, or the first item's error (blocking: CPU only)."""
    labels = []
    for i, raw in enumerate(body.labels):
        problem = label_problem(raw.label, served)
        if problem is not None:
            raise InvalidLabelRequest(f"labels[{i}].label: {problem}")
        try:
            labels.append(Label.parse({"ts": now_ms, **raw.model_dump(exclude_none=True)}))
        except InvalidEvent as exc:
            raise BadRequest(f"labels[{i}].{exc}") from exc
    return [(lbl.join_key.encode(), lbl.to_json()) for lbl in labels], [lbl.join_key for lbl in labels]
