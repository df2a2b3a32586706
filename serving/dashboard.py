"""The live dashboard: one HTML page (no build step: uPlot and a small script, served from
``serving.assets``) that polls ``GET /v1/dashboard`` for, per model, metric curves over time, learning
throughput, feature freshness, the version history and drift events. The data are the registry's own: the
versions' verified headers and the monitoring samples the learner records at each checkpoint, both read
through the typed views of :mod:`serving.headers` (no raw header is passed through), so the page shows the
same thing for the embedded demo and for the real stack.

The page itself (``/dashboard`` and ``/assets/*``) is anonymous: it is static and holds no data, and a
browser cannot send a key when it navigates. The data route needs the ``read`` scope when keys are
configured; the page then asks for a read key and sends it as ``X-API-Key`` (kept in the tab's
``sessionStorage``). The page renders text only (``textContent``, DOM nodes; no HTML from data) under a
strict Content-Security-Policy (:func:`csp`), so a hostile name in the registry is shown, never run.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope as ASGIScope

from serving.auth import Scope, scoped_route
from serving.headers import ListedVersion, Sample, VersionHeader
from serving.schemas import (
    Dashboard,
    DashboardModel,
    DashboardSample,
    DashboardStageLag,
    DashboardVersion,
    DecisionOut,
    errors,
)
from serving.services import Services, ServicesDep, registry_call

__all__ = ["ASSETS", "Assets", "csp", "page", "page_html", "read"]

ASSETS = Path(str(resources.files("serving.assets")))


class Assets(StaticFiles):
    """The page's scripts and styles (``/assets/*.js``, ``*.css``), anonymous; nothing else of the package
    directory (its ``__init__.py``, ``__pycache__``, licences) is served."""

    async def get_response(self, path: str, scope: ASGIScope) -> Response:
        if not path.endswith((".js", ".css")):
            raise HTTPException(404)
        return await super().get_response(path, scope)


def csp(html: str) -> str:
    """The page's Content-Security-Policy: scripts from this origin only (no inline script, no ``eval``),
    styles from this origin and the page's own ``<style>`` block by its hash, nothing else.

    >>> csp("<style>b{}</style>").split("; ")[2]
    "style-src 'self' 'sha256-7yqHVAesot11p6HczDsgKRipvI5UPgs97z80zNXlans='"
    """
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'"
        for block in re.findall(r"<style>(.*?)</style>", html, flags=re.S)
    )
    return (
        f"default-src 'none'; script-src 'self'; style-src 'self' {hashes}; connect-src 'self'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ).replace("  ", " ")


read = APIRouter(route_class=scoped_route(Scope.READ), tags=["read"])
page = APIRouter(route_class=scoped_route(Scope.PUBLIC))


def _model(svc: Services, name: str, points: int) -> DashboardModel:
    registry = svc.registry
    loaded = svc.models.get(name)
    versions = registry.versions(name)
    newest = VersionHeader.of(versions[0].header if versions else {})
    samples = [s for s in (Sample.of(raw) for raw in registry.history(name, points)) if s is not None]
    # quarantined until the learner checkpoints the model again (a restart resumes from its last good version)
    quarantined = bool(samples) and samples[-1].status == "quarantined"
    lifecycle = _lifecycle(svc, name) if "~" not in name else {}
    return DashboardModel(
        role=newest.role,
        **lifecycle,
        current_version=registry.current_version(name),
        loaded_version=loaded.version if loaded else None,
        view=newest.view,
        spec=newest.spec,
        learned=newest.learned,
        metrics=newest.metrics or {},
        counters=newest.counters or {},
        rejected=newest.rejected or {},
        status="quarantined" if quarantined else "ok",
        quarantine=samples[-1].quarantine if quarantined else None,
        versions=[DashboardVersion.model_validate(ListedVersion.of(v)) for v in versions],
        history=[DashboardSample.model_validate(s) for s in samples],
    )


def _lifecycle(svc: Services, spec: str) -> dict[str, Any]:
    """A spec's champion and latest decisions (a stored decision that is not one is left out)."""
    champion = svc.registry.champion(spec)
    if champion is None:
        return {}
    return {"champion": champion, "decisions": DecisionOut.kept(svc.registry, spec)}


def _snapshot(svc: Services, points: int) -> Dashboard:
    lag = (
        [DashboardStageLag.model_validate(v, from_attributes=True) for v in svc.lag.views()]
        if svc.lag
        else []
    )
    return Dashboard(
        now=time.time(), models={n: _model(svc, n, points) for n in svc.registry.names()}, lag=lag
    )


@read.get("/v1/dashboard", response_model=Dashboard, responses=errors(401, 403, 422, 503))
async def dashboard_data(
    svc: ServicesDep,
    points: Annotated[int, Query(ge=1, le=2_000, description="Samples of history per model")] = 500,
) -> Dashboard:
    """Everything the dashboard draws, per model: versions, the newest metrics and counters, and the
    monitoring history (one sample per checkpoint: metrics, learned/s, freshness, drifts); per stage, its
    lag as the API last measured it (:mod:`serving.lag`)."""
    return await registry_call(_snapshot, svc, points)


def page_html() -> str:
    """The page (read once, when the app is built: no file read on the event loop)."""
    return (ASSETS / "dashboard.html").read_text(encoding="utf-8")


@page.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard_page(request: Request) -> HTMLResponse:
    html = request.app.state.dashboard_html
    return HTMLResponse(html, headers={"Content-Security-Policy": request.app.state.dashboard_csp})
