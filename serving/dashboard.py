"""The live dashboard: one HTML page (no build step: uPlot and a small script, served from
``streaming.assets``) that polls ``GET /v1/dashboard`` for, per model, metric curves over time, learning
throughput, feature freshness, the version history and drift events. The data are the registry's own: the
versions' headers and the monitoring samples the learner records at each checkpoint, so the page shows
the same thing for the embedded demo and for the real stack."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from redis.exceptions import RedisError

from serving.errors import FeatureStoreUnavailable
from serving.schemas import errors

__all__ = ["ASSETS", "dashboard_router"]

ASSETS = Path(str(resources.files("streaming.assets")))
dashboard_router = APIRouter()


async def _services(request: Request) -> Any:
    return request.app.state.services


def _model(svc: Any, name: str, points: int) -> dict[str, Any]:
    registry = svc.registry
    loaded = svc.models.get(name)
    versions = registry.versions(name)
    newest = versions[0].header if versions else {}
    return {
        "current_version": registry.current_version(name),
        "loaded_version": loaded.version if loaded else None,
        "view": newest.get("view"),
        "spec": newest.get("spec"),
        "learned": newest.get("n_learned"),
        "metrics": newest.get("metrics") or {},
        "counters": newest.get("counters") or {},
        "versions": [
            {
                "version": v.version,
                "current": v.current,
                "saved_at": v.header.get("saved_at"),
                "learned": v.header.get("n_learned"),
                "metrics": v.header.get("metrics") or {},
            }
            for v in versions
        ],
        "history": registry.history(name, points),
    }


def _snapshot(svc: Any, points: int) -> dict[str, Any]:
    import time

    return {
        "now": time.time(),
        "models": {name: _model(svc, name, points) for name in svc.registry.names()},
    }


@dashboard_router.get("/v1/dashboard", responses=errors(422, 503))
async def dashboard_data(
    svc: Annotated[Any, Depends(_services)],
    points: Annotated[int, Query(ge=1, le=2_000, description="Samples of history per model")] = 500,
) -> dict[str, Any]:
    """Everything the dashboard draws, per model: versions, the newest metrics and counters, and the
    monitoring history (one sample per checkpoint: metrics, learned/s, freshness, drifts)."""
    try:
        return await asyncio.to_thread(_snapshot, svc, points)
    except (RedisError, OSError) as exc:
        raise FeatureStoreUnavailable(f"the model registry is unreachable ({type(exc).__name__})") from exc


@dashboard_router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard_page() -> HTMLResponse:
    return HTMLResponse((ASSETS / "dashboard.html").read_text(encoding="utf-8"))
