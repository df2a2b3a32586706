"""The routes: short handlers that call the feature engine, the online store and the model cache."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Request, status
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from redis.exceptions import RedisError

from features.errors import InvalidEvent
from features.events import Event, Label, new_id
from features.store import FeatureRow
from serving.errors import (
    BadRequest,
    Conflict,
    FeatureStoreUnavailable,
    Forbidden,
    ModelNotFound,
    NoModelLoaded,
    Unauthorized,
)
from serving.models import LoadedModel
from serving.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    EventsRequest,
    IngestResponse,
    LabelsRequest,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    VersionInfoOut,
    errors,
)
from streaming.learning.core import predict as model_predict
from streaming.learning.core import select_inputs

__all__ = ["router"]

router = APIRouter()
PREDICTIONS = Counter("rivulet_predictions_total", "Predictions served", ["model", "version"])
UNPUBLISHED = Counter(
    "rivulet_predictions_unpublished_total", "Predictions not published to Kafka", ["model"]
)
FEATURE_AGE = Histogram(
    "rivulet_feature_age_seconds",
    "Age of the online features used",
    ["model"],
    buckets=(0.01, 0.1, 1, 10, 60, 600, 3600, 86400),
)


async def services(request: Request) -> Any:
    return request.app.state.services


def _check_key(given: str | None, keys: list[str]) -> None:
    if given is None:
        raise Unauthorized("an API key is required (header X-API-Key)")
    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise Forbidden("this API key is not allowed here")


async def admin_key(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
    keys = request.app.state.settings.admin_api_keys
    if not keys:
        raise Forbidden("admin endpoints are disabled: no RIVULET_ADMIN_API_KEYS configured")
    _check_key(x_api_key, keys)


async def scoring_key(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
    keys = request.app.state.settings.scoring_api_keys
    if keys:
        _check_key(x_api_key, keys)


def _model(svc: Any, name: str) -> LoadedModel:
    loaded = svc.models.get(name)
    if loaded is None:
        if name in svc.models.models or name in _names(svc):
            raise NoModelLoaded(f"model {name!r} has no version that verifies yet")
        raise ModelNotFound(f"no model named {name!r}")
    return loaded


def _names(svc: Any) -> list[str]:
    try:
        return list(svc.registry.names())
    except (RedisError, OSError):
        return []


def _key(k: Any) -> str:
    return ("true" if k else "false") if isinstance(k, bool) else str(k)


async def _score(svc: Any, loaded: LoadedModel, items: list[PredictRequest]) -> list[PredictResponse]:
    engine = loaded.engine
    if engine is None:
        raise NoModelLoaded(
            f"model {loaded.name!r} reads view {loaded.header.get('view')!r}, unknown to this server"
        )
    fallback = False
    try:
        rows: list[FeatureRow | None] = await svc.store.read(engine.view.name, [i.entity for i in items])
    except (RedisError, OSError) as exc:
        if not svc.settings.serve_fallback:
            raise FeatureStoreUnavailable(
                f"the online feature store is unreachable ({type(exc).__name__})"
            ) from exc
        rows, fallback = [None] * len(items), True
    now_ms = int(time.time() * 1000)
    out = []
    for item, row in zip(items, rows, strict=True):
        vector = engine.serve(row.values if row else {}, item.fields)
        x = select_inputs(vector, loaded.state.features)
        label, proba = model_predict(loaded.state, x, serving=True)
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
        await _publish(svc, loaded, response, x, now_ms)
    return out


def _count_failure(model: str) -> Any:
    def done(future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            UNPUBLISHED.labels(model).inc()

    return done


async def _publish(svc: Any, loaded: LoadedModel, r: PredictResponse, x: dict[str, Any], now_ms: int) -> None:
    """Queue the prediction for the predictions topic; no Kafka round trip on the response path."""
    if svc.producer is None:
        UNPUBLISHED.labels(loaded.name).inc()
        return
    record = {
        "prediction_id": r.prediction_id,
        "model": r.model,
        "version": r.version,
        "entity": r.entity,
        "view": loaded.header.get("view"),
        "features": x,
        "prediction": r.prediction,
        "probabilities": r.probabilities,
        "ts": now_ms,
    }
    try:
        future = await svc.producer.send(
            svc.settings.topics.predictions, orjson.dumps(record), key=r.entity.encode()
        )
        future.add_done_callback(_count_failure(loaded.name))
    except Exception:
        UNPUBLISHED.labels(loaded.name).inc()


SCORING = errors(400, 401, 403, 404, 413, 422, 503)
INGEST = errors(400, 401, 403, 413, 422, 503)
ADMIN = errors(401, 403, 404, 409, 413, 422, 503)


def _scoring_auth(request: Request) -> None:
    """The scoring key check, inline: the hot path avoids FastAPI's dependency machinery."""
    keys = request.app.state.settings.scoring_api_keys
    if keys:
        _check_key(request.headers.get("x-api-key"), keys)


