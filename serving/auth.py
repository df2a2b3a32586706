"""API keys and scopes: who may call which route.

Four scopes, each with its own keys (``RIVULET_<SCOPE>_API_KEYS``, comma separated):

======  ==============================================================  ==========================
scope   routes                                                          keys
======  ==============================================================  ==========================
score   ``POST /v1/models/{name}/predict``, ``.../predict/batch``         ``scoring_api_keys``
ingest  ``POST /v1/events``, ``POST /v1/labels`` (writes training data)   ``ingest_api_keys``
read    ``GET /v1/models``, ``/v1/models/{name}``, ``/v1/dashboard``,       ``read_api_keys``
        ``/metrics``, ``/openapi.json``, ``/docs``
admin   ``POST .../rollback``, ``.../promote/{version}``                  ``admin_api_keys``
======  ==============================================================  ==========================

An admin key also has the ``read`` scope (an operator choosing a version to promote reads the listings;
the admin routes answer with a model's details anyway), and nothing else: a leaked admin key does not
write training data nor score. The same key listed under several scopes has all of them.

When no key of any scope is configured, every route but the admin ones is open (the loopback default);
admin routes always need an admin key. When any key is configured, only ``/healthz``, ``/readyz`` and the
dashboard's shell (``/dashboard``, ``/assets/*``: static files, no data) are anonymous.

A key is sent as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (what Prometheus sends). It is
compared with every configured key in constant time (:func:`hmac.compare_digest`, no early exit). The check
runs in the matched route before its body is read (then parsed by :class:`JsonRequest`), so a caller
without a key gets 401 (403 with a key of another scope), never a 422 about a body it may not send (a body
that *declares* a length over the limit is refused with 413 before routing, unread).

>>> ring = KeyRing.build(score=["s1"], read=["r1"], admin=["a1"])
>>> sorted(map(str, ring.scopes_of(b"a1"))), sorted(map(str, ring.scopes_of(b"s1"))), ring.scopes_of(b"nope")
(['admin', 'read'], ['score'], frozenset())
>>> ring.check([(b"x-api-key", b"r1")], Scope.READ)
>>> ring.check([(b"authorization", b"Bearer s1")], Scope.READ)
Traceback (most recent call last):
...
serving.errors.Forbidden: this API key does not have the 'read' scope
>>> KeyRing.build().check([], Scope.SCORE)  # no keys anywhere: open
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from serving.errors import AnonymousApi, Forbidden, Unauthorized
from streaming.settings import Settings

__all__ = [
    "JsonRequest",
    "KeyRing",
    "Scope",
    "document_security",
    "is_loopback",
    "parse_json",
    "refuse_anonymous",
    "scoped_route",
]


class Scope(StrEnum):
    PUBLIC = "public"
    READ = "read"
    SCORE = "score"
    INGEST = "ingest"
    ADMIN = "admin"


_IMPLIED: dict[Scope, frozenset[Scope]] = {
    Scope.ADMIN: frozenset({Scope.ADMIN, Scope.READ}),
    Scope.READ: frozenset({Scope.READ}),
    Scope.SCORE: frozenset({Scope.SCORE}),
    Scope.INGEST: frozenset({Scope.INGEST}),
}


def _presented(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request presents: ``X-API-Key`` or ``Authorization: Bearer`` (ASGI headers are
    lower-cased names)."""
    for name, value in headers:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return None


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The configured keys and the scopes each grants."""

    keys: tuple[tuple[bytes, frozenset[Scope]], ...]
    configured: frozenset[Scope]  # scopes with at least one key

    @classmethod
    def build(
        cls,
        *,
        score: Sequence[str] = (),
        ingest: Sequence[str] = (),
        read: Sequence[str] = (),
        admin: Sequence[str] = (),
    ) -> KeyRing:
        granted: dict[bytes, frozenset[Scope]] = {}
        lists = {Scope.SCORE: score, Scope.INGEST: ingest, Scope.READ: read, Scope.ADMIN: admin}
        for scope, keys in lists.items():
            for key in keys:
                k = key.encode()
                if k:
                    granted[k] = granted.get(k, frozenset()) | _IMPLIED[scope]
        return cls(tuple(granted.items()), frozenset(s for s, keys in lists.items() if keys))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        return cls.build(
            score=settings.scoring_api_keys,
            ingest=settings.ingest_api_keys,
            read=settings.read_api_keys,
            admin=settings.admin_api_keys,
        )

    @property
    def enabled(self) -> bool:
        """Is any key configured (then nothing but the public routes is anonymous)?"""
        return bool(self.keys)

    def scopes_of(self, given: bytes) -> frozenset[Scope]:
        """The scopes of a presented key; every configured key is compared, in constant time."""
        scopes: frozenset[Scope] = frozenset()
        for key, granted in self.keys:
            if hmac.compare_digest(given, key):
                scopes = granted
        return scopes

    def check(self, headers: Iterable[tuple[bytes, bytes]], needed: Scope) -> None:
        """Raise :class:`Unauthorized` or :class:`Forbidden` unless the request may use ``needed``."""
        if needed is Scope.PUBLIC or (not self.keys and needed is not Scope.ADMIN):
            return
        if needed is Scope.ADMIN and Scope.ADMIN not in self.configured:
            raise Forbidden("admin endpoints are disabled: no RIVULET_ADMIN_API_KEYS configured")
        given = _presented(headers)
        if not given:
            raise Unauthorized("an API key is required (header X-API-Key or Authorization: Bearer)")
        if needed not in self.scopes_of(given):
            raise Forbidden(f"this API key does not have the {needed.value!r} scope")


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (only this machine reaches it)?

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::", "10.0.0.5", "api")]
    [True, True, True, False, False, False, False]
    """
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def refuse_anonymous(settings: Settings, host: str | None = None) -> None:
    """Refuse (:class:`AnonymousApi`) to serve with no API key of any scope on ``host`` (default
    ``settings.serve_host``) when it is not a loopback address, unless ``settings.allow_anonymous``.

    >>> refuse_anonymous(Settings(serve_host="127.0.0.1"))  # loopback: open is fine (a local demo)
    >>> refuse_anonymous(Settings(serve_host="0.0.0.0", read_api_keys="r"))  # keys: fine
    >>> refuse_anonymous(Settings(serve_host="0.0.0.0", allow_anonymous=True))  # on purpose: fine
    >>> refuse_anonymous(Settings(serve_host="0.0.0.0"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    serving.errors.AnonymousApi: the API would be open to anyone on '0.0.0.0' ...
    """
    host = host or settings.serve_host
    if KeyRing.from_settings(settings).enabled or settings.allow_anonymous or is_loopback(host):
        return
    raise AnonymousApi(host)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class JsonRequest(Request):
    """A request whose JSON body is parsed by orjson (fast: the scoring hot path), and refused when it holds
    what the rest of Rivulet cannot write: a lone surrogate (``"\\ud800"``, valid JSON but not Unicode: the
    stdlib parser took it in a predict field, the prediction was answered and then silently never
    published). A body orjson refuses, or one with an integer orjson would round (19 digits or more), is
    parsed by the stdlib, exactly, and checked for surrogates (``10**400``, ``2**64`` or ``NaN`` then fail the
    schema naming the field). The errors are the stdlib's
    ``JSONDecodeError`` (orjson's is a subclass): FastAPI answers 422 ``invalid_request``."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


def parse_json(body: bytes) -> Any:
    """``body`` parsed as :class:`JsonRequest` does (blocking: CPU, no I/O)."""
    try:
        if _LONG_NUMBER.search(body):  # orjson reads an integer past 64 bits as a rounded float
            raise orjson.JSONDecodeError("an integer past 64 bits", body.decode("latin-1"), 0)
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _stdlib_json(body, exc)


_LONG_NUMBER = re.compile(rb"\d{19}")  # maybe past 64 bits (or a long digit string): the stdlib is exact


_MAX_DIGITS = 4300  # Python's default int-string limit: int() of a longer literal raises a plain ValueError


def _exact_int(literal: str) -> int | float:
    """A JSON integer literal, exact; one of more than 4 300 digits (which ``int()`` refuses with a plain
    ``ValueError``: a 500 before) is an infinity of its sign, which every request schema refuses as it does
    ``1e400``, naming the field (422).

    >>> _exact_int("-12"), _exact_int("9" * 5000), _exact_int("-" + "9" * 5000)
    (-12, inf, -inf)
    """
    if len(literal) - literal.startswith("-") > _MAX_DIGITS:
        return float("-inf") if literal.startswith("-") else float("inf")
    return int(literal)


def _stdlib_json(body: bytes, refused: orjson.JSONDecodeError) -> Any:
    """``body`` parsed by the stdlib after orjson refused it (``refused``): the value when only numbers were
    the problem (the schema then names the field), else orjson's error."""
    try:
        value = json.loads(body, parse_int=_exact_int)
    except (RecursionError, UnicodeDecodeError):
        raise refused from None  # nested deeper than orjson's 1024 levels, or not UTF-8 text
    except ValueError:  # anything else the stdlib refuses (not a JSONDecodeError): undecodable, never a 500
        raise refused from None
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                raise json.JSONDecodeError("a string holds a lone surrogate (not Unicode)", "", 0) from None
    return value


