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
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from features.errors import FeaturesError
from features.events import MAX_TS_MS, MIN_TS_MS, Label
from streaming.learning.clock import MedianClock
from streaming.learning.domain import vector_in_domain

__all__ = [
    "MAX_ID_CHARS",
    "MAX_SKEW_MS",
    "NO_TIME",
    "Merger",
    "OrderJournal",
    "Positioned",
    "Undecodable",
    "decode",
    "event_time",
    "is_id",
    "is_time",
]

# the merge time of a record without an event time (not JSON, or malformed: the router rejects it). Smaller
# than any event time, so it is released as soon as it heads its partition: it never holds back the records
# behind it (with a Kafka timestamp, one far from the event times would delay its partition's good records
# and change the order the models see them in)
NO_TIME = -(2**63)
MAX_SKEW_MS = 86_400_000  # how far past its partition's recent times a record's own time counts in the merge


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What :func:`decode` gives for bytes that are not JSON (or no bytes): the learner rejects it."""

    error: str


def decode(value: bytes | None) -> Any:
    """A record's JSON value, or :class:`Undecodable` saying why it has none.

    >>> decode(b'{"a": 1}'), decode(b"{a")  # doctest: +ELLIPSIS
    ({'a': 1}, Undecodable(error='not JSON: ...'))
    """
    if not value:
        return Undecodable("an empty record")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Undecodable(f"not JSON: {exc}")


MAX_ID_CHARS = 200  # an event id (the event schema's limit) or a prediction id (the API's)


def is_id(value: Any) -> TypeGuard[str]:
    """An event or prediction id: a non-empty string of at most :data:`MAX_ID_CHARS` characters (a longer
    one joins nothing, and held as a pending or early key it would cost up to a megabyte)."""
    return type(value) is str and 0 < len(value) <= MAX_ID_CHARS


def is_time(ts: Any) -> TypeGuard[int]:
    """An event time: an int (not a bool) within the event schema's range (years 1-9999)."""
    return type(ts) is int and MIN_TS_MS <= ts <= MAX_TS_MS


# over 60 lines with its docstring: the doctests there are the merge-time rules, one per kind of record
def event_time(data: Any, fallback: int = NO_TIME, label_ok: Callable[[Any], bool] | None = None) -> int:
    """The merge key: event time of an event or features record, label time of a label (an int within the
    event schema's years 1-9999); else ``fallback`` (:data:`NO_TIME` by default: see there).

    A record the router refuses whatever the models' state has no time either, so it never holds back the
    good records behind it (a refused label stamped 23 hours ahead held its partition's records for 23 hours
    of event time), and its time never enters its partition's clock (one stamped in year 1 at the head of a
    partition made the median of the first two times year 1, and the next good record was merged at year 1,
    ahead of earlier good records of the other partitions): a features record (``event``) without a view, a
    vector, an event id or an int time; a served prediction (``features`` without ``event``) without a view,
    a prediction id or an int time; either with a vector value outside the numeric domain or not a scalar
    (:func:`streaming.learning.domain.check_vector`); and anything else (a label) that
    :meth:`features.events.Label.parse` refuses (not a scalar label, say) or whose id is not an id. These
    are the router's own checks (:mod:`streaming.learning.router`), on the record alone: the merge order
    stays a function of the data.

    ``label_ok`` (:func:`streaming.learning.labels.taken_by_any` of the models' specs): a label no model's
    task takes (``"banana"`` when every model is binary) has no time either, on the labels topic or inline
    on a features record's event.

    A label's time is read as the learner reads the label (:meth:`features.events.Label.parse`: a string of
    digits, an ISO 8601 string or a float too): a label the learner takes is merged at its time, not as a
    record without one (which let a label with ``"ts": "1700000001000"`` overtake its own record).

    >>> f = {"view": "v", "features": {}, "event": {"event_id": "e", "ts": 5}}
    >>> event_time(f), event_time({"event_id": "e", "label": 1, "ts": 7}), event_time(Undecodable("x"))
    (5, 7, -9223372036854775808)
    >>> event_time({"event_id": "e", "label": True, "ts": "2023-11-14T22:13:21Z"})
    1700000001000
    >>> event_time({**f, "event": {"event_id": "e", "ts": "5"}}) == NO_TIME  # a features time is an int
    True
    >>> event_time({**f, "features": {"loan": 1e308}}) == NO_TIME  # refused: beyond the numeric domain
    True
    >>> banana = {**f, "event": {"event_id": "e", "ts": 5, "label": "banana"}}  # no model takes it
    >>> event_time(banana), event_time(banana, label_ok=lambda y: y in (0, 1)) == NO_TIME
    (5, True)
    >>> event_time({"event_id": "e", "label": ["banana"], "ts": 7}) == NO_TIME  # refused: not a scalar
    True
    >>> event_time({"event_id": "e", "entity": "u1", "ts": 9, "fields": {}})  # an event, labelled or not
    9
    """
    if not isinstance(data, dict):
        return fallback
    event = data.get("event")
    if event is None and "control" in data:  # a hand control (the router's rule: is_control): its signed time
        from streaming.learning.controls import control_time

        return control_time(data, fallback)
    if event is not None or "features" in data:  # a features record, or a served prediction
        vector = data.get("features")
        if type(data.get("view")) is not str or not isinstance(vector, dict) or not vector_in_domain(vector):
            return fallback
        if isinstance(event, dict):
            ts, label = event.get("ts"), event.get("label")
            if label is not None and label_ok is not None and not label_ok(label):
                return fallback  # an inline label every model's task refuses: the record is refused
            return ts if is_id(event.get("event_id")) and is_time(ts) else fallback
        ts = data.get("ts")
        return ts if event is None and is_id(data.get("prediction_id")) and is_time(ts) else fallback
    if "entity" in data:  # an event (replay of an events topic): its own time; the feature stage checks it
        ts = data.get("ts")
        return ts if is_time(ts) else fallback
    try:
        label = Label.parse(data)
    except FeaturesError:
        return fallback
    if not is_id(label.event_id if label.event_id is not None else label.prediction_id):
        return fallback
    if label_ok is not None and not label_ok(label.label):  # every model's task refuses it
        return fallback
    return label.ts  # Label.parse bounds it to the event schema's years already


