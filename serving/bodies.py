"""Large request bodies validated off the event loop.

FastAPI validates a declared body on the event loop: for ``POST /v1/events`` with 10 000 events that is
about 0.3 s of pydantic (and as much again for the SDK's checks of each event), during which no other
request of the replica, scoring included, is served. The ingest routes take the raw body instead and hand
parsing and validation to a thread (:func:`validated`); the errors are the same 422 as FastAPI's, and the
OpenAPI schema still names the body's model (:func:`json_body` and :func:`components`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from serving.auth import parse_json

__all__ = ["components", "json_body", "validated"]

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of a route whose JSON body is ``model`` (its schema in :func:`components`)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def components(schema: dict[str, Any], models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """Add ``models`` (and the models they use) to an OpenAPI ``schema``'s components."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        own = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in own.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = own
    return schema


def _invalid(errors: list[Any]) -> RequestValidationError:
    return RequestValidationError(errors)


def _parse(body: bytes, model: type[M], then: Callable[[M], R]) -> R:
    if not body:
        raise _invalid([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        data = parse_json(body)
    except json.JSONDecodeError as exc:
        error = {"error": exc.msg}
        raise _invalid(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "ctx": error}]
        ) from None
    try:
        value = model.model_validate(data)
    except ValidationError as exc:
        raise _invalid([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]) from None
    return then(value)


async def validated(request: Request, model: type[M], then: Callable[[M], R]) -> R:
    """The request's JSON body as ``model``, passed to ``then``: parsing, validation and ``then`` run in a
    thread. A body not sent as ``application/json`` is refused as FastAPI does (422)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise _invalid(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ("body",),
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": None,
                }
            ]
        )
    body = await request.body()
    return await asyncio.to_thread(_parse, body, model, then)
