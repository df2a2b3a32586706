"""The one learner loop (streaming.learning.loop): every source of the same records gives the Merger's own
order, a hostile record never holds back the others, and the journal order replays what was taken."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from river import linear_model

from streaming.learning.labels import taken_by_any
from streaming.learning.loop import (
    FileRecords,
    MemoryRecords,
    MergeLoop,
    Record,
    in_journal_order,
    read_records,
    write_records,
)
from streaming.learning.merge import NO_TIME, Merger, OrderJournal, decode, event_time
from streaming.learning.spec import ModelSpec

pytestmark = pytest.mark.unit

RANKS = {"l": 0, "f": 1, "p": 2}
LABEL_OK = taken_by_any([ModelSpec("m", "binary", "v", linear_model.LogisticRegression)])


def features(i: int, ts: int) -> bytes:
    return orjson.dumps(
        {"view": "v", "entity": f"u{i % 3}", "event": {"event_id": f"e{i}", "ts": ts}, "features": {"x": i}}
    )


def label(i: int, ts: int, y: Any = True) -> bytes:
    return orjson.dumps({"event_id": f"e{i}", "label": y, "ts": ts})


HOSTILE = [
    b"not json",
    b"",
    None,
    b"[1, 2]",
    orjson.dumps({"view": "v", "features": {"x": 1e308}, "event": {"event_id": "h", "ts": 5}}),
    label(0, 253_402_300_799_000, "banana"),  # no model takes it: no time, whatever its stamp
    orjson.dumps({"event_id": "x" * 500, "label": True, "ts": 3}),  # not an id
]


def stream(seed: int, n: int = 300) -> list[Record]:
    """Records of three features partitions, a labels and a predictions partition, each in offset order,
    interleaved at random (as polls interleave them); times out of step across partitions, a few hostile
    records and one stamped in year 9999."""
    rnd = random.Random(seed)
    per: dict[tuple[str, int], list[tuple[bytes | None, int]]] = {}
    for i in range(n):
        ts = 1_000_000 + i * 100 + rnd.randrange(-500, 500)
        tp = ("f", rnd.randrange(3))
        per.setdefault(tp, []).append((features(i, ts), ts))
        if i > 5:
            per.setdefault(("l", 0), []).append((label(i - 5, ts), ts))
        if rnd.random() < 0.05:
            per.setdefault((rnd.choice("flp"), 0), []).append((rnd.choice(HOSTILE), ts))
    per[("f", 1)].insert(10, (features(10_000, 253_402_300_799_000), 7))
    queues = {tp: [Record(tp[0], tp[1], o, v, f"k{o}".encode(), kts) for o, (v, kts) in enumerate(recs)]
              for tp, recs in per.items()}  # fmt: skip
    out = []
    while queues:
        tp = rnd.choice(sorted(queues))
        out.append(queues[tp].pop(0))
        if not queues[tp]:
            del queues[tp]
    return out


def merger_order(records: list[Record], *, kafka_time: bool = False) -> list[tuple[str, int, int]]:
    """The oracle: every record added to a Merger at once, then released."""
    m = Merger(dict(RANKS))
    for r in records:
        data = decode(r.value)
        ts = r.timestamp if kafka_time else event_time(data, label_ok=LABEL_OK)
        m.add(r.topic, r.partition, r.offset, ts, data, r.value, r.key)
    return [(p.topic, p.partition, p.offset) for p in m.ready(lambda tp: True)]


def order(loop: MergeLoop) -> list[tuple[str, int, int]]:
    return [(p.topic, p.partition, p.offset) for p in loop.records()]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("batch", [1, 7, 10_000])
def test_memory_and_file_sources_give_the_mergers_order(seed: int, batch: int, tmp_path: Path) -> None:
    records = stream(seed)
    expected = merger_order(records)
    assert len(expected) == len(records)
    assert order(MergeLoop(MemoryRecords(records, batch=batch), RANKS, label_ok=LABEL_OK)) == expected
    path = tmp_path / "records.jsonl"
    assert write_records(path, records) == len(records)
    assert read_records(path) == records  # bytes, keys, timestamps, empty and missing values
    assert order(MergeLoop(FileRecords(path, batch=batch), RANKS, label_ok=LABEL_OK)) == expected
    by_kafka_time = merger_order(records, kafka_time=True)
    assert by_kafka_time != expected
    assert order(MergeLoop(FileRecords(path, batch=batch), RANKS, kafka_time=True)) == by_kafka_time


def test_the_released_records_are_decoded_with_their_bytes_and_keys() -> None:
    records = stream(1, n=50)
    by_position = {(r.topic, r.partition, r.offset): r for r in records}
    for p in MergeLoop(MemoryRecords(records, batch=3), RANKS, label_ok=LABEL_OK).records():
        r = by_position[(p.topic, p.partition, p.offset)]
        assert (p.raw, p.key, p.value) == (r.value, r.key, decode(r.value))
        assert p.rank == RANKS[p.topic]


class Tail(MemoryRecords):
    """A log that is never finished, whose partitions are never exhausted unless said: a live tail that
    has delivered what it had so far."""

    def __init__(self, records: list[Record], done: set[tuple[str, int]]) -> None:
        super().__init__(records, batch=1)
        self.done = done
        self.tracked = sorted({(r.topic, r.partition) for r in records} | done)

    def assigned(self) -> list[tuple[str, int]]:
        return self.tracked

    def exhausted(self, tp: tuple[str, int]) -> bool:
        return tp in self.done and super().exhausted(tp)

    def finished(self) -> bool:
        return False


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: repr(h)[:30])
def test_a_hostile_record_never_holds_back_the_others(hostile: bytes | None) -> None:
    """A record without a time (undecodable, empty, refused whatever its stamp) at the head of its partition
    is released at once, in a tail that polls one record a turn: the good label behind it and the features
    of the other partition go on in their time order, as if it were not there."""
    good = [Record("f", 0, o, features(o, 1_000 + o)) for o in range(5)]
    log = Tail([Record("l", 0, 0, hostile), Record("l", 0, 1, label(0, 1_001)), *good], {("f", 0), ("l", 0)})
    loop = MergeLoop(log, RANKS, label_ok=LABEL_OK)
    taken = [p for _ in range(20) for p in loop.round()]  # turns of a tail
    assert [(p.topic, p.offset) for p in taken] == [
        ("l", 0),
        ("f", 0),
        ("l", 1),
        *[("f", o) for o in range(1, 5)],
    ]
    assert taken[0].ts == NO_TIME and taken[0].raw == hostile
    assert not loop.buffered()


def test_a_partition_that_may_still_deliver_holds_the_others_until_it_does() -> None:
    """The controls of the test above: a good label at the head is merged at its time (the one behind it
    follows it); and an empty partition not read to its end holds back every record (it may still deliver
    an earlier one)."""
    good = [Record("f", 0, o, features(o, 1_000 + o)) for o in range(5)]
    labels = [Record("l", 0, 0, label(1, 1_003)), Record("l", 0, 1, label(0, 1_001))]
    loop = MergeLoop(Tail([*labels, *good], {("f", 0), ("l", 0)}), RANKS, label_ok=LABEL_OK)
    taken = [(p.topic, p.offset) for _ in range(20) for p in loop.round()]
    assert taken == [("f", 0), ("f", 1), ("f", 2), ("l", 0), ("l", 1), ("f", 3), ("f", 4)]
    waiting = MergeLoop(Tail([*labels, *good], {("f", 0)}), RANKS, label_ok=LABEL_OK)
    taken = [(p.topic, p.offset) for _ in range(20) for p in waiting.round()]
    assert taken == [("f", 0), ("f", 1), ("f", 2), ("l", 0), ("l", 1)] and waiting.buffered() == 2


def test_the_journal_order_replays_what_was_taken_from_any_source(tmp_path: Path) -> None:
    records = stream(3)
    journal, taken = OrderJournal(), []
    for p in MergeLoop(MemoryRecords(records, batch=5), RANKS, label_ok=LABEL_OK).records():
        journal.add((p.topic, p.partition))
        taken.append((p.topic, p.partition, p.offset))
    write_records(tmp_path / "r.jsonl", records)

    def missing(topic: str, partition: int) -> Exception:
        return LookupError(f"{topic}[{partition}]")

    for log in (MemoryRecords(records, batch=3), FileRecords(tmp_path / "r.jsonl")):
        again = in_journal_order(log, [journal.to_header()], on_missing=missing)
        assert [(p.topic, p.partition, p.offset) for p in again] == taken
    short = [r for r in records if not (r.topic == "l" and r.offset == 3)]
    with pytest.raises(LookupError, match=r"l\[0\]"):
        list(in_journal_order(MemoryRecords(short), [journal.to_header()], on_missing=missing))
