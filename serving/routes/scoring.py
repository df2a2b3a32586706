"""Scoring (scope ``score``): one entity or a batch, with the model's current version and the entities'
online features; each prediction is queued for the predictions topic (:class:`serving.outbox.Outbox`: the
response waits neither for Kafka nor for the topic's metadata).

The hot path: no dependency injection, the services read inline, one feature-store round trip, the response
built from checked values and serialised once (no second validation). A well-formed ``POST
/v1/models/{name}/predict`` does not even go through FastAPI's routing and body handling: :class:`FastPredict`
(the innermost middleware) answers it; anything else about it goes to the route below, which answers as
before (the errors, 401, 403, 413, 422, are the route's own)."""

from __future__ import annotations

import asyncio
import collections
import functools
import math
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from features.events import new_id
from features.store import FeatureRow
from serving.auth import Scope, parse_json, scoped_route
from serving.errors import FeatureStoreUnavailable, NoModelLoaded, ServingError, Unscorable
from serving.metrics import FEATURE_AGE_OF, PREDICTIONS_OF, UNPUBLISHED_OF
from serving.models import LoadedModel
from serving.outbox import Outbox
from serving.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    PredictRequest,
    PredictResponse,
    errors,
)
from serving.services import STORE_ERRORS, Services, services_of
from streaming.learning.core import predict as model_predict
from streaming.learning.core import select_inputs
from streaming.learning.domain import INT64_MAX, INT64_MIN, check_vector
from streaming.learning.errors import OutOfDomain
from streaming.logs import get_logger
from streaming.settings import Settings, Topics

__all__ = ["FastPredict", "predict_one", "router"]

log = get_logger("rivulet.serving")
router = APIRouter(route_class=scoped_route(Scope.SCORE), tags=["score"])
SCORING = errors(400, 401, 403, 404, 413, 422, 503)


def _key(k: Any) -> str:
    return ("true" if k else "false") if isinstance(k, bool) else str(k)


def _where(i: int, batch: bool) -> str:
    return f"items[{i}]" if batch else "body"


def _prediction(
    loaded: LoadedModel, label: Any, proba: Any, where: str
) -> tuple[Any, dict[str, float] | None]:
    """The label and probabilities as the response states them (a label of another type as its text); a
    non-finite number or an integer beyond int64 is no prediction: the request is :class:`Unscorable`."""
    if isinstance(label, bool) or (isinstance(label, int) and INT64_MIN <= label <= INT64_MAX):
        pass
    elif isinstance(label, int | float):
        if isinstance(label, int) or not math.isfinite(label):
            raise Unscorable(f"{where}: model {loaded.name!r} predicted {label!r}, not a finite number")
    elif label is not None and not isinstance(label, str):
        label = str(label)
    if not proba:
        return label, None
    try:
        probabilities = {_key(k): float(v) for k, v in proba.items()}
    except (TypeError, ValueError, OverflowError) as exc:
        raise Unscorable(f"{where}: model {loaded.name!r} gave probabilities that are not numbers") from exc
    if not all(map(math.isfinite, probabilities.values())):
        raise Unscorable(f"{where}: model {loaded.name!r} gave a probability that is not a finite number")
    return label, probabilities


def _predict(
    loaded: LoadedModel, item: PredictRequest, row: FeatureRow | None, where: str
) -> tuple[dict[str, Any], Any, dict[str, float] | None]:
    """The model's input vector and its prediction; a request the model cannot score is a 400 naming the
    item (a value beyond the learner's numeric domain, the model raising, a prediction that is not a finite
    number), never a 500."""
    engine = loaded.engine
    assert engine is not None
    fields = item.fields
    if fields and any(name in fields for name in engine.view.feature_names):
        # aggregates (and expressions) come from the online store only: a request field of that name would
        # stand in for a missing vector's aggregate, and be published as if the pipeline had computed it
        stored = set(engine.view.feature_names)
        fields = {k: v for k, v in fields.items() if k not in stored}
    try:
        x = select_inputs(engine.serve(row.values if row else {}, fields), loaded.state.features)
        check_vector(x)
    except OutOfDomain as exc:
        raise Unscorable(f"{where}: {exc.detail}") from exc
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise Unscorable(f"{where}: the features could not be computed ({type(exc).__name__})") from exc
    try:
        label, proba = model_predict(loaded.state, x, serving=True)
    except Exception as exc:  # a model's own error on one input is that input's problem, not the API's
        log.warning("model raised on a request", model=loaded.name, version=loaded.version, error=repr(exc))
        raise Unscorable(f"{where}: model {loaded.name!r} cannot score this input") from exc
    label, probabilities = _prediction(loaded, label, proba, where)
    return x, label, probabilities


