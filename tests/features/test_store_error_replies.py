"""The Redis store's reads when Redis answers with errors: only ``WRONGTYPE`` (something else stored under one
entity's key) is that entity's problem; any other error reply is the store's, and fails the read.

redis-py's ``pipeline.execute(raise_on_error=False)`` returns each failed command's error as its reply; a
Redis Cluster failing over answers ``CLUSTERDOWN``, ``MOVED``, ``TRYAGAIN`` or drops the connection for the
slots of the dead primary. Before, the store read every error reply as "no vector" (and the worker's state
load as an unreadable state, which resets the entity): the API then served a vector with the entity's
features missing, 200 instead of 503. The client here answers as redis-py does, with the replies chosen
per key (no server: the failover itself is drilled in tests/deploy/test_cluster_redis_chaos.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    RedisError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from features.redis_store import RedisStore, state_key, vector_key
from features.store import Unreadable

pytestmark = pytest.mark.unit

P = "t:"
GOOD = {b"_ts": b"1700000000000", b"n": b"3"}
WRONGTYPE = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
# what a failover answers, as redis-py parses it (an error code's prefix stripped, as its parser does)
STORE_ERRORS: list[Exception] = [
    ConnectionError("Connection closed by server."),
    TimeoutError("Timeout reading from socket"),
    ClusterDownError("The cluster is down"),
    MovedError("3999 127.0.0.1:7405"),
    TryAgainError("Multiple keys request during rehashing of slot"),
    BusyLoadingError("Redis is loading the dataset in memory"),
]


class _Pipe:
    def __init__(self, replies: dict[str, Any]) -> None:
        self._replies = replies
        self._keys: list[str] = []

    def hgetall(self, key: str) -> None:
        self._keys.append(key)

    def hget(self, key: str, field: str) -> None:
        self._keys.append(key)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        out = [self._replies[k] for k in self._keys]
        errors = [r for r in out if isinstance(r, Exception)]
        if raise_on_error and errors:
            raise errors[0]
        return out


class _Client:
    """Answers each key with the reply given for it, as redis-py's client and pipeline do."""

    def __init__(self, replies: dict[str, Any]) -> None:
        self.replies = replies

    def register_script(self, script: str) -> object:
        return object()

    def pipeline(self, transaction: bool = True) -> _Pipe:
        return _Pipe(self.replies)

    async def hgetall(self, key: str) -> Any:
        reply = self.replies[key]
        if isinstance(reply, Exception):
            raise reply
        return reply


def _read(replies: dict[str, Any], entities: Sequence[str]) -> Any:
    store = RedisStore(_Client(replies), P)  # type: ignore[arg-type]
    return asyncio.run(store.read("v", list(entities)))


def _load(replies: dict[str, Any], entities: Sequence[str]) -> Any:
    store = RedisStore(_Client(replies), P)  # type: ignore[arg-type]
    return asyncio.run(store.load("v", list(entities)))


@pytest.mark.parametrize("error", STORE_ERRORS, ids=lambda e: type(e).__name__)
def test_a_store_error_among_the_replies_fails_the_batched_read(error: Exception) -> None:
    replies = {vector_key(P, "v", "a"): dict(GOOD), vector_key(P, "v", "b"): error}
    with pytest.raises(RedisError) as raised:
        _read(replies, ["a", "b"])
    assert raised.value is error  # as the API's handler expects (a RedisError: 503), not a row of None


@pytest.mark.parametrize("error", STORE_ERRORS, ids=lambda e: type(e).__name__)
def test_a_store_error_fails_the_one_entity_read(error: Exception) -> None:
    with pytest.raises(RedisError) as raised:
        _read({vector_key(P, "v", "b"): error}, ["b"])
    assert raised.value is error


@pytest.mark.parametrize("error", STORE_ERRORS, ids=lambda e: type(e).__name__)
def test_a_store_error_fails_the_state_load_instead_of_resetting_the_entity(error: Exception) -> None:
    replies = {state_key(P, "v", "a"): b'{"v": 2}', state_key(P, "v", "b"): error}
    with pytest.raises(RedisError) as raised:
        _load(replies, ["a", "b"])
    assert raised.value is error


def test_wrongtype_is_the_entitys_own_problem_and_the_others_are_read() -> None:
    replies = {vector_key(P, "v", "a"): dict(GOOD), vector_key(P, "v", "b"): WRONGTYPE}
    rows = _read(replies, ["a", "b"])
    assert rows[1] is None
    assert rows[0] is not None and (rows[0].entity, rows[0].ts, rows[0].values) == (
        "a",
        1700000000000,
        {"n": 3},
    )
    assert _read({vector_key(P, "v", "b"): WRONGTYPE}, ["b"]) == [None]
    loaded = _load({state_key(P, "v", "b"): WRONGTYPE, state_key(P, "v", "c"): None}, ["b", "c"])
    assert (
        list(loaded) == ["b"]
        and isinstance(loaded["b"], Unreadable)
        and "ResponseError" in loaded["b"].problem
    )


class _Flaky(_Client):
    """Answers each command with ``errors`` first (a failover in progress), then as :class:`_Client`."""

    def __init__(self, replies: dict[str, Any], errors: list[Exception]) -> None:
        super().__init__(replies)
        self.errors = errors

    def pipeline(self, transaction: bool = True) -> _Pipe:
        if self.errors:
            return _Pipe({k: self.errors.pop(0) for k in self.replies})
        return super().pipeline(transaction)


def test_a_store_given_failover_time_rides_through_failover_errors_and_counts_it() -> None:
    replies = {vector_key(P, "v", "a"): dict(GOOD), vector_key(P, "v", "b"): None}
    errors: list[Exception] = [ClusterDownError("The cluster is down"), ConnectionError("refused")]
    store = RedisStore(_Flaky(replies, list(errors)), P, failover_s=30.0)  # type: ignore[arg-type]
    rows = asyncio.run(store.read("v", ["a", "b"]))
    assert rows[0] is not None and rows[0].values == {"n": 3} and rows[1] is None
    assert store.failovers == 1
    # without failover time (the API's store) the first error is the answer: 503 at once
    quick = RedisStore(_Flaky(replies, list(errors)), P)  # type: ignore[arg-type]
    with pytest.raises(ClusterDownError):
        asyncio.run(quick.read("v", ["a", "b"]))
    # an error about one entity's data is not a failover: never retried, the entity reads as absent
    wrong = RedisStore(_Flaky(replies, [WRONGTYPE, WRONGTYPE]), P, failover_s=30.0)  # type: ignore[arg-type]
    assert asyncio.run(wrong.read("v", ["a", "b"])) == [None, None] and wrong.failovers == 0