# the scoring routes check the key inline (see _scoring_auth); this documents the header they read
API_KEY_HEADER: dict[str, Any] = {
    "parameters": [{"name": "X-API-Key", "in": "header", "required": False, "schema": {"type": "string"}}]
}


def _json(model: PredictResponse | BatchPredictResponse) -> Response:
    # already validated on construction: serialise once, skip FastAPI's second validation
    return Response(model.__pydantic_serializer__.to_json(model), media_type="application/json")


@router.post(
    "/v1/models/{name}/predict",
    response_model=PredictResponse,
    responses=SCORING,
    openapi_extra=API_KEY_HEADER,
)
async def predict(name: str, body: PredictRequest, request: Request) -> Response:
    """Score one entity with the current version of a model and the entity's online features."""
    _scoring_auth(request)
    svc = request.app.state.services
    return _json((await _score(svc, _model(svc, name), [body]))[0])


@router.post(
    "/v1/models/{name}/predict/batch",
    response_model=BatchPredictResponse,
    responses=SCORING,
    openapi_extra=API_KEY_HEADER,
)
async def predict_batch(name: str, body: BatchPredictRequest, request: Request) -> Response:
    """Score many entities in one call and one feature-store round trip."""
    _scoring_auth(request)
    svc = request.app.state.services
    return _json(BatchPredictResponse(predictions=await _score(svc, _model(svc, name), body.items)))


async def _ingest(svc: Any, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    if svc.producer is None:
        raise FeatureStoreUnavailable("Kafka is unreachable: nothing was accepted")
    futures = [await svc.producer.send(topic, value, key=key) for key, value in records]
    try:
        await asyncio.gather(*futures)
    except Exception as exc:
        raise FeatureStoreUnavailable(f"Kafka did not acknowledge the records: {exc}") from exc


@router.post(
    "/v1/events",
    response_model=IngestResponse,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(scoring_key)],
    responses=INGEST,
)
async def post_events(body: EventsRequest, svc: Annotated[Any, Depends(services)]) -> IngestResponse:
    """Publish events (validated as by the SDK); 202 with their ids once Kafka has them."""
    events = []
    for i, raw in enumerate(body.events):
        try:
            events.append(Event.parse(raw.model_dump(exclude_none=True)))
        except InvalidEvent as exc:
            raise BadRequest(f"events[{i}].{exc}") from exc
    await _ingest(svc, svc.settings.topics.events, [(e.entity.encode(), e.to_json()) for e in events])
    return IngestResponse(ids=[e.event_id for e in events])


@router.post(
    "/v1/labels",
    response_model=IngestResponse,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(scoring_key)],
    responses=INGEST,
)
async def post_labels(body: LabelsRequest, svc: Annotated[Any, Depends(services)]) -> IngestResponse:
    """Publish late labels, for an ``event_id`` or a ``prediction_id`` (``ts`` defaults to now)."""
    labels = []
    for i, raw in enumerate(body.labels):
        try:
            labels.append(Label.parse({"ts": int(time.time() * 1000), **raw.model_dump(exclude_none=True)}))
        except InvalidEvent as exc:
            raise BadRequest(f"labels[{i}].{exc}") from exc
    await _ingest(svc, svc.settings.topics.labels, [(lbl.join_key.encode(), lbl.to_json()) for lbl in labels])
    return IngestResponse(ids=[lbl.join_key for lbl in labels])


