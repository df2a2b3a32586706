"""An event-time clock that one record cannot move: what ages the learner's pending predictions and held
labels, and what the merge orders a partition's records by.

Event times come from producers. A record stamped 9999-12-31 (a valid time) moved the learner's notion of
"now" to then: every pending prediction expired at once (their labels lost as unknown), and in the merge the
record's partition was held back behind it, every later record of it processed after all the others. The
clock's time is the record's own, unless it is more than ``tolerance`` past the median of the last
:data:`WINDOW` times, when it is that median: it takes more than half of the window (51 records) to move it.
After a real gap longer than the tolerance, the clock catches up some fifty records later.

>>> c = MedianClock()
>>> [c.observe(t, 1_000) for t in (10, 20, 10**12, 30)]
[10, 20, 20, 30]
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WINDOW", "MedianClock"]

WINDOW = 101  # the times the clock takes the median of


@dataclass
class MedianClock:
    """The last :data:`WINDOW` times in arrival order and sorted (pickled as the first only)."""

    order: deque[int] = field(default_factory=deque)
    ordered: list[int] = field(default_factory=list)

    def observe(self, ts: int, tolerance: int) -> int:
        """Take ``ts`` into the window; the time to use for it (see the module docstring)."""
        order, ordered = self.order, self.ordered
        if len(order) >= WINDOW:
            del ordered[bisect.bisect_left(ordered, order.popleft())]
        order.append(ts)
        bisect.insort(ordered, ts)
        median = ordered[(len(ordered) - 1) // 2]
        return ts if ts <= median + tolerance else median

    def __getstate__(self) -> dict[str, Any]:
        return {"order": list(self.order)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.order = deque(state["order"])
        self.ordered = sorted(self.order)
