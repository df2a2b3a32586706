"""The clients a process builds from its settings, in one place: Kafka consumers and producers, Redis, the
online feature store, and the model registry as a writer (the learner: signs with ``RIVULET_SIGNING_KEY``)
or as a reader (everyone else: verifies with the keyring ``RIVULET_VERIFY_KEYS``). Every runtime, the CLI,
the benchmarks and the tests build their clients here, so a timeout or a safety setting is set once. A
process without the key it needs is refused here, at start, with
:class:`~streaming.errors.MissingKey`, never later with a snapshot it cannot check.

>>> from streaming.settings import Settings
>>> registry_reader(Settings(verify_keys=[], signing_key=None))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streaming.errors.MissingKey: RIVULET_VERIFY_KEYS is not set: ...
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import Script
from redis.connection import Encoder

from features.redis_store import FAILOVER_ERRORS, FAILOVER_PAUSE_S, RedisStore
from streaming.errors import KafkaUnavailable, MissingKey
from streaming.learning.keys import Keyring, SigningKey, parse_keyring, parse_signing_key
from streaming.learning.registry import RedisRegistry
from streaming.settings import Settings

T = TypeVar("T")

__all__ = [
    "async_kafka_producer",
    "async_redis",
    "async_redis_node",
    "feature_store",
    "kafka_admin",
    "kafka_consumer",
    "kafka_producer",
    "keyring",
    "producer_config",
    "redis_client",
    "registry_reader",
    "registry_redis",
    "registry_writer",
    "signing_key",
]


def producer_config(settings: Settings) -> dict[str, Any]:
    """The kafka-python ``KafkaProducer`` configuration Rivulet uses (also the benchmark baseline's):
    idempotent, ``acks=all``, no topic created by a send.

    >>> c = producer_config(Settings())
    >>> c["acks"], c["enable_idempotence"], c["allow_auto_create_topics"]
    ('all', True, False)
    """
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": "rivulet-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.producer_linger_ms,
        "batch_size": settings.producer_batch_bytes,
        "compression_type": None
        if settings.producer_compression == "none"
        else settings.producer_compression,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "delivery_timeout_ms": settings.kafka_delivery_timeout_ms,
        "max_block_ms": settings.kafka_max_block_ms,
        "bootstrap_timeout_ms": max(settings.kafka_max_block_ms, 1000),
        "max_request_size": max(settings.max_event_bytes + 4096, 1_048_576),
        "allow_auto_create_topics": False,
    }


def kafka_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """A synchronous producer with :func:`producer_config` (``overrides`` replace single entries);
    :class:`~streaming.errors.KafkaUnavailable` when no broker answers."""
    return _bootstrapped(settings, lambda: KafkaProducer(**{**producer_config(settings), **overrides}))


def _bootstrapped(settings: Settings, make: Callable[[], T]) -> T:
    """``make()``, a kafka-python client that connects as it is made: no broker is one clear error."""
    try:
        return make()
    except KafkaError as exc:
        raise KafkaUnavailable(settings.kafka_bootstrap, exc) from exc


def async_kafka_producer(
    settings: Settings,
    *,
    client_id: str,
    make: Callable[..., AIOKafkaProducer] = AIOKafkaProducer,
    **overrides: Any,
) -> AIOKafkaProducer:
    """An asyncio producer, idempotent with ``acks=all`` (the API's predictions, the feature worker's
    batches), made by ``make`` (aiokafka's class, or one of its subclasses); ``overrides`` set its batching.
    Not started: the caller awaits ``start()``."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.producer_linger_ms,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
    }
    return make(**{**config, **overrides})


def kafka_consumer(settings: Settings, *, client_id: str, **overrides: Any) -> KafkaConsumer:
    """A reader outside any consumer group: it commits nothing, reads committed records only, starts where
    the caller seeks (a position the log no longer holds: its first retained record) and never creates a
    topic. Partitions are assigned by the caller; ``overrides`` replace single entries."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": client_id,
        "group_id": None,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "auto_offset_reset": "earliest",
        "allow_auto_create_topics": False,
        "max_poll_records": 5_000,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
    }
    return KafkaConsumer(**{**config, **overrides})


def kafka_admin(
    settings: Settings, *, client_id: str = "rivulet-admin", **overrides: Any
) -> KafkaAdminClient:
    """An admin client (topics, offsets of consumer groups) with the configured timeouts;
    :class:`~streaming.errors.KafkaUnavailable` when no broker answers."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": client_id,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "bootstrap_timeout_ms": max(settings.kafka_max_block_ms, 1000),
    }
    return _bootstrapped(settings, lambda: KafkaAdminClient(**{**config, **overrides}))


def feature_store(settings: Settings) -> RedisStore:
    """The Redis online feature store (on a Redis Cluster with ``RIVULET_REDIS_CLUSTER``), riding through a
    failover for ``RIVULET_REDIS_FAILOVER_S`` (the feature worker's; the API builds its store without)."""
    return RedisStore(async_redis(settings), settings.redis_prefix, settings.redis_failover_s)


