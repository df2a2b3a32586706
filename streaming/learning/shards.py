"""Which learner process prefers which spec: ``--shard I/N`` (``RIVULET_LEARNER_SHARD``).

N learner processes given the same specs and shards ``0/N`` .. ``N-1/N`` split them evenly: the specs are
ordered by a stable hash of their names (SHA-256, the same in every process and Python run, unlike
``hash()``) and dealt round-robin, so each shard prefers ``len(specs) // N`` or one more, and which one
a spec goes to depends only on the names. A shard takes the leases of its own specs as soon as they are free
(and asks for them back from a learner that took them over while it was away); the others it takes only as
a standby, once their lease has been free for half a lease period (see
:class:`~streaming.runtime.lease_keeper.LeaseKeeper`).

>>> shard = Shard.parse("1/3")
>>> shard, str(shard)
(Shard(index=1, count=3), '1/3')
>>> specs = ["a", "b", "c", "d", "e", "f"]
>>> [sorted(Shard(i, 3).mine(specs)) for i in range(3)]
[['b', 'd'], ['e', 'f'], ['a', 'c']]
>>> Shard(0, 1).mine(specs) == set(specs)
True
>>> Shard.parse("3/3")
Traceback (most recent call last):
...
ValueError: a shard is I/N with 0 <= I < N (e.g. 0/3), got '3/3'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Shard", "spec_hash"]


def spec_hash(name: str) -> int:
    """A stable 64-bit hash of a spec's name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, sep, count = text.strip().partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            shard = None
        if not sep or shard is None or not 0 <= shard.index < shard.count:
            raise ValueError(f"a shard is I/N with 0 <= I < N (e.g. 0/3), got {text!r}")
        return shard

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def mine(self, specs: Iterable[str]) -> set[str]:
        """The specs this shard prefers among ``specs`` (every process must be given the same ones)."""
        ordered = sorted(set(specs), key=lambda s: (spec_hash(s), s))
        return {s for i, s in enumerate(ordered) if i % self.count == self.index}
