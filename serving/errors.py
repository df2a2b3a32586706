"""Errors of the scoring API. Only this package speaks HTTP: each error carries its status code and a stable
``code``, and one handler in :mod:`serving.app` turns any of them into ``{"error": code, "detail": ...}``.

The tree (status code, ``code``)::

    ServingError                      500 internal          root of every error of this package
    ├── AnonymousApi                  (start-up)            no API keys on a non-loopback address
    ├── BadRequest                    400 bad_request       a well-formed body the API refuses (an item named)
    │   ├── InvalidLabelRequest       400 invalid_label     a label no served model of its kind could take
    │   └── Unscorable                400 unscorable        a request the model cannot score (the item named)
    ├── Unauthorized                  401 unauthorized      no API key (X-API-Key or Authorization: Bearer)
    ├── Forbidden                     403 forbidden         a key without the route's scope
    ├── ModelNotFound                 404 model_not_found
    ├── Conflict                      409 conflict          e.g. no version to roll back to
    ├── BodyTooLarge                  413 too_large         over ``max_request_bytes``, chunked or not
    └── Unavailable                   503 (abstract)        a dependency or a model is not there (yet)
        ├── NoModelLoaded             503 model_not_loaded
        ├── FeatureStoreUnavailable   503 feature_store_unavailable
        ├── RegistryUnavailable       503 registry_unavailable
        └── KafkaUnavailable          503 kafka_unavailable

Besides these, FastAPI's own: 404 ``not_found`` (no such route), 405 ``method_not_allowed``, 413
``too_large`` (a body read past the limit inside a route), 422 ``invalid_request`` (a body or parameter that
does not match the schema), and Starlette's plain-text 400 ``Invalid host header`` (a Host not in
``trusted_hosts``).

>>> e = ModelNotFound("no model named 'x'")
>>> e.status_code, e.code, str(e), isinstance(e, ServingError)
(404, 'model_not_found', "no model named 'x'", True)
"""

from __future__ import annotations

from streaming.errors import StreamingError

__all__ = [
    "AnonymousApi",
    "BadRequest",
    "BodyTooLarge",
    "Conflict",
    "FeatureStoreUnavailable",
    "Forbidden",
    "InvalidLabelRequest",
    "KafkaUnavailable",
    "ModelNotFound",
    "NoModelLoaded",
    "RegistryUnavailable",
    "ServingError",
    "Unauthorized",
    "Unavailable",
    "Unscorable",
]


class ServingError(Exception):
    """Root of the API's errors; ``status_code`` and ``code`` say how it is answered. A subclass states
    them in its class line (``class Gone(ServingError, status_code=410, code="gone")``), or inherits them."""

    status_code = 500
    code = "internal"

    def __init_subclass__(cls, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init_subclass__()
        if status_code is not None:
            cls.status_code = status_code
        if code is not None:
            cls.code = code

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class AnonymousApi(ServingError, StreamingError):
    """The API would serve anonymously (no API key of any scope configured) on an address other than
    loopback, without ``RIVULET_ALLOW_ANONYMOUS=true``: refused at start (also a :class:`StreamingError`, so
    the CLI reports it on one line as it does a missing verify key)."""

    def __init__(self, host: str) -> None:
        super().__init__(
            f"the API would be open to anyone on {host!r} (not a loopback address): no API keys are set. "
            "Set RIVULET_SCORING_API_KEYS, RIVULET_INGEST_API_KEYS, RIVULET_READ_API_KEYS and "
            "RIVULET_ADMIN_API_KEYS (`rivulet keys generate --api-keys` prints one of each), bind 127.0.0.1, "
            "or set RIVULET_ALLOW_ANONYMOUS=true to serve anonymously on purpose"
        )


class BadRequest(ServingError, status_code=400, code="bad_request"):
    """A well-formed body the API refuses; the detail names the item."""


class InvalidLabelRequest(BadRequest, code="invalid_label"):
    """A label no served model of its kind could take."""


class Unscorable(BadRequest, code="unscorable"):
    """A request the model cannot score (the item named)."""


class Unauthorized(ServingError, status_code=401, code="unauthorized"):
    """No API key (``X-API-Key`` or ``Authorization: Bearer``); an unknown key is :class:`Forbidden`."""


class Forbidden(ServingError, status_code=403, code="forbidden"):
    """A key without the route's scope (an unknown key has none), or admin routes with no admin key set."""


class ModelNotFound(ServingError, status_code=404, code="model_not_found"):
    """No model (or no such version of it) in the registry."""


class Conflict(ServingError, status_code=409, code="conflict"):
    """The registry's state forbids it, e.g. no version to roll back to."""


class BodyTooLarge(ServingError, status_code=413, code="too_large"):
    """A body over ``max_request_bytes``, chunked or not."""


class Unavailable(ServingError, status_code=503, code="unavailable"):
    """A dependency or a model is not there (yet); the subclasses say which."""


class NoModelLoaded(Unavailable, code="model_not_loaded"):
    """The model is known but no version of it is loaded."""


class FeatureStoreUnavailable(Unavailable, code="feature_store_unavailable"):
    """The online feature store does not answer."""


class RegistryUnavailable(Unavailable, code="registry_unavailable"):
    """The model registry does not answer."""


class KafkaUnavailable(Unavailable, code="kafka_unavailable"):
    """Kafka does not take the records (the detail says which may have been accepted)."""