def scoped_route(needed: Scope) -> type[APIRoute]:
    """An :class:`APIRoute` class whose routes check the key for ``needed`` before anything else (before
    the body is read or validated). The app's :class:`KeyRing` is ``app.state.keyring``."""

    class ScopedRoute(APIRoute):
        scope = needed

        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                if needed is not Scope.PUBLIC:
                    request.app.state.keyring.check(request.scope["headers"], needed)
                return await handler(JsonRequest(request.scope, request.receive))

            return guarded

    ScopedRoute.__name__ = ScopedRoute.__qualname__ = f"{needed.name.title()}Route"
    return ScopedRoute


def document_security(schema: dict[str, Any], routes: Iterable[Any], keyring: KeyRing) -> dict[str, Any]:
    """Declare the API-key scheme in an OpenAPI ``schema`` and mark each operation that needs a key: every
    scoped one when any key is configured, the admin ones always."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["ApiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    schemes["Bearer"] = {"type": "http", "scheme": "bearer"}
    paths = schema.get("paths", {})
    for route in routes:
        needed = getattr(route, "scope", None)
        if not isinstance(needed, Scope) or needed is Scope.PUBLIC or route.path not in paths:
            continue
        if needed is not Scope.ADMIN and not keyring.enabled:
            continue
        for method in route.methods or ():
            operation = paths[route.path].get(method.lower())
            if operation is not None:
                operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
                operation.setdefault("description", "")
                operation["description"] += f"\n\nScope: `{needed.value}`."
    return schema
