"""Models: listings and details (scope ``read``), promote and roll back (scope ``admin``). Every registry
call runs off the event loop (the registry client is synchronous); what is shown comes from verified
headers through :class:`serving.headers.VersionHeader`, never a raw header."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from redis.exceptions import RedisError

from serving.auth import Scope, scoped_route
from serving.errors import Conflict, ModelNotFound, RegistryUnavailable
from serving.headers import ListedVersion, VersionHeader
from serving.schemas import DecisionOut, DriftOut, ModelInfo, VersionInfoOut, errors
from serving.services import Services, ServicesDep, registry_call
from streaming.learning.registry import NoValidVersion
from streaming.learning.snapshot import SnapshotRejected

__all__ = ["admin", "model_info", "read"]

read = APIRouter(route_class=scoped_route(Scope.READ), tags=["read"])
admin = APIRouter(route_class=scoped_route(Scope.ADMIN), tags=["admin"])
ADMIN = errors(401, 403, 404, 409, 413, 422, 503)


def model_info(svc: Services, name: str) -> ModelInfo:
    """A model's details (blocking: call it in a thread)."""
    loaded = svc.models.get(name)
    versions = svc.registry.versions(name)
    if loaded is None and not versions:
        raise ModelNotFound(f"no model named {name!r}")
    header = VersionHeader.of(loaded.header if loaded else (versions[0].header if versions else {}))
    lifecycle = _lifecycle(svc, name) if "~" not in name else {}
    return ModelInfo(
        name=name,
        current_version=svc.registry.current_version(name),
        loaded_version=loaded.version if loaded else None,
        role=header.role,
        **lifecycle,
        view=header.view,
        metrics=header.metrics or {},
        counters=header.counters or {},
        rejected=header.rejected or {},
        drifts=[DriftOut.of(d) for d in header.drifts],
        versions=[VersionInfoOut.model_validate(ListedVersion.of(v)) for v in versions],
    )


def _lifecycle(svc: Services, spec: str) -> dict[str, Any]:
    """A spec's champion, running challengers and latest decisions (what the registry holds is checked:
    a decision that is not one is left out)."""
    champion = svc.registry.champion(spec)
    decisions = DecisionOut.kept(svc.registry, spec)
    if champion is None and not decisions:
        return {}
    challengers = []
    for name in svc.registry.names():
        if name.startswith(f"{spec}~"):
            current = next((v for v in svc.registry.versions(name) if v.current), None)
            if current is not None and VersionHeader.of(current.header).role == "challenger":
                challengers.append(name)
    return {"champion": champion, "challengers": challengers, "decisions": decisions}


def _all(svc: Services) -> list[ModelInfo]:
    return [model_info(svc, n) for n in svc.registry.names()]


@read.get("/v1/models", response_model=list[ModelInfo], responses=errors(401, 403, 503))
async def list_models(svc: ServicesDep) -> list[ModelInfo]:
    return await registry_call(_all, svc)


@read.get("/v1/models/{name}", response_model=ModelInfo, responses=errors(401, 403, 404, 422, 503))
async def get_model(name: str, svc: ServicesDep) -> ModelInfo:
    return await registry_call(model_info, svc, name)


async def _set_version(svc: Services, name: str, version: int) -> ModelInfo:
    registry = svc.registry
    if name not in await registry_call(registry.names):
        raise ModelNotFound(f"no model named {name!r}")
    known = [v.version for v in await registry_call(registry.versions, name)]
    if version not in known:
        raise ModelNotFound(f"model {name!r} has no version {version} (kept: {sorted(known)})")
    try:
        await registry_call(registry.set_current, name, version)
    except (NoValidVersion, SnapshotRejected) as exc:
        raise Conflict(f"version {version} cannot be served: {exc}") from exc
    try:
        await svc.models.refresh(name)
    except (RedisError, OSError) as exc:
        raise RegistryUnavailable(f"the model registry is unreachable ({type(exc).__name__})") from exc
    return await registry_call(model_info, svc, name)


@admin.post("/v1/models/{name}/rollback", response_model=ModelInfo, responses=ADMIN)
async def rollback(name: str, svc: ServicesDep) -> ModelInfo:
    """Serve the version before the current one."""
    current = await registry_call(svc.registry.current_version, name)
    older = [
        v.version
        for v in await registry_call(svc.registry.versions, name)
        if current is not None and v.version < current
    ]
    if not older:
        if current is None:
            raise ModelNotFound(f"no model named {name!r}")
        raise Conflict(f"model {name!r} has no version before {current}")
    return await _set_version(svc, name, older[0])


@admin.post("/v1/models/{name}/promote/{version}", response_model=ModelInfo, responses=ADMIN)
async def promote(name: str, version: int, svc: ServicesDep) -> ModelInfo:
    """Serve a given version."""
    return await _set_version(svc, name, version)
