"""The clients a process builds from its settings, in one place: Redis, and the model registry as a writer
(the learner: signs with ``RIVULET_SIGNING_KEY``) or as a reader (everyone else: verifies with the
keyring ``RIVULET_VERIFY_KEYS``). A process without the key it needs is refused here, at start, with
:class:`~streaming.errors.MissingKey`, never later with a snapshot it cannot check.

>>> from streaming.settings import Settings
>>> registry_reader(Settings(verify_keys=[], signing_key=None))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streaming.errors.MissingKey: RIVULET_VERIFY_KEYS is not set: ...
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from streaming.errors import MissingKey
from streaming.learning.keys import Keyring, SigningKey, parse_keyring, parse_signing_key
from streaming.learning.registry import ModelRegistry
from streaming.settings import Settings

__all__ = [
    "async_redis",
    "async_redis_node",
    "keyring",
    "redis_client",
    "registry_reader",
    "registry_writer",
    "signing_key",
]


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


def registry_writer(settings: Settings, client: redis.Redis | None = None) -> ModelRegistry:
    """The learner's registry: signs new versions, reads those of every key in the ring."""
    signer = signing_key(settings)
    ring = parse_keyring(settings.verify_keys)  # the registry adds the signer's own public key
    return ModelRegistry(client or redis_client(settings), settings.redis_prefix, signer=signer, keyring=ring)


def registry_reader(settings: Settings, client: redis.Redis | None = None) -> ModelRegistry:
    """A reader's registry (API, replay, verify, CLI): verifies, cannot sign."""
    ring = keyring(settings)
    return ModelRegistry(client or redis_client(settings), settings.redis_prefix, keyring=ring)