async def _score(
    svc: Services, outbox: Outbox, loaded: LoadedModel, items: list[PredictRequest], batch: bool
) -> list[dict[str, Any]]:
    """The predictions for ``items``, each a :class:`PredictResponse` as a dict (its fields, in order):
    built from values already checked, never validated again."""
    engine = loaded.engine
    if engine is None:
        raise NoModelLoaded(f"model {loaded.name!r} reads a view unknown to this server")
    fallback = False
    try:
        rows: list[FeatureRow | None] = await svc.store.read(engine.view.name, [i.entity for i in items])
    except STORE_ERRORS as exc:
        if not svc.settings.serve_fallback:
            raise FeatureStoreUnavailable(
                f"the online feature store is unreachable ({type(exc).__name__})"
            ) from exc
        rows, fallback = [None] * len(items), True
    now_ms = int(time.time() * 1000)
    scored = [
        _predict(loaded, item, row, _where(i, batch))
        for i, (item, row) in enumerate(zip(items, rows, strict=True))
    ]
    out = []
    predictions = PREDICTIONS_OF(loaded.name, str(loaded.version))
    topic = _topic(svc.settings)
    for item, row, (x, label, probabilities) in zip(items, rows, scored, strict=True):
        response = {
            "prediction_id": new_id(),
            "model": loaded.name,
            "version": loaded.version,
            "entity": item.entity,
            "prediction": label,
            "probabilities": probabilities,
            "features_found": row is not None,
            "feature_age_ms": (now_ms - row.ts) if row is not None else None,
            "fallback": fallback,
        }
        out.append(response)
        predictions.inc()
        if row is not None:
            FEATURE_AGE_OF(loaded.name).observe(max(now_ms - row.ts, 0) / 1000)
        _publish(svc, outbox, loaded, response, x, now_ms, topic)
    # one turn of the loop: the sends run up to their first wait (a producer that has the topic's metadata
    # has queued them all; the embedded log has appended them) before the response goes out
    await asyncio.sleep(0)
    return out


@functools.lru_cache(maxsize=16)
def _predictions_topic(prefix: str) -> str:
    return Topics.with_prefix(prefix).predictions


def _topic(settings: Settings) -> str:
    """The predictions topic (``settings.topics`` builds every name on each call)."""
    return _predictions_topic(settings.topic_prefix)


def _publish(
    svc: Services,
    outbox: Outbox,
    loaded: LoadedModel,
    r: dict[str, Any],
    x: dict[str, Any],
    now_ms: int,
    topic: str,
) -> None:
    """Queue the prediction for the predictions topic in the app's :class:`~serving.outbox.Outbox`: the
    response waits neither for Kafka nor for the topic's metadata."""
    producer = svc.producer
    if producer is None:
        UNPUBLISHED_OF(loaded.name).inc()
        return
    record = {
        "prediction_id": r["prediction_id"],
        "model": r["model"],
        "version": r["version"],
        "entity": r["entity"],
        "view": loaded.header.view,
        "features": x,
        "prediction": r["prediction"],
        "probabilities": r["probabilities"],
        "ts": now_ms,
    }
    try:
        value = orjson.dumps(record)
    except (TypeError, orjson.JSONEncodeError):
        UNPUBLISHED_OF(loaded.name).inc()
        return
    outbox.send(producer, topic, value, r["entity"].encode(), loaded.name)


def _json(content: Any) -> Response:
    # built from checked values: serialised once by orjson, no second validation by FastAPI
    return Response(orjson.dumps(content), media_type="application/json")


