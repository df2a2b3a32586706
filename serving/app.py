"""The scoring API: ``create_app(settings)`` builds a FastAPI app; clients and models are created in its
lifespan, never at import, all through :mod:`streaming.clients`. ``rivulet serve`` runs it with uvicorn.

    uvicorn --factory serving.app:create_app
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from features.definitions import load_views
from features.redis_store import RedisStore
from serving.auth import KeyRing, document_security, refuse_anonymous
from serving.bodies import components
from serving.dashboard import ASSETS, Assets, csp, page_html
from serving.errors import ServingError
from serving.lag import LagWatcher
from serving.metrics import watch_near_cache
from serving.middleware import BodyLimit, Measure, TrustedHosts, trusted_hosts
from serving.models import ModelCache
from serving.near_cache import NearCache, near_cached
from serving.outbox import Outbox
from serving.producer import ProducerSlot, WatchedProducer
from serving.routes import ROUTERS, ingest
from serving.routes.scoring import FastPredict
from serving.services import Services
from streaming.clients import (
    async_kafka_producer,
    async_redis,
    async_redis_node,
    keyring,
    registry_reader,
    registry_redis,
)
from streaming.logs import configure_logging, get_logger
from streaming.settings import Settings

__all__ = ["CLIENT_ID", "RedisServices", "create_app"]

log = get_logger("rivulet.serving")
CLIENT_ID = "rivulet-api"  # the API's Kafka client id (its producer of predictions, events and labels)
Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]
_DRAIN_S = 5.0  # longest wait at shutdown for the predictions still in the outbox
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


class RedisServices:
    """The services on Redis and Kafka (a :class:`serving.services.Services`), built in the lifespan from
    :mod:`streaming.clients`; tests and the embedded demo may pass their own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # the online store through a cluster client when RIVULET_REDIS_CLUSTER is on; the registry's
        # announcements through the node at redis_url (a cluster's PUBLISH reaches every node)
        self.redis = async_redis(settings)
        self._redis_store = RedisStore(self.redis, settings.redis_prefix)  # as clients.feature_store
        # in front of it, the near cache (RIVULET_NEAR_CACHE; off on a cluster): serving.near_cache
        self.store = near_cached(settings, self._redis_store)
        self.announcements = async_redis_node(settings)
        self._registry_client = registry_redis(settings, failover_s=0)  # a request does not wait
        # MissingKey without RIVULET_VERIFY_KEYS: no start
        self.registry = registry_reader(settings, self._registry_client)
        views = {v.name: v for v in load_views(settings.features_module)}
        self.models = ModelCache(self.registry, views)
        # replaced when it can no longer deliver, started in the background when Kafka is away at start-up
        self._producers = ProducerSlot(
            lambda broken: async_kafka_producer(
                settings, client_id=CLIENT_ID, make=functools.partial(WatchedProducer, broken)
            )
        )
        # each stage's lag from outside (RIVULET_SERVE_LAG_S; off: None), for /metrics and the dashboard
        self.lag = LagWatcher.of(settings, self.registry)

    async def start(self) -> None:
        if isinstance(self.store, NearCache):
            watch_near_cache(self.store)
            await self.store.start()  # tracking comes on in the background; reads go to Redis until then
        with contextlib.suppress(Exception):  # Redis may be down: readiness says so, the poll catches up
            await self.models.refresh_all()
        self.models.start(self.settings.serve_poll_s, self.announcements)
        if self.lag is not None:
            await self.lag.start()  # measures on a thread: start-up does not wait for Kafka
        await self._producers.start()

    @property
    def producer(self) -> AIOKafkaProducer | None:
        return self._producers.current

    async def ping(self) -> bool:
        """Is the feature store reachable (readiness)?"""
        return await self._redis_store.ping()

    async def stop(self) -> None:
        await self.models.stop()
        if self.lag is not None:
            await self.lag.stop()
        await self._producers.stop()
        await self.store.close()
        await self.announcements.aclose()
        self._registry_client.close()


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The API for ``settings``; ``services`` default to :class:`RedisServices` (the embedded demo passes
    its own). Keys and trusted hosts are read here, once."""
    settings = settings or Settings()
    configure_logging(settings)
    refuse_anonymous(settings)  # no API keys on a non-loopback address: refuse now (AnonymousApi)
    if services is None:
        keyring(settings)  # no verify keys: refuse now (MissingKey), not with a 500 on the first load

    # the schema and the docs are routes of serving.routes.ops (scope read), not FastAPI's anonymous ones;
    # no slash redirects: they answered before the key check with an absolute http:// URL built from Host,
    # which a client behind TLS termination follows, sending its key in clear text
    app = FastAPI(
        redirect_slashes=False,
        title="Rivulet scoring API",
        version="1",
        lifespan=_lifespan(lambda: services or RedisServices(settings)),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # FastAPI's native OpenTelemetry is off: Rivulet's metrics are Prometheus (/metrics), and checking
        # for a configured provider cost every request three environment lookups (3% of the API's CPU)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.keyring = KeyRing.from_settings(settings)
    linger_s = settings.producer_linger_ms / 1000
    app.state.outbox = Outbox(linger_s=linger_s, max_bytes=settings.max_message_bytes)
    app.state.dashboard_html = page_html()
    app.state.dashboard_csp = csp(app.state.dashboard_html)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/assets", Assets(directory=ASSETS), name="assets")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    _handle_errors(app)
    # outermost last: Measure -> TrustedHost -> BodyLimit -> FastPredict (the predict route's hot path) ->
    # FastAPI
    app.add_middleware(FastPredict)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(TrustedHosts, allowed_hosts=trusted_hosts(settings))
    app.add_middleware(Measure)
    return app


def _lifespan(build: Callable[[], Services]) -> Lifespan:
    """The app's lifespan: the services ``build()`` gives are started, kept on ``app.state.services``, and
    stopped after the predictions left in the outbox are sent."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = build()
        app.state.services = svc
        await svc.start()
        # what start-up loaded (models, clients) lives as long as the process: keep it out of the
        # collector's scans, which otherwise show up as latency spikes
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            # predictions answered just before shutdown are still in the outbox: send them before the
            # producer stops (bounded: a Kafka that is away must not hold the shutdown), and count what
            # Kafka has not acknowledged once it has stopped (its stop delivers what it can)
            left = await app.state.outbox.drain(_DRAIN_S)
            await svc.stop()
            left += app.state.outbox.close()
            if left:
                log.warning("predictions not published at shutdown", count=left)

    return lifespan


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The schema, built once: the routes', the bodies validated off the event loop, and each route's keys."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        routes = [route for router in ROUTERS for route in router.routes]
        schema = components(schema, ingest.BODIES)
        app.openapi_schema = document_security(schema, routes, app.state.keyring)
    return app.openapi_schema


def _handle_errors(app: FastAPI) -> None:
    """One handler per kind of error, each answering ``{"error": code, "detail": ...}``."""

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "detail": exc.detail}, exc.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            + (f" ({e['ctx']['error']})" if e.get("type") == "json_invalid" and e.get("ctx") else "")
            for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid_request", "detail": "; ".join(problems)}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", path=request.url.path, error=repr(exc))
        return JSONResponse({"error": "internal", "detail": "unexpected error; see the server log"}, 500)
