"""A deterministic order over several partitions: merge by (timestamp, topic rank, partition, offset).

River models are sequential, so the order in which a learner sees records decides the model. Kafka gives no
order across partitions, and polling interleaves them differently on every run; this merge makes the order
a function of the data alone, so a learner restarted from a checkpoint rebuilds the same model and a replay
reproduces it. A record is released only when every partition either has a record buffered (so nothing
earlier can still arrive from it) or has been read to its end.

>>> m = Merger(ranks={"f": 0, "l": 1})
>>> m.add("f", 0, 0, 10, "a"); m.add("f", 1, 0, 5, "b"); m.add("l", 0, 0, 10, "c")
>>> [r.value for r in m.ready(lambda tp: True)]
['b', 'a', 'c']
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Merger", "Positioned"]


@dataclass(order=True, frozen=True, slots=True)
class Positioned:
    ts: int
    rank: int
    partition: int
    offset: int
    topic: str = field(compare=False)
    value: Any = field(compare=False)


class Merger:
    def __init__(self, ranks: dict[str, int]) -> None:
        self.ranks = ranks
        self._queues: dict[tuple[str, int], deque[Positioned]] = {}

    def track(self, topic: str, partition: int) -> None:
        self._queues.setdefault((topic, partition), deque())

    def add(self, topic: str, partition: int, offset: int, ts: int, value: Any) -> None:
        q = self._queues.setdefault((topic, partition), deque())
        q.append(Positioned(ts, self.ranks[topic], partition, offset, topic, value))

    def ready(self, exhausted: Callable[[tuple[str, int]], bool]) -> Iterator[Positioned]:
        """Release records in order while no partition could still deliver an earlier one.

        ``exhausted(tp)`` says whether an empty partition has been read to its end (so it can be skipped).
        """
        queues = self._queues
        heap = [(q[0], tp) for tp, q in queues.items() if q]
        heapq.heapify(heap)
        waiting = {tp for tp, q in queues.items() if not q and not exhausted(tp)}
        while heap and not waiting:
            head, tp = heapq.heappop(heap)
            q = queues[tp]
            q.popleft()
            yield head
            if q:
                heapq.heappush(heap, (q[0], tp))
            elif not exhausted(tp):
                waiting.add(tp)

    def buffered(self) -> int:
        return sum(len(q) for q in self._queues.values())
