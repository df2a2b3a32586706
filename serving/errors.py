"""Errors of the scoring API. Only this package speaks HTTP: each error carries its status code, and one
handler in :mod:`serving.app` turns it into a JSON body ``{"error": ..., "detail": ...}``."""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Conflict",
    "FeatureStoreUnavailable",
    "Forbidden",
    "ModelNotFound",
    "NoModelLoaded",
    "ServingError",
    "Unauthorized",
]


class ServingError(Exception):
    status_code = 500
    code = "internal"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class ModelNotFound(ServingError):
    status_code = 404
    code = "model_not_found"


class NoModelLoaded(ServingError):
    status_code = 503
    code = "model_not_loaded"


class FeatureStoreUnavailable(ServingError):
    status_code = 503
    code = "feature_store_unavailable"


class BadRequest(ServingError):
    status_code = 400
    code = "bad_request"


class Conflict(ServingError):
    status_code = 409
    code = "conflict"


class Unauthorized(ServingError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ServingError):
    status_code = 403
    code = "forbidden"
