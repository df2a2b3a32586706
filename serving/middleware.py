"""The API's pure ASGI middleware (no task or thread per request): request metrics with the security
headers every response carries, the body limit, and the trusted hosts.

Order, outermost first: metrics and headers (so a request refused for its Host is counted, as route
``unmatched`` status 400, and carries the security headers: a DNS-rebinding or Host-probing attempt shows
on /metrics), trusted hosts (a Host not in the list is a 400 before anything else runs: no body is read, no
key checked), body limit, then FastAPI (routing, the route's key check, body parsing, the handler).
"""

from __future__ import annotations

import time

from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import LATENCY_OF, REQUESTS_OF
from streaming.settings import Settings

__all__ = ["BodyLimit", "BodyTooLargeSignal", "Measure", "TrustedHosts", "trusted_hosts"]

NOSNIFF = (b"x-content-type-options", b"nosniff")


def trusted_hosts(settings: Settings) -> list[str]:
    """The Host names the API answers: ``settings.trusted_hosts``, or by default the bind address,
    ``localhost``, ``127.0.0.1`` and ``::1`` (any port; an IPv6 literal is written in brackets, as in a Host
    header). ``*`` allows any (behind a proxy that checks Host itself).

    >>> trusted_hosts(Settings(serve_host="10.0.0.5"))
    ['10.0.0.5', 'localhost', '127.0.0.1', '[::1]']
    >>> trusted_hosts(Settings(trusted_hosts="api.example.com, ::1"))
    ['api.example.com', '[::1]']
    """
    hosts = settings.trusted_hosts or [settings.serve_host, "localhost", "127.0.0.1", "::1"]
    out: list[str] = []
    for host in hosts:
        h = f"[{host}]" if ":" in host and not host.startswith("[") else host
        if h not in out:
            out.append(h)
    return out


class TrustedHosts:
    """Starlette's :class:`TrustedHostMiddleware` (``www_redirect`` off: the API never redirects), and exactly
    one ``Host`` header: a request with two (``Host: localhost`` then ``Host: evil.example``) is a 400, as
    RFC 9112 (section 3.2) requires, since Starlette would check the first while a proxy in front may route
    on the last. (An absolute-form request target, ``GET http://evil.example/ HTTP/1.1``, cannot be seen
    here: uvicorn's httptools parser keeps only its path; a browser never sends one to an origin server.)"""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = TrustedHostMiddleware(app, allowed_hosts=allowed_hosts, www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and [n for n, _ in scope["headers"] if n == b"host"][1:]:
            await PlainTextResponse("Invalid host header", status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Measure:
    """Request count and latency per route, and ``X-Content-Type-Options: nosniff`` on every response."""

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
                headers = message.get("headers")
                if isinstance(headers, list):
                    headers.append(NOSNIFF)
                else:
                    message["headers"] = [*(headers or ()), NOSNIFF]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            LATENCY_OF(path).observe(time.perf_counter() - started)
            REQUESTS_OF(path, str(status[0])).inc()


class BodyTooLargeSignal(HTTPException):
    """Raised from ``receive`` when the body passes the limit. An :class:`HTTPException` on purpose: FastAPI's
    body parsing turns any other exception from ``receive`` into a 400 ("There was an error parsing the
    body"), but lets an ``HTTPException`` through to the app's handler, which answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class BodyLimit:
    """413 for a body over ``limit`` bytes, whether it declares its length (refused before it is read) or
    not (chunked: refused as soon as the bytes read pass the limit)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.limit:
                    await _too_large(self.limit, send)
                    return
                break
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLargeSignal(self.limit)
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLargeSignal:  # the body read outside a route's exception handling: still a 413
            await _too_large(self.limit, send)


async def _too_large(limit: int, send: Send) -> None:
    body = b'{"error":"too_large","detail":"request body over %d bytes"}' % limit
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
