"""The learner's leases (:mod:`streaming.learning.fencing`): which specs a learner holds, turn by turn.

A learner is configured with specs; its shard (:mod:`streaming.learning.shards`) says which of them are its
own. Each :meth:`LeaseKeeper.turn` (every third of the lease's TTL, or more often while it holds nothing):

1. renews every held lease. One that lapsed while nobody took it (the learner was paused) is taken again;
   if the new epoch is the old one plus one, nobody held it in between, so the learner's state of it is
   still the newest and it goes on (the fences raised to the new epoch). Otherwise the spec is *lost*:
   another learner owns it, or did, and this learner's state of it is stale;
2. takes the lease of each of its own specs that is free (not one lost in this very turn: its state must be
   dropped first, by the next turn it is), and marks the others ``wanted`` (they are held elsewhere);
3. as a *standby* (``standby=True``), takes any other spec whose lease it has seen free for half a TTL
   (its own learner, if alive, turns every third of one and would have taken it by then; one that has just
   started and finds it taken asks for it back, 4.) and that nobody wants;
4. lists the held specs that are not its own and that their own learner wants back: the learner gives them
   back (a checkpoint first, then :meth:`release`).

Each spec taken has its fences raised in the registry before anything is written (``registry.hold``). A spec
whose fence or members key holds garbage is given back at once, logged once, and tried again once a lease
period has passed (not every turn: each take costs an epoch) until an operator repairs the key. What
the learner does with a turn's changes (drop, restore, give back) is :class:`~streaming.runtime.learner.
LearnerWorker`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streaming.learning.fencing import Fenced, LeaseCorrupt
from streaming.learning.leases import Leases
from streaming.learning.registry import Registry
from streaming.logs import get_logger

__all__ = ["LeaseKeeper", "Turn"]

log = get_logger("rivulet.learn")


@dataclass
class Turn:
    """What changed in one turn: specs ``lost`` (state stale, write nothing more), ``taken`` (restore them
    from the registry) and ``give_back`` (held as a standby, wanted back by their own learner)."""

    lost: dict[str, str] = field(default_factory=dict)  # spec -> why
    taken: list[str] = field(default_factory=list)
    give_back: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.lost or self.taken or self.give_back)


class LeaseKeeper:
    """The leases of ``specs`` for one learner; ``own``: the specs of its shard (default: all of them)."""

    def __init__(
        self,
        leases: Leases,
        registry: Registry,
        specs: Sequence[str],
        *,
        own: set[str] | None = None,
        standby: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.leases, self.registry, self.specs = leases, registry, list(specs)
        self.own = set(self.specs) if own is None else own & set(self.specs)
        self.standby = standby
        self.clock, self.sleep = clock, sleep
        self.held: dict[str, int] = {}  # spec -> epoch
        self._free_since: dict[str, float] = {}  # a spec not ours -> when its lease was first seen free
        self._told: set[str] = set()  # specs whose holder was logged (once per wait)
        self._unreadable: dict[str, float] = {}  # spec -> when its fence was last found holding garbage
        self._turned: float | None = None

    @property
    def every_s(self) -> float:
        return self.leases.ttl_ms / 3000

    @property
    def poll_s(self) -> float:
        """How often a learner that holds nothing looks at the leases."""
        return min(1.0, max(0.05, self.leases.ttl_ms / 4000))

    def tick(self, now: float) -> Turn:
        """:meth:`turn` when a third of the TTL has passed since the last one."""
        if self._turned is not None and now - self._turned < self.every_s:
            return Turn()
        return self.turn(now)

    def turn(self, now: float) -> Turn:
        """Renew, take, want, give back: see the module docstring."""
        self._turned = now
        out = Turn()
        for spec, epoch in list(self.held.items()):
            if not self.leases.renew(spec):
                why = self._lapsed(spec, epoch)
                if why is not None:
                    out.lost[spec] = why
        for spec in self.specs:
            if spec in self.held or spec in out.lost:
                continue
            if spec in self.own:
                if self._take(spec, now):
                    out.taken.append(spec)
                else:
                    self.leases.want(spec)
            elif self.standby and self._orphan(spec, now) and self._take(spec, now):
                out.taken.append(spec)
        out.give_back = [s for s in self.held if s not in self.own and self.leases.wanted(s) is not None]
        return out

    def _lapsed(self, spec: str, epoch: int) -> str | None:
        """``spec``'s renewal was refused: None when it is ours again with nothing missed (module docstring,
        1), else why it is lost (released locally)."""
        self.release(spec)
        try:
            again = self.leases.acquire(spec)
        except LeaseCorrupt as exc:
            return str(exc)
        if again is None:
            return f"its renewal was refused, the lease is {self.leases.holder(spec) or 'free'}"
        if again == epoch + 1:
            try:
                self.registry.hold(spec, again)
            except Fenced as exc:  # cannot be (no epoch came between), but never write over a newer one
                self.release(spec)
                return str(exc)
            self.held[spec] = again
            log.warning("lease lapsed and taken again: nobody held it meanwhile", spec=spec, epoch=again)
            return None
        self.leases.release(spec)
        return f"its lease lapsed and epochs {epoch + 1}..{again - 1} were another learner's"

    def _orphan(self, spec: str, now: float) -> bool:
        """A spec not ours, free for half a TTL and wanted by nobody: a standby takes it."""
        if self.leases.holder(spec) is not None or self.leases.wanted(spec) is not None:
            self._free_since.pop(spec, None)
            return False
        since = self._free_since.setdefault(spec, now)
        return now - since >= self.leases.ttl_ms / 2000

    def _take(self, spec: str, now: float) -> bool:
        if now - self._unreadable.get(spec, -float("inf")) < self.leases.ttl_ms / 1000:
            return False  # its fence needs repair: tried again once a lease period has passed, not every turn
        try:
            epoch = self.leases.acquire(spec)
        except LeaseCorrupt as exc:  # nothing of it can be written: the learner's other specs go on
            if spec not in self._told:
                self._told.add(spec)
                log.error("lease cannot be taken", spec=spec, why=str(exc))
            return False
        if epoch is None:
            if spec not in self._told:
                self._told.add(spec)
                holder = self.leases.holder(spec)
                log.warning("standby: another learner holds the lease", spec=spec, holder=holder)
            return False
        try:
            self.registry.hold(spec, epoch)
        except Fenced as exc:
            self.release(spec)
            self.leases.release(spec)
            if exc.fence == "unreadable":  # garbage in its keys: not taken again (an epoch each) every turn
                if spec not in self._unreadable:
                    log.error("lease given back: the spec's keys need repair", spec=spec, why=str(exc))
                self._unreadable[spec] = now
            else:  # a newer holder came in between: wait again
                log.warning("lease taken but a newer holder exists", spec=spec, why=str(exc))
            return False
        if self._unreadable.pop(spec, None) is not None:
            log.info("the spec's keys were repaired", spec=spec)
        self.held[spec] = epoch
        self._free_since.pop(spec, None)
        log.info("lease taken", spec=spec, epoch=epoch, took_over=spec in self._told, own=spec in self.own)
        self._told.discard(spec)
        return True

    def release(self, spec: str) -> None:
        """Write nothing more of ``spec`` and give its lease back (if still ours)."""
        self.held.pop(spec, None)
        self.registry.release(spec)
        self.leases.release(spec)

    def release_all(self) -> None:
        for spec in list(self.held):
            self.release(spec)