@dataclass(slots=True)
class Positioned:
    """A record with its place in the merge order: (ts, rank, partition, offset)."""

    ts: int
    rank: int
    partition: int
    offset: int
    topic: str
    value: Any
    raw: bytes | None = None  # the original bytes (for a dead letter), when the source had them
    key: bytes | None = None


class Merger:
    """The merge. A record's merge time is its event time, unless it is more than :data:`MAX_SKEW_MS` past
    the median of the last times of its partition (:class:`~streaming.learning.clock.MedianClock`): then it
    is that median. One record stamped far in the future (a valid time, 9999-12-31) otherwise headed its
    partition until every other partition was drained, and every later record of its partition was
    processed after all the others (live, in a replay and in verify alike).

    >>> m = Merger(ranks={"f": 0})
    >>> for offset, ts in enumerate([10, 253_402_300_799_000, 20]):
    ...     m.add("f", 0, offset, ts, offset)
    >>> m.add("f", 1, 0, 15, "other")
    >>> [r.value for r in m.ready(lambda tp: True)]
    [0, 1, 'other', 2]
    """

    def __init__(self, ranks: dict[str, int]) -> None:
        self.ranks = ranks
        self._queues: dict[tuple[str, int], deque[Positioned]] = {}
        self._clocks: dict[tuple[str, int], MedianClock] = {}

    def track(self, topic: str, partition: int) -> None:
        self._queues.setdefault((topic, partition), deque())

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        ts: int,
        value: Any,
        raw: bytes | None = None,
        key: bytes | None = None,
    ) -> None:
        tp = (topic, partition)
        q = self._queues.setdefault(tp, deque())
        if ts != NO_TIME:
            clock = self._clocks.get(tp)
            if clock is None:
                clock = self._clocks[tp] = MedianClock()
            ts = clock.observe(ts, MAX_SKEW_MS)
        q.append(Positioned(ts, self.ranks[topic], partition, offset, topic, value, raw, key))

    def ready(self, exhausted: Callable[[tuple[str, int]], bool]) -> Iterator[Positioned]:
        """Release records in order while no partition could still deliver an earlier one.

        ``exhausted(tp)`` says whether an empty partition has been read to its end (so it can be skipped).
        """
        queues = self._queues
        if any(not q and not exhausted(tp) for tp, q in queues.items()):
            return  # a partition could still deliver an earlier record than any buffered
        # heap entries are plain tuples: compared in C, not through dataclass methods
        heap = [(h.ts, h.rank, h.partition, h.offset, tp) for tp, q in queues.items() if q for h in (q[0],)]
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            tp = pop(heap)[4]
            q = queues[tp]
            yield q.popleft()
            if q:
                h = q[0]
                push(heap, (h.ts, h.rank, h.partition, h.offset, tp))
            elif not exhausted(tp):
                return  # it ran dry and may still deliver: it holds the others back

    def buffered(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def sizes(self) -> dict[tuple[str, int], int]:
        return {tp: len(q) for tp, q in self._queues.items()}


class OrderJournal:
    """The order in which a learner processed records, as runs over (topic, partition): what a checkpoint
    needs besides offsets to be rebuilt exactly.

    The merge is a function of the data only when every partition's records are already in the log. A live
    learner tails the log: when a partition has nothing new it goes on with the others, and a record that
    arrives later with an earlier time is processed after them. Each partition is still read in offset
    order, so the sequence of partitions taken (run-length encoded: a few bytes per switch) is all a replay
    needs to process the same records in the same order.

    >>> j = OrderJournal()
    >>> for tp in [("f", 0), ("f", 0), ("l", 0), ("f", 1)]:
    ...     j.add(tp)
    >>> j.to_header()
    {'tps': [['f', 0], ['l', 0], ['f', 1]], 'runs': [0, 2, 1, 1, 2, 1]}
    >>> list(OrderJournal.steps([j.to_header()]))
    [('f', 0), ('f', 0), ('l', 0), ('f', 1)]
    """

    __slots__ = ("_index", "_runs", "_tps")

    def __init__(self) -> None:
        self._tps: list[tuple[str, int]] = []
        self._index: dict[tuple[str, int], int] = {}
        self._runs: list[int] = []

    def add(self, tp: tuple[str, int]) -> None:
        i = self._index.get(tp)
        if i is None:
            i = self._index[tp] = len(self._tps)
            self._tps.append(tp)
        runs = self._runs
        if runs and runs[-2] == i:
            runs[-1] += 1
        else:
            runs += (i, 1)

    def __len__(self) -> int:
        return sum(self._runs[1::2])

    def has(self, tp: tuple[str, int]) -> bool:
        """Has a record of this partition been taken yet?"""
        return tp in self._index

    def to_header(self) -> dict[str, Any]:
        return {"tps": [list(tp) for tp in self._tps], "runs": list(self._runs)}

    @staticmethod
    def steps(journals: list[dict[str, Any]]) -> Iterator[tuple[str, int]]:
        """The (topic, partition) of each record in turn, over consecutive journals."""
        for j in journals:
            tps = [(str(t), int(p)) for t, p in j["tps"]]
            runs = j["runs"]
            for k in range(0, len(runs), 2):
                tp = tps[runs[k]]
                for _ in range(runs[k + 1]):
                    yield tp
