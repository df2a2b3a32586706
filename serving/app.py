"""The scoring API: ``create_app(settings)`` builds a FastAPI app; clients and models are created in its
lifespan, never at import. ``rivulet serve`` runs it with uvicorn.

    uvicorn --factory serving.app:create_app
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.definitions import load_views
from features.redis_store import RedisStore
from serving.dashboard import ASSETS, dashboard_router
from serving.errors import ServingError
from serving.models import ModelCache
from serving.routes import router
from streaming.clients import keyring, registry_reader
from streaming.logs import configure_logging, get_logger
from streaming.settings import Settings

__all__ = ["Services", "create_app"]

log = get_logger("rivulet.serving")
REQUESTS = Counter("rivulet_http_requests_total", "HTTP requests", ["route", "status"])
LATENCY = Histogram(
    "rivulet_http_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)


class Services:
    """What the routes use, built in the lifespan (tests may pass their own)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_socket_timeout_s,
            socket_connect_timeout=settings.redis_connect_timeout_s,
        )
        self.store = RedisStore(self.redis, settings.redis_prefix)
        self.registry = registry_reader(settings)  # MissingKey without RIVULET_VERIFY_KEYS: no start
        views = {v.name: v for v in load_views(settings.features_module)}
        self.models = ModelCache(self.registry, views)
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        with contextlib.suppress(Exception):  # Redis may be down: readiness says so, the poll catches up
            await self.models.refresh_all()
        self.models.start(self.settings.serve_poll_s, self.redis)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.settings.producer_linger_ms,
            request_timeout_ms=self.settings.kafka_request_timeout_ms,
        )
        try:
            await producer.start()
            self.producer = producer
        except Exception as exc:  # scoring works without Kafka; predictions are not published then
            log.error("kafka unavailable: predictions will not be published", error=str(exc))
            with contextlib.suppress(Exception):
                await producer.stop()

    async def ping(self) -> bool:
        """Is the feature store reachable (readiness)?"""
        return bool(await self.redis.ping())

    async def stop(self) -> None:
        await self.models.stop()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()
        await self.redis.aclose()
        self.registry._r.close()


class Measure:
    """Request count and latency per route (pure ASGI: no task or thread per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            LATENCY.labels(path).observe(time.perf_counter() - started)
            REQUESTS.labels(path, str(status[0])).inc()


class BodyLimit:
    """413 for a body over ``limit`` bytes, whether or not it declares its length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(self.limit, send)


class _TooLarge(Exception):
    pass


async def _too_large(limit: int, send: Send) -> None:
    body = JSONResponse({"error": "too_large", "detail": f"request body over {limit} bytes"}, 413).body
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None, services: Any = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings)
    if services is None:
        keyring(settings)  # no verify keys: refuse now (MissingKey), not with a 500 on the first load

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = services or Services(settings)
        app.state.services = svc
        await svc.start()
        # what start-up loaded (models, clients) lives as long as the process: keep it out of the
        # collector's scans, which otherwise show up as latency spikes
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await svc.stop()

    app = FastAPI(title="Rivulet scoring API", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.include_router(router)
    app.include_router(dashboard_router)
    app.mount("/assets", StaticFiles(directory=ASSETS), name="assets")

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "detail": exc.detail}, exc.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse({"error": code, "detail": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid_request", "detail": "; ".join(problems)}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", path=request.url.path, error=repr(exc))
        return JSONResponse({"error": "internal", "detail": "unexpected error; see the server log"}, 500)

    app.add_middleware(Measure)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    return app
