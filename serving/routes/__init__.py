"""The API's routes, one module per resource; each router's route class carries the scope its routes need
(:func:`serving.auth.scoped_route`):

- :mod:`~serving.routes.scoring`: predict, batch predict (``score``);
- :mod:`~serving.routes.ingest`: events and labels (``ingest``);
- :mod:`~serving.routes.models`: listings and details (``read``), rollback and promote (``admin``);
- :mod:`~serving.routes.ops`: ``/healthz``, ``/readyz`` (anonymous), ``/metrics``, ``/openapi.json``,
  ``/docs`` (``read``);
- :mod:`serving.dashboard`: ``/v1/dashboard`` (``read``) and the page (anonymous).
"""

from __future__ import annotations

from fastapi import APIRouter

from serving import dashboard
from serving.routes import ingest, models, ops, scoring

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    scoring.router,
    ingest.router,
    models.read,
    models.admin,
    ops.public,
    ops.read,
    dashboard.read,
    dashboard.page,
)