def redis_client(settings: Settings) -> redis.Redis:
    """A synchronous Redis client with the configured timeouts (redis-py's defaults are 5 s)."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
    )


def async_redis(settings: Settings) -> aioredis.Redis | RedisCluster:
    """The async client of the online store: a cluster client (it follows the cluster's slots and redirects)
    when ``settings.redis_cluster`` is on, ``redis_url`` then being any node; else a plain one.

    >>> type(async_redis(Settings(redis_cluster=True))).__name__, type(async_redis(Settings())).__name__
    ('RedisCluster', 'Redis')
    """
    if settings.redis_cluster:
        return RedisCluster.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_socket_timeout_s,
            socket_connect_timeout=settings.redis_connect_timeout_s,
        )
    return async_redis_node(settings)


def async_redis_node(settings: Settings) -> aioredis.Redis:
    """A plain async client of the node at ``redis_url`` (pub/sub: on a Redis Cluster a message published on
    any node reaches the subscribers of every node, and the async cluster client has no pub/sub)."""
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
    )


class RidingCluster(redis.RedisCluster):
    """redis-py's cluster client, whose commands (scripts included) are tried again on
    :data:`~features.redis_store.FAILOVER_ERRORS` for ``failover_s``: redis-py's own retries follow one
    another at once and are spent before a failover ends (a few seconds: the cluster's node timeout, then
    an election). A command may then run twice: the registry's writes are versioned and fenced (a repeated
    ``INCR`` of the version counter skips a number)."""

    failover_s: float = 0.0

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.failover_s
        while True:
            try:
                return super().execute_command(*args, **kwargs)
            except FAILOVER_ERRORS:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(FAILOVER_PAUSE_S)


class LazyCluster:
    """A :class:`RidingCluster` built on first use: redis-py's cluster client connects in its constructor,
    and a process must start while the cluster does not answer (the API: its readiness says so). Scripts
    register without it (their SHA needs only the encoder)."""

    def __init__(self, make: Callable[[], RidingCluster]) -> None:
        self._make = make
        self._client: RidingCluster | None = None

    def get_encoder(self) -> Encoder:
        return Encoder("utf-8", "strict", False)  # redis-py's default, the cluster client's here

    def register_script(self, script: str) -> Script:
        return Script(cast(redis.Redis, self), script)  # runs through this object: built on its first call

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._client is None:
            self._client = self._make()
        return getattr(self._client, name)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def registry_redis(settings: Settings, failover_s: float | None = None) -> redis.Redis:
    """The Redis of the model registry and the learner's leases: on a Redis Cluster
    (``RIVULET_REDIS_CLUSTER``) a cluster client, since a model's keys live in their own slot, on whichever
    primary serves it (on its replica once that is promoted), riding through a failover for ``failover_s``
    (default ``RIVULET_REDIS_FAILOVER_S``; the API passes 0: a request does not wait); else
    :func:`redis_client`.

    >>> type(registry_redis(Settings(redis_cluster=True))).__name__, type(registry_redis(Settings())).__name__
    ('LazyCluster', 'Redis')
    """
    if not settings.redis_cluster:
        return redis_client(settings)

    def make() -> RidingCluster:
        client = RidingCluster(
            url=settings.redis_url,
            socket_timeout=settings.redis_socket_timeout_s,
            socket_connect_timeout=settings.redis_connect_timeout_s,
        )
        client.failover_s = settings.redis_failover_s if failover_s is None else failover_s
        return client

    return cast(redis.Redis, LazyCluster(make))  # the registry uses the commands both clients have


def signing_key(settings: Settings) -> SigningKey:
    """The learner's private key; :class:`MissingKey` without one, :class:`InvalidKey` if malformed."""
    if settings.signing_key is None:
        raise MissingKey("RIVULET_SIGNING_KEY", "the learner signs every snapshot it writes with it")
    return parse_signing_key(settings.signing_key.get_secret_value())


def keyring(settings: Settings) -> Keyring:
    """The accepted signers (``RIVULET_VERIFY_KEYS``), plus the process's own public key if it signs."""
    ring = parse_keyring(settings.verify_keys)
    if settings.signing_key is not None:
        ring = ring.with_key(signing_key(settings).public)
    if not len(ring):
        raise MissingKey("RIVULET_VERIFY_KEYS", "snapshots cannot be verified, so none is loaded")
    return ring


def registry_writer(settings: Settings, client: redis.Redis | None = None) -> RedisRegistry:
    """The learner's registry: signs new versions, reads those of every key in the ring."""
    signer = signing_key(settings)
    ring = parse_keyring(settings.verify_keys)  # the registry adds the signer's own public key
    return RedisRegistry(
        client or registry_redis(settings), settings.redis_prefix, signer=signer, keyring=ring
    )


def registry_reader(settings: Settings, client: redis.Redis | None = None) -> RedisRegistry:
    """A reader's registry (API, replay, verify, CLI): verifies, cannot sign."""
    ring = keyring(settings)
    return RedisRegistry(client or registry_redis(settings), settings.redis_prefix, keyring=ring)
