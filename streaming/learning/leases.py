"""Leases per spec (see :mod:`streaming.learning.fencing` for the keys, scripts and epoch flow): a Redis one
and a one-owner in-process one (the embedded demo has a single learner).

>>> leases = MemoryLeases()
>>> leases.acquire("m"), leases.renew("m"), leases.acquire("m")
(1, True, None)
>>> leases.release("m"); leases.acquire("m")
2
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Any

import redis

from streaming.learning.fencing import ACQUIRE, MAX_EPOCH, RELEASE, RENEW, LeaseCorrupt, owner_id

__all__ = ["Leases", "MemoryLeases", "RedisLeases"]


class Leases(ABC):
    """A lease per spec with an epoch: ``acquire`` (the new epoch, or None while another holds it),
    ``renew`` (False once it is no longer ours), ``release`` (if still ours)."""

    ttl_ms: int

    @abstractmethod
    def acquire(self, spec: str) -> int | None: ...

    @abstractmethod
    def renew(self, spec: str) -> bool: ...

    @abstractmethod
    def release(self, spec: str) -> None: ...

    @abstractmethod
    def holder(self, spec: str) -> str | None:
        """Who holds the spec's lease now (``owner#epoch``), for messages."""

    def want(self, spec: str) -> None:
        """Say that this learner waits for ``spec`` as its own (its shard's): a holder that took it over as a
        standby gives it back (:class:`~streaming.runtime.lease_keeper.LeaseKeeper`). Lasts one TTL.
        (The in-process leases have one learner: nobody to tell.)"""
        return None

    def wanted(self, spec: str) -> str | None:
        """Another learner that waits for ``spec`` as its own, if any (never this one)."""
        return None


class RedisLeases(Leases):
    """Leases in Redis: ``<prefix>model:{<spec>}:lease`` (owner#epoch, TTL ``ttl_ms``), the epoch
    counter ``<prefix>model:{<spec>}:epoch`` and ``<prefix>model:{<spec>}:wanted`` (the owner waiting for
    it as its own, TTL ``ttl_ms``), one slot per spec."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_ms: int, owner: str | None = None) -> None:
        self._r: Any = client
        self._prefix = prefix
        self.ttl_ms = ttl_ms
        self.owner = owner or owner_id()
        self._held: dict[str, str] = {}  # spec -> the lease's value while we hold it
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    def _k(self, spec: str, suffix: str) -> str:
        return f"{self._prefix}model:{{{spec}}}:{suffix}"

    def acquire(self, spec: str) -> int | None:
        """The new epoch, or None while the lease is someone's (a lease key without a TTL is given one);
        :class:`~streaming.learning.fencing.LeaseCorrupt` if the epoch counter holds no usable epoch."""
        try:
            keys = [self._k(spec, "lease"), self._k(spec, "epoch")]
            epoch = self._acquire(keys=keys, args=[self.owner, self.ttl_ms, MAX_EPOCH])
        except redis.ResponseError as exc:
            kind, _, detail = str(exc).partition(" ")
            if kind == "BADEPOCH":
                raise LeaseCorrupt(spec, detail) from None
            raise
        if epoch is None:
            return None
        self._held[spec] = f"{self.owner}#{int(epoch)}"
        return int(epoch)

    def renew(self, spec: str) -> bool:
        value = self._held.get(spec)
        ok = value is not None and bool(self._renew(keys=[self._k(spec, "lease")], args=[value, self.ttl_ms]))
        if not ok:
            self._held.pop(spec, None)
        return ok

    def release(self, spec: str) -> None:
        value = self._held.pop(spec, None)
        if value is not None:
            self._release(keys=[self._k(spec, "lease")], args=[value])

    def holder(self, spec: str) -> str | None:
        try:
            raw = self._r.get(self._k(spec, "lease"))
        except redis.ResponseError:  # a key of another type (WRONGTYPE): held, by nobody we can name
            return "unreadable (not a lease; it lapses within one lease period)"
        return raw.decode(errors="replace") if raw is not None else None

    def want(self, spec: str) -> None:
        self._r.set(self._k(spec, "wanted"), self.owner, px=self.ttl_ms)

    def wanted(self, spec: str) -> str | None:
        try:
            raw = self._r.get(self._k(spec, "wanted"))
        except redis.ResponseError:  # a key of another type: nobody we can name wants it
            return None
        who = raw.decode(errors="replace") if raw is not None else None
        return who if who != self.owner else None


class MemoryLeases(Leases):
    """One owner in one process: a spec's lease is free until acquired, then held until released."""

    def __init__(self, ttl_ms: int = 10_000) -> None:
        self.ttl_ms = ttl_ms
        self._lock = threading.Lock()
        self._epochs: dict[str, int] = {}
        self._held: set[str] = set()

    def acquire(self, spec: str) -> int | None:
        with self._lock:
            if spec in self._held:
                return None
            self._held.add(spec)
            self._epochs[spec] = self._epochs.get(spec, 0) + 1
            return self._epochs[spec]

    def renew(self, spec: str) -> bool:
        with self._lock:
            return spec in self._held

    def release(self, spec: str) -> None:
        with self._lock:
            self._held.discard(spec)

    def holder(self, spec: str) -> str | None:
        with self._lock:
            return f"this process#{self._epochs[spec]}" if spec in self._held else None
