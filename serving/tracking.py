"""Redis server-assisted client-side caching: one RESP3 connection that receives invalidations.

:class:`Tracker` keeps one connection to Redis in ``CLIENT TRACKING on BCAST PREFIX <prefix>``: Redis
pushes an ``invalidate`` message naming every key under the prefix that changes (a write, a delete, an
expiry, an eviction; ``null`` for ``FLUSHDB``/``FLUSHALL``), whoever read it and on whatever connection.
Broadcast mode needs nothing on the connections that read, so the store's reads keep redis-py's pool and
its pipelines; the cost is one message per write under the prefix (Redis sends a write batch's keys in one
message per event-loop turn), whether or not the key is cached.

The connection is an :class:`asyncio.Protocol` over hiredis, not a redis-py client: redis-py 8.1's asyncio
client has no client-side caching (``cache_config`` is the synchronous client's only, and it needs Redis
7.4, caches single commands, not pipelines, and reads invalidations only when it next sends a command on
that connection), and a push must be applied the moment its bytes reach the event loop: ``data_received``
calls the sink synchronously, before any task resumes, so a request handled after the loop read an
invalidation cannot be served the old value. A closed connection (``CLIENT KILL``, Redis stopped or
restarted) is seen the same way (``eof_received``/``connection_lost``), and a silent one by a ``PING`` every
``ping_s`` that must answer within ``timeout_s``. The sink is told:

- ``lost()``: the connection is gone or failing; the cache must empty itself and stop serving;
- ``established()``: tracking is on again (after ``CLIENT TRACKING`` answered OK); the cache starts empty;
- ``invalidate(keys)``: those keys changed (``None``: all of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio.connection import parse_url

from streaming.logs import get_logger

__all__ = ["NAME", "Sink", "Tracker"]

log = get_logger("rivulet.tracking")
NAME = "rivulet-near-cache"  # the connection's CLIENT SETNAME (what CLIENT LIST shows)
RETRY_S = (0.05, 0.1, 0.25, 0.5, 1.0)  # pauses between reconnections, the last repeated


class Sink(Protocol):
    def invalidate(self, keys: list[bytes] | None) -> None: ...

    def lost(self) -> None: ...

    def established(self) -> None: ...


class TrackingError(Exception):
    """The tracking connection answered with an error or not at all."""


class _Connection(asyncio.Protocol):
    """One RESP3 connection: commands answered in order, pushes handed to the sink as they arrive."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        if self.closed.done():  # given up on (a ping unanswered): nothing it says counts any more
            return
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if isinstance(reply, hiredis.PushNotification):
                    if reply and reply[0] == b"invalidate":
                        self._sink.invalidate(reply[1] if len(reply) > 1 else None)
                elif self._waiting:
                    waiter = self._waiting.popleft()
                    if not waiter.done():
                        waiter.set_result(reply)
        except hiredis.ProtocolError:
            self._gone()

    def eof_received(self) -> bool:
        self._gone()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()

    def _gone(self) -> None:
        """The connection is no more: the sink empties its cache now, in this callback. Once: a callback
        of a connection already given up on must not touch the cache that a newer one fills."""
        if self.closed.done():
            return
        self._sink.lost()
        if self.transport is not None:
            self.transport.abort()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(TrackingError("the tracking connection was lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        self._gone()

    async def command(self, timeout_s: float, *args: str | bytes) -> Any:
        if self.closed.done() or self.transport is None:
            raise TrackingError("the tracking connection was lost")
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self.transport.write(hiredis.pack_command(args))  # type: ignore[arg-type]
        async with asyncio.timeout(timeout_s):  # not wait_for: in 3.11 it can swallow a cancellation
            reply = await waiter
        if isinstance(reply, hiredis.ReplyError):
            raise TrackingError(f"{args[0]!r}: {reply}")
        return reply


class Tracker:
    """Keeps a tracking connection to ``url`` for the keys under ``prefix`` and tells ``sink`` (see the
    module docstring). ``start()`` returns at once; the sink hears ``established()`` once tracking is on."""

    def __init__(
        self, url: str, prefix: str, sink: Sink, *, ping_s: float = 1.0, timeout_s: float = 2.0
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._sink = sink
        self._ping_s = ping_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failures = 0  # sessions that failed in a row
        self._conn: _Connection | None = None
        self.sessions = 0  # connections that got tracking on (a count for tests and logs)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="near-cache-tracking")

    async def stop(self) -> None:
        self._stopping = True  # as well as the cancellation: a loop that missed it ends at its next turn
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._sink.lost()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._session()
            except (OSError, TimeoutError, TrackingError) as exc:
                if self._failures == 0:
                    log.warning("near cache: tracking lost; reads go to Redis", error=repr(exc))
            finally:
                self._sink.lost()
                if self._conn is not None:
                    self._conn.close()
            self._failures += 1
            await asyncio.sleep(RETRY_S[min(self._failures - 1, len(RETRY_S) - 1)])

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        opts = parse_url(self._url)
        conn = _Connection(self._sink)
        if opts.get("path"):  # unix://
            connect = loop.create_unix_connection(lambda: conn, opts["path"])
        else:
            tls = ssl.create_default_context() if self._url.startswith("rediss://") else None
            connect = loop.create_connection(
                lambda: conn, opts.get("host", "localhost"), int(opts.get("port", 6379)), ssl=tls
            )
        async with asyncio.timeout(self._timeout_s):
            await connect
        return conn

    async def _session(self) -> None:
        opts = parse_url(self._url)
        self._conn = conn = await self._open()
        hello: list[str] = ["HELLO", "3"]
        if opts.get("password") is not None:
            hello += ["AUTH", opts.get("username") or "default", opts["password"]]
        await conn.command(self._timeout_s, *hello, "SETNAME", NAME)
        await conn.command(self._timeout_s, "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", self._prefix)
        if conn.closed.done():  # lost as the answer came: the sink has been told, do not undo it
            raise TrackingError("the tracking connection was lost")
        self._sink.established()
        self._failures = 0
        self.sessions += 1
        if self.sessions > 1:
            log.info("near cache: tracking re-established", sessions=self.sessions)
        while not self._stopping:
            await asyncio.wait([conn.closed], timeout=self._ping_s)
            if conn.closed.done():
                raise TrackingError("the tracking connection was closed")
            await conn.command(self._timeout_s, "PING")
