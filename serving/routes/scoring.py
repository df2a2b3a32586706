"""Scoring (scope ``score``): one entity or a batch, with the model's current version and the entities'
online features; each prediction is queued for the predictions topic (:class:`serving.outbox.Outbox`: the
response waits neither for Kafka nor for the topic's metadata). The hot path: no dependency injection, the
services read inline, one feature-store round trip."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from features.events import new_id
from features.store import FeatureRow
from serving.auth import Scope, scoped_route
from serving.errors import FeatureStoreUnavailable, NoModelLoaded, Unscorable
from serving.metrics import FEATURE_AGE, PREDICTIONS, UNPUBLISHED
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
from streaming.learning.domain import check_vector
from streaming.learning.errors import OutOfDomain
from streaming.logs import get_logger

__all__ = ["router"]

log = get_logger("rivulet.serving")
router = APIRouter(route_class=scoped_route(Scope.SCORE), tags=["score"])
SCORING = errors(400, 401, 403, 404, 413, 422, 503)


def _key(k: Any) -> str:
    return ("true" if k else "false") if isinstance(k, bool) else str(k)


def _where(i: int, batch: bool) -> str:
    return f"items[{i}]" if batch else "body"


def _predict(loaded: LoadedModel, item: PredictRequest, row: FeatureRow | None, where: str) -> Any:
    """The model's input vector and its prediction; a request the model cannot score is a 400 naming the
    item (a value beyond the learner's numeric domain, or the model raising), never a 500."""
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
    return x, label, proba


async def _score(
    svc: Services, outbox: Outbox, loaded: LoadedModel, items: list[PredictRequest], batch: bool
) -> list[PredictResponse]:
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
    for item, row, (x, label, proba) in zip(items, rows, scored, strict=True):
        response = PredictResponse(
            prediction_id=new_id(),
            model=loaded.name,
            version=loaded.version,
            entity=item.entity,
            prediction=label if isinstance(label, str | int | float | bool) or label is None else str(label),
            probabilities={_key(k): float(v) for k, v in proba.items()} if proba else None,
            features_found=row is not None,
            feature_age_ms=(now_ms - row.ts) if row is not None else None,
            fallback=fallback,
        )
        out.append(response)
        PREDICTIONS.labels(loaded.name, str(loaded.version)).inc()
        if row is not None:
            FEATURE_AGE.labels(loaded.name).observe(max(now_ms - row.ts, 0) / 1000)
        _publish(svc, outbox, loaded, response, x, now_ms)
    # one turn of the loop: the sends run up to their first wait (a producer that has the topic's metadata
    # has queued them all; the embedded log has appended them) before the response goes out
    await asyncio.sleep(0)
    return out


def _publish(
    svc: Services, outbox: Outbox, loaded: LoadedModel, r: PredictResponse, x: dict[str, Any], now_ms: int
) -> None:
    """Queue the prediction for the predictions topic in the app's :class:`~serving.outbox.Outbox`: the
    response waits neither for Kafka nor for the topic's metadata."""
    producer = svc.producer
    if producer is None:
        UNPUBLISHED.labels(loaded.name).inc()
        return
    record = {
        "prediction_id": r.prediction_id,
        "model": r.model,
        "version": r.version,
        "entity": r.entity,
        "view": loaded.header.view,
        "features": x,
        "prediction": r.prediction,
        "probabilities": r.probabilities,
        "ts": now_ms,
    }
    try:
        value = orjson.dumps(record)
    except (TypeError, orjson.JSONEncodeError):
        UNPUBLISHED.labels(loaded.name).inc()
        return
    outbox.send(producer, svc.settings.topics.predictions, value, r.entity.encode(), loaded.name)


def _json(model: PredictResponse | BatchPredictResponse) -> Response:
    # already validated on construction: serialise once, skip FastAPI's second validation
    return Response(model.__pydantic_serializer__.to_json(model), media_type="application/json")


@router.post("/v1/models/{name}/predict", response_model=PredictResponse, responses=SCORING)
async def predict(name: str, body: PredictRequest, request: Request) -> Response:
    """Score one entity with the current version of a model and the entity's online features."""
    svc = services_of(request)
    loaded = await svc.models.require(name)
    return _json((await _score(svc, request.app.state.outbox, loaded, [body], batch=False))[0])


@router.post("/v1/models/{name}/predict/batch", response_model=BatchPredictResponse, responses=SCORING)
async def predict_batch(name: str, body: BatchPredictRequest, request: Request) -> Response:
    """Score many entities in one call and one feature-store round trip; any unscorable item refuses the
    whole batch (400 naming it), before anything is published."""
    svc = services_of(request)
    loaded = await svc.models.require(name)
    scored = await _score(svc, request.app.state.outbox, loaded, body.items, batch=True)
    return _json(BatchPredictResponse(predictions=scored))
