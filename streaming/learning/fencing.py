"""One writer per model: leases with an epoch (a fencing token), and the fence the registry checks.

Keys, besides the registry's (hash tag on a model name, so each group below shares a Redis Cluster slot):

- ``<prefix>model:{<spec>}:lease``: ``<owner>#<epoch>``, with a TTL (PX); the holder renews it;
- ``<prefix>model:{<spec>}:epoch``: the spec's epoch, incremented (INCR) on every acquisition;
- ``<prefix>model:{<spec>}:members``: every model name a holder wrote under the spec (the spec itself and its
  challengers ``<spec>~<ts>``), added under the holder's epoch (see *births* below);
- ``<prefix>model:{<name>}:fence``: the highest epoch that raised or wrote model ``name``;
- ``<prefix>model:{<spec>}:wanted``: a learner waiting for the spec as its own shard's (TTL): a holder that
  took it over as a standby gives it back (:mod:`streaming.runtime.lease_keeper`). Advice, not fencing.

A challenger lives in another slot than its spec, so no script can see both the spec's epoch and the
challenger's keys: each model carries its own fence, in its own slot. A fenced write is one Lua script over
keys of that slot only (:data:`GUARDED`): refused when the model has no fence or when the writer's epoch is
lower than the fence, otherwise the fence is raised to the epoch and the commands run, all atomically.

The epoch flow:

1. *acquire* (:data:`ACQUIRE`, spec slot): if no lease, INCR the epoch and set the lease with a TTL;
2. *raise*: the new holder raises the fence of every model of the spec it can know of (the registry's names
   ``spec`` and ``spec~*``, and the spec's ``members``) to its epoch (:data:`RAISE`, refused if a higher one
   is there: a later holder exists), before it writes anything;
3. *births*: before its first write of a model it has not raised, a holder adds the name to ``members``
   only if the spec's epoch is still its own (:data:`BIRTH`, spec slot), then raises that model's fence.
   A zombie's birth either happened before the new holder's INCR (the name is then in ``members`` when the
   new holder reads it, after its INCR, and its fence gets raised) or after (refused): a model first
   written by a zombie after a takeover is refused too.

What a zombie (a holder whose lease lapsed, e.g. paused) can still do: nothing in the registry's slots of
its spec's models once the new holder has raised their fences; the name listing ``<prefix>models`` (a set
outside every model's slot, added to before a version is written) may gain a name the zombie was about to
write (harmless: a name without versions reads as "not loaded yet"). It cannot renew, the lease being
someone else's.

>>> Fenced("m", 3, "4").epoch, str(Fenced("m", 3, "4"))  # doctest: +ELLIPSIS
(3, "model 'm' is fenced: this learner's epoch 3 is older than the fence (4): another learner ...")
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from streaming.learning.errors import LearningError

__all__ = [
    "ACQUIRE",
    "BIRTH",
    "GUARDED",
    "MAX_EPOCH",
    "RAISE",
    "RELEASE",
    "RENEW",
    "Command",
    "Fenced",
    "Fences",
    "LeaseCorrupt",
    "LeaseLost",
    "owner_id",
    "spec_of",
]


class Fenced(LearningError):
    """A write refused by the registry: the writer's epoch is lower than the model's fence (or the writer
    holds no lease of the model's spec, ``epoch`` None)."""

    def __init__(self, model: str, epoch: int | None, fence: str) -> None:
        self.model, self.epoch, self.fence = model, epoch, fence
        if epoch is None:
            why = "this learner holds no lease of its spec"
        elif fence == "none":
            why = f"it has no fence for epoch {epoch} (the lease was not taken, or the model was deleted)"
        elif fence == "unreadable":
            why = "its fence, epoch or members key holds garbage or another type (an operator must repair it)"
        elif fence.startswith("conflict"):
            why = f"its version counter moved under epoch {epoch} ({fence})"
        else:
            why = f"this learner's epoch {epoch} is older than the fence ({fence})"
        super().__init__(f"model {model!r} is fenced: {why}: another learner owns it; nothing written")


class LeaseLost(LearningError):
    """A learner lost the lease of every spec it ran: it stopped without writing (a zombie)."""

    def __init__(self, specs: Sequence[str], why: str) -> None:
        self.specs, self.why = list(specs), why
        super().__init__(
            f"lease lost for {', '.join(map(repr, self.specs))} ({why}): another learner took over; "
            "this learner stops without writing a checkpoint"
        )


class LeaseCorrupt(LearningError):
    """A spec's epoch counter holds no usable epoch (not a decimal integer below :data:`MAX_EPOCH`, or a key
    of another type): its lease is not taken, so nothing is written of it, until an operator repairs it."""

    def __init__(self, spec: str, detail: str) -> None:
        self.spec, self.detail = spec, detail
        super().__init__(f"spec {spec!r}: the lease cannot be taken: {detail}; the key needs repair")


def owner_id() -> str:
    """This process's identity in a lease: host, pid and a random part (a restarted pid differs)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class Command:
    """One Redis command of a guarded write: its name, the keys it names (first), then its arguments."""

    __slots__ = ("args", "keys", "name")

    def __init__(self, name: str, keys: Sequence[str], *args: Any) -> None:
        self.name, self.keys, self.args = name, list(keys), list(args)


# KEYS[1] the model's fence, KEYS[2..] the keys the commands name; ARGV[1] the writer's epoch, ARGV[2] the
# index of a key to compare first (0: none) and ARGV[3] its expected value ('' for absent), ARGV[4] the
# number of commands, then each: name, n keys, their indexes in KEYS, n args, the args
GUARDED = """
local fence = redis.pcall('GET', KEYS[1])
if not fence then return redis.error_reply('FENCED none') end
if type(fence) ~= 'string' or not string.match(fence, '^%d+$') or #fence > 16 then
  return redis.error_reply('FENCED unreadable')
end
local epoch = tonumber(ARGV[1])
if tonumber(fence) > epoch then return redis.error_reply('FENCED ' .. fence) end
if tonumber(fence) < epoch then redis.call('SET', KEYS[1], ARGV[1]) end
local check = tonumber(ARGV[2])
if check > 0 then
  local now = redis.call('GET', KEYS[check]) or ''
  if now ~= ARGV[3] then return redis.error_reply('CONFLICT ' .. now) end
end
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  local args = {ARGV[i]}
  local nk = tonumber(ARGV[i + 1])
  i = i + 2
  for _ = 1, nk do
    args[#args + 1] = KEYS[tonumber(ARGV[i])]
    i = i + 1
  end
  local na = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, na do
    args[#args + 1] = ARGV[i]
    i = i + 1
  end
  redis.call(unpack(args))
end
return 1
"""

# KEYS[1] a model's fence; ARGV[1] the epoch: raised to it unless a higher one is there
RAISE = """
local fence = redis.pcall('GET', KEYS[1])
if fence and (type(fence) ~= 'string' or not string.match(fence, '^%d+$') or #fence > 16) then
  return redis.error_reply('FENCED unreadable')
end
if fence and tonumber(fence) > tonumber(ARGV[1]) then return redis.error_reply('FENCED ' .. fence) end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] the spec's epoch, KEYS[2] its members; ARGV[1] the holder's epoch, ARGV[2] the model's name
BIRTH = """
local now = redis.pcall('GET', KEYS[1]) or '0'
if type(now) ~= 'string' then return redis.error_reply('FENCED unreadable') end
if now ~= ARGV[1] then return redis.error_reply('FENCED ' .. now) end
local added = redis.pcall('SADD', KEYS[2], ARGV[2])
if type(added) == 'table' then return redis.error_reply('FENCED unreadable') end
return 1
"""

# KEYS[1] the lease, KEYS[2] the spec's epoch; ARGV[1] the owner, ARGV[2] the TTL (ms): the new epoch, or nil.
# A lease without a TTL (none of ours: a holder always sets one) is given one, so it lapses unless renewed.
# An epoch that is not a decimal integer below MAX_EPOCH (Lua's numbers are doubles) is refused (BADEPOCH);
# the epoch is written with %d, as Lua would write 1e14 as '1e+14'.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return false
end
local now = redis.pcall('GET', KEYS[2])
if now and (type(now) ~= 'string' or not string.match(now, '^%d+$') or #now > 16
            or tonumber(now) >= tonumber(ARGV[3])) then
  return redis.error_reply('BADEPOCH the epoch counter holds no epoch below ' .. ARGV[3])
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. string.format('%d', epoch), 'PX', ARGV[2])
return epoch
"""

MAX_EPOCH = 2**53 - 1  # the largest integer a Lua number (a double) holds exactly

# KEYS[1] the lease; ARGV[1] its value when held (owner#epoch), ARGV[2] the TTL (ms)
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS[1] the lease; ARGV[1] its value when held
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def encode(
    fence: str, commands: Sequence[Command], epoch: int, check: str | None, expect: str
) -> tuple[list[str], list[Any]]:
    """The KEYS and ARGV of :data:`GUARDED` for ``commands`` under ``epoch`` (``check``: a key that must
    hold ``expect`` first, '' meaning absent)."""
    keys = [fence]
    index: dict[str, int] = {fence: 1}

    def at(key: str) -> int:
        if key not in index:
            keys.append(key)
            index[key] = len(keys)
        return index[key]

    argv: list[Any] = [epoch, at(check) if check is not None else 0, expect, len(commands)]
    for c in commands:
        argv += [c.name, len(c.keys), *[at(k) for k in c.keys], len(c.args), *c.args]
    return keys, argv


def spec_of(name: str) -> str:
    """The spec a model belongs to: ``m`` for ``m`` and for its challengers ``m~<ts>``."""
    return name.partition("~")[0]


class Fences:
    """The registry's side of fencing: the epochs this writer holds (by spec) and its fenced writes.

    Unfenced (no :meth:`hold` yet: an operator's command, ``rivulet models ...``), a write is a MULTI/EXEC
    of its commands, as before fencing. Once a spec is held, every write of its models goes through
    :data:`GUARDED`; a spec released (or never held) refuses with :class:`Fenced`.
    """

    def __init__(self, client: redis.Redis, key: Any) -> None:
        self._r: Any = client
        self._key = key  # (name, suffix) -> the registry's key
        self.epochs: dict[str, int] | None = None  # spec -> epoch; None: an unfenced writer
        self._raised: set[str] = set()  # models whose fence this writer raised under its epoch
        self._guarded = client.register_script(GUARDED)
        self._raise = client.register_script(RAISE)
        self._birth = client.register_script(BIRTH)

    def hold(self, spec: str, epoch: int, names: Sequence[str]) -> None:
        """From now on write ``spec``'s models under ``epoch``: first raise the fence of each model of the
        spec it can know of (``names``: the registry's, and the spec's members)."""
        self.epochs = {**(self.epochs or {}), spec: epoch}
        self._raised = {n for n in self._raised if spec_of(n) != spec}
        try:
            members = {m.decode() for m in self._r.smembers(self._key(spec, "members"))}
        except redis.ResponseError:  # a key of another type (WRONGTYPE): its models cannot all be known
            raise Fenced(spec, epoch, "unreadable") from None
        for name in sorted({spec, *members, *(n for n in names if spec_of(n) == spec)}):
            self._raise_fence(name, epoch)

    def release(self, spec: str) -> None:
        """Write nothing more of ``spec``'s models (the lease is lost or given back)."""
        if self.epochs is not None:
            self.epochs.pop(spec, None)
        self._raised = {n for n in self._raised if spec_of(n) != spec}

    def stamp(self, name: str) -> dict[str, Any]:
        """What a version's header says of its writer: the epoch it was written under."""
        if self.epochs is None:
            return {}
        return {"epoch": self._epoch(name)}

    def _epoch(self, name: str) -> int:
        epoch = (self.epochs or {}).get(spec_of(name))
        if epoch is None:
            raise Fenced(name, None, "none")
        return epoch

    def _raise_fence(self, name: str, epoch: int) -> None:
        try:
            self._raise(keys=[self._key(name, "fence")], args=[epoch])
        except redis.ResponseError as exc:
            raise _refused(name, epoch, exc) from None
        self._raised.add(name)

    def write(
        self, name: str, commands: Sequence[Command], *, check: str | None = None, expect: str = ""
    ) -> None:
        """Run ``commands`` (keys of ``name``'s slot) atomically, fenced when a spec is held; ``check``: a
        key that must hold ``expect`` ('' for absent) first (fenced writes only)."""
        if self.epochs is None:
            if commands:
                pipe = self._r.pipeline(transaction=True)
                for c in commands:
                    pipe.execute_command(c.name, *c.keys, *c.args)
                pipe.execute()
            return
        epoch = self._epoch(name)
        if name not in self._raised:  # a model this holder has not written yet: its birth (module docstring)
            spec = spec_of(name)
            try:
                self._birth(keys=[self._key(spec, "epoch"), self._key(spec, "members")], args=[epoch, name])
            except redis.ResponseError as exc:
                raise _refused(name, epoch, exc) from None
            self._raise_fence(name, epoch)
        keys, argv = encode(self._key(name, "fence"), commands, epoch, check, expect)
        try:
            self._guarded(keys=keys, args=argv)
        except redis.ResponseError as exc:
            raise _refused(name, epoch, exc) from None

    def forget(self, name: str) -> None:
        """``name`` was deleted (its fence too): the next write of it is a birth again."""
        self._raised.discard(name)


def _refused(name: str, epoch: int, exc: redis.ResponseError) -> Exception:
    kind, _, detail = str(exc).partition(" ")
    if kind == "FENCED":
        return Fenced(name, epoch, detail)
    if kind == "CONFLICT":
        return Fenced(name, epoch, f"conflict: the counter is at {detail or 'nothing'}")
    return exc