async def predict_one(svc: Services, outbox: Outbox, name: str, body: PredictRequest) -> dict[str, Any]:
    """One entity scored with the model serving ``name`` (what both the route and :class:`FastPredict`
    answer)."""
    loaded = await svc.models.require(name)
    return (await _score(svc, outbox, loaded, [body], batch=False))[0]


@router.post("/v1/models/{name}/predict", response_model=PredictResponse, responses=SCORING)
async def predict(name: str, body: PredictRequest, request: Request) -> Response:
    """Score one entity with the current version of a model and the entity's online features."""
    return _json(await predict_one(services_of(request), request.app.state.outbox, name, body))


@router.post("/v1/models/{name}/predict/batch", response_model=BatchPredictResponse, responses=SCORING)
async def predict_batch(name: str, body: BatchPredictRequest, request: Request) -> Response:
    """Score many entities in one call and one feature-store round trip; any unscorable item refuses the
    whole batch (400 naming it), before anything is published."""
    svc = services_of(request)
    loaded = await svc.models.require(name)
    scored = await _score(svc, request.app.state.outbox, loaded, body.items, batch=True)
    return _json({"predictions": scored})


PREDICT = "/v1/models/{name}/predict"
_PREFIX, _SUFFIX = "/v1/models/", "/predict"


def _predict_name(path: str) -> str | None:
    """The ``name`` of a path the predict route matches (one segment, not empty), else None.

    >>> _predict_name("/v1/models/zipm/predict"), _predict_name("/v1/models//predict")
    ('zipm', None)
    >>> _predict_name("/v1/models/a/b/predict"), _predict_name("/v1/models/zipm/predict/batch")
    (None, None)
    """
    if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
        name = path[len(_PREFIX) : -len(_SUFFIX)]
        if name and "/" not in name:
            return name
    return None


def _json_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Does the first ``Content-Type`` say ``application/json`` (FastAPI parses it as JSON, and others)?"""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


async def _read(receive: Receive) -> tuple[bytes | None, list[Message]]:
    """The request's body (None if the client left first) and the messages it came in."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that gives ``messages`` again first (the body :class:`FastPredict` read)."""
    queue = collections.deque(messages)

    async def replayed() -> Message:
        return queue.popleft() if queue else await receive()

    return replayed


class FastPredict:
    """The predict route's hot path, as pure ASGI in front of FastAPI: for ``POST /v1/models/{name}/predict``
    with a ``score`` key (when keys are set), a JSON content type and a body that parses (orjson, as
    :class:`serving.auth.JsonRequest`) and validates as a :class:`PredictRequest` (once), it scores and
    answers itself, with the route's answers (a :class:`ServingError` as ``{"error", "detail"}``). Anything
    else goes to the app, the body it read replayed: the route then answers it (401, 403, 422...) exactly
    as it does without this. FastAPI's routing, dependency solving, request objects and second body pass
    cost more than the scoring itself (a py-spy profile: about a third of the API's CPU per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.route = next(r for r in router.routes if getattr(r, "path", None) == PREDICT)

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        name = _predict_name(scope["path"])
        state = scope["app"].state
        if name is None or not _json_body(scope["headers"]) or not _allowed(state, scope["headers"]):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # the request metrics' label, as the router sets it
        body, messages = await _read(receive)  # over the body limit: BodyLimit's 413, as for the route
        item = _valid(body)
        if item is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        scope["path_params"] = {"name": name}
        try:
            content = orjson.dumps(await predict_one(state.services, state.outbox, name, item))
        except ServingError as exc:  # as the app's handler answers it
            answer = JSONResponse({"error": exc.code, "detail": exc.detail}, exc.status_code)
            await answer(scope, receive, send)
            return
        headers = [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _allowed(state: Any, headers: list[tuple[bytes, bytes]]) -> bool:
    try:
        state.keyring.check(headers, Scope.SCORE)
    except ServingError:  # the route answers 401 or 403
        return False
    return True


def _valid(body: bytes | None) -> PredictRequest | None:
    """The body as a :class:`PredictRequest`, or None for anything the route must answer (not JSON, not
    valid, a lone surrogate, an integer past 64 bits...)."""
    if not body:
        return None
    try:
        return PredictRequest.model_validate(parse_json(body))
    except Exception:  # whatever it is, the route answers it as it always has
        return None
