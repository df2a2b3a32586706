"""Operations: liveness and readiness (anonymous), Prometheus metrics and the API's own schema and docs
(scope ``read``). ``/healthz`` touches nothing but the event loop: it answers as long as the loop runs."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.auth import Scope, scoped_route
from serving.services import STORE_ERRORS, ServicesDep

__all__ = ["public", "read"]

public = APIRouter(route_class=scoped_route(Scope.PUBLIC), tags=["ops"])
read = APIRouter(route_class=scoped_route(Scope.READ), tags=["read"])


@public.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process and its event loop answer (no dependency is checked)."""
    return {"status": "ok"}


@public.get("/readyz", responses={503: {"description": "Not ready: Redis unreachable or no model loaded"}})
async def readyz(svc: ServicesDep) -> JSONResponse:
    """Readiness: the online store answers and at least one model is loaded."""
    try:
        redis_ok = bool(await svc.ping())
    except STORE_ERRORS:
        redis_ok = False
    loaded = {n: m.version for n, m in svc.models.models.items()}
    ready = redis_ok and bool(loaded)
    # pid: which process answered, where several serve one port (rivulet serve --workers N)
    body = {"ready": ready, "redis": redis_ok, "models": loaded, "pid": os.getpid()}
    return JSONResponse(body, 200 if ready else 503)


@read.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@read.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@read.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - docs")
