"""The learner's leases (:mod:`streaming.learning.fencing`): taken at start, a standby waiting while another
learner holds one, renewed every third of the TTL, given back on a clean stop."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from streaming.learning.fencing import Fenced
from streaming.learning.leases import Leases
from streaming.learning.registry import Registry
from streaming.logs import get_logger

__all__ = ["LeaseKeeper"]

log = get_logger("rivulet.learn")


class LeaseKeeper:
    """The leases of ``specs`` for one learner; the registry writes each spec's models under its epoch."""

    def __init__(
        self,
        leases: Leases,
        registry: Registry,
        specs: Sequence[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.leases, self.registry, self.specs = leases, registry, list(specs)
        self.clock, self.sleep = clock, sleep
        self.held: dict[str, int] = {}  # spec -> epoch
        self._renewed = clock()

    @property
    def every_s(self) -> float:
        return self.leases.ttl_ms / 3000

    def acquire(self, stopped: Callable[[], bool]) -> bool:
        """Every spec's lease, waiting (polling) while another learner holds one; each spec's fences raised
        in the registry before anything is written. False when ``stopped`` first (nothing written)."""
        waiting, told = list(self.specs), set()
        poll = min(1.0, max(0.05, self.leases.ttl_ms / 4000))
        while waiting:
            if stopped():
                return False
            self.renew()  # those taken already stay ours while we wait for the others
            waiting += [s for s in self.specs if s not in self.held and s not in waiting]
            for spec in list(waiting):
                epoch = self.leases.acquire(spec)
                if epoch is None:
                    if spec not in told:
                        told.add(spec)
                        holder = self.leases.holder(spec)
                        log.warning("standby: another learner holds the lease", spec=spec, holder=holder)
                    continue
                try:
                    self.registry.hold(spec, epoch)
                except Fenced as exc:  # a newer holder came in between: wait again
                    log.warning("lease taken but a newer holder exists", spec=spec, why=str(exc))
                    self.release(spec)
                    continue
                self.held[spec] = epoch
                waiting.remove(spec)
                self._renewed = self.clock()
                log.info("lease taken", spec=spec, epoch=epoch, took_over=spec in told)
            if waiting:
                self.sleep(poll)
        return True

    def renew(self) -> list[str]:
        """Renew every held lease; returns the specs whose lease is no longer ours (released locally)."""
        lost = [spec for spec in list(self.held) if not self.leases.renew(spec)]
        for spec in lost:
            self.release(spec)
        self._renewed = self.clock()
        return lost

    def tick(self, now: float) -> list[str]:
        """Renew when a third of the TTL has passed since the last renewal; the specs lost, if any."""
        return self.renew() if now - self._renewed >= self.every_s else []

    def release(self, spec: str) -> None:
        """Write nothing more of ``spec`` and give its lease back (if still ours)."""
        self.held.pop(spec, None)
        self.registry.release(spec)
        self.leases.release(spec)

    def release_all(self) -> None:
        for spec in list(self.held):
            self.release(spec)