def _info(svc: Any, name: str) -> ModelInfo:
    loaded = svc.models.get(name)
    versions = svc.registry.versions(name)
    if loaded is None and not versions:
        raise ModelNotFound(f"no model named {name!r}")
    header = loaded.header if loaded else (versions[0].header if versions else {})
    return ModelInfo(
        name=name,
        current_version=svc.registry.current_version(name),
        loaded_version=loaded.version if loaded else None,
        view=header.get("view"),
        metrics=header.get("metrics") or {},
        counters=header.get("counters") or {},
        drifts=header.get("drifts") or [],
        versions=[
            VersionInfoOut(
                version=v.version,
                current=v.current,
                n_learned=v.header.get("n_learned"),
                offsets=v.header.get("offsets"),
                metrics=v.header.get("metrics"),
                saved_at=v.header.get("saved_at"),
            )
            for v in versions
        ],
    )


@router.get("/v1/models", response_model=list[ModelInfo], responses=errors(503))
async def list_models(svc: Annotated[Any, Depends(services)]) -> list[ModelInfo]:
    try:
        names = await asyncio.to_thread(svc.registry.names)
        return [await asyncio.to_thread(_info, svc, n) for n in names]
    except (RedisError, OSError) as exc:
        raise FeatureStoreUnavailable(f"the model registry is unreachable ({type(exc).__name__})") from exc


@router.get("/v1/models/{name}", response_model=ModelInfo, responses=errors(404, 422, 503))
async def get_model(name: str, svc: Annotated[Any, Depends(services)]) -> ModelInfo:
    try:
        return await asyncio.to_thread(_info, svc, name)
    except (RedisError, OSError) as exc:
        raise FeatureStoreUnavailable(f"the model registry is unreachable ({type(exc).__name__})") from exc


async def _set_version(svc: Any, name: str, version: int) -> ModelInfo:
    from streaming.learning.registry import NoValidVersion
    from streaming.learning.snapshot import SnapshotRejected

    if name not in await asyncio.to_thread(svc.registry.names):
        raise ModelNotFound(f"no model named {name!r}")
    known = [v.version for v in await asyncio.to_thread(svc.registry.versions, name)]
    if version not in known:
        raise ModelNotFound(f"model {name!r} has no version {version} (kept: {sorted(known)})")
    try:
        await asyncio.to_thread(svc.registry.set_current, name, version)
    except (NoValidVersion, SnapshotRejected) as exc:
        raise Conflict(f"version {version} cannot be served: {exc}") from exc
    await svc.models.refresh(name)
    return await asyncio.to_thread(_info, svc, name)


@router.post(
    "/v1/models/{name}/rollback", response_model=ModelInfo, dependencies=[Depends(admin_key)], responses=ADMIN
)
async def rollback(name: str, svc: Annotated[Any, Depends(services)]) -> ModelInfo:
    """Serve the version before the current one."""
    current = await asyncio.to_thread(svc.registry.current_version, name)
    older = [
        v.version
        for v in await asyncio.to_thread(svc.registry.versions, name)
        if current is not None and v.version < current
    ]
    if not older:
        if current is None:
            raise ModelNotFound(f"no model named {name!r}")
        raise Conflict(f"model {name!r} has no version before {current}")
    return await _set_version(svc, name, older[0])


@router.post(
    "/v1/models/{name}/promote/{version}",
    response_model=ModelInfo,
    dependencies=[Depends(admin_key)],
    responses=ADMIN,
)
async def promote(name: str, version: int, svc: Annotated[Any, Depends(services)]) -> ModelInfo:
    """Serve a given version."""
    return await _set_version(svc, name, version)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready: Redis unreachable or no model loaded"}})
async def readyz(svc: Annotated[Any, Depends(services)]) -> JSONResponse:
    try:
        redis_ok = bool(await svc.ping())
    except (RedisError, OSError):
        redis_ok = False
    loaded = {n: m.version for n, m in svc.models.models.items()}
    ready = redis_ok and bool(loaded)
    return JSONResponse({"ready": ready, "redis": redis_ok, "models": loaded}, 200 if ready else 503)
