"""The merge (:class:`streaming.learning.merge.Merger`) and the order journal, tested directly with
hypothesis: the merge's output is sorted by (time, topic rank, partition, offset) across several partitions
of several records each; a partition with nothing buffered that is not read to its end holds every other
partition back; and an order journal replays any sequence of additions, over consecutive journals too.

The oracles are independent of the implementation: ``sorted`` over the merge key, and a plain list scan
(no heap) for partitions whose own times are not in order."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.events import MAX_TS_MS, MIN_TS_MS
from streaming.learning.merge import (
    MAX_ID_CHARS,
    MAX_SKEW_MS,
    NO_TIME,
    Merger,
    OrderJournal,
    Positioned,
    Undecodable,
    decode,
    event_time,
    is_id,
    is_time,
)

pytestmark = pytest.mark.unit

RANKS = {"labels": 0, "features": 1, "predictions": 2}
TP = tuple[str, int]

# times well inside MAX_SKEW_MS of each other: the merge time is the record's own time (no clamping)
times = st.integers(min_value=0, max_value=MAX_SKEW_MS // 10)
partitions = st.tuples(st.sampled_from(sorted(RANKS)), st.integers(min_value=0, max_value=3))


@st.composite
def streams(draw: st.DrawFn, ordered: bool) -> dict[TP, list[int]]:
    """Per partition, the times of its records in offset order (2 to 5 partitions of 1 to 8 records);
    ``ordered``: each partition's own times are non-decreasing, as an event-time-ordered topic's are."""
    tps = draw(st.lists(partitions, min_size=2, max_size=5, unique=True))
    out = {}
    for tp in tps:
        ts = draw(st.lists(times, min_size=1, max_size=8))
        out[tp] = sorted(ts) if ordered else ts
    return out


def filled(stream: dict[TP, list[int]]) -> Merger:
    m = Merger(dict(RANKS))
    for (topic, partition), ts in stream.items():
        for offset, t in enumerate(ts):
            m.add(topic, partition, offset, t, (topic, partition, offset), raw=b"r", key=b"k")
    return m


def key(r: Positioned) -> tuple[int, int, int, int]:
    return (r.ts, r.rank, r.partition, r.offset)


def drained(tp: TP) -> bool:
    return True


def naive_merge(stream: dict[TP, list[int]]) -> list[tuple[str, int, int]]:
    """The merge by definition: repeatedly take the partition whose head has the least key."""
    heads = {tp: 0 for tp in stream}
    out = []
    while True:
        live = [tp for tp in stream if heads[tp] < len(stream[tp])]
        if not live:
            return out
        tp = min(live, key=lambda tp: (stream[tp][heads[tp]], RANKS[tp[0]], tp[1], heads[tp]))
        out.append((tp[0], tp[1], heads[tp]))
        heads[tp] += 1


@given(streams(ordered=True))
def test_the_output_is_sorted_by_time_then_topic_rank_then_partition_then_offset(
    stream: dict[TP, list[int]],
) -> None:
    m = filled(stream)
    out = list(m.ready(drained))
    assert len(out) == sum(map(len, stream.values())) and m.buffered() == 0
    assert [key(r) for r in out] == sorted(key(r) for r in out)
    # the sort is over (ts, rank, partition, offset): ties in time go to the lower rank (labels first)
    records = [(topic, p, o, t) for (topic, p), ts in stream.items() for o, t in enumerate(ts)]
    expected = sorted(((t, RANKS[topic], p, o), (topic, p, o)) for topic, p, o, t in records)
    assert [r.value for r in out] == [v for _, v in expected]
    assert all((r.topic, r.partition, r.offset) == r.value and r.raw == b"r" and r.key == b"k" for r in out)


@given(streams(ordered=False))
def test_each_partition_is_released_in_offset_order_by_its_head(stream: dict[TP, list[int]]) -> None:
    out = [r.value for r in filled(stream).ready(drained)]
    assert out == naive_merge(stream)


@given(streams(ordered=True), st.data())
def test_a_partition_with_nothing_yet_holds_every_other_back(
    stream: dict[TP, list[int]], data: st.DataObject
) -> None:
    m = filled(stream)
    empty = data.draw(partitions.filter(lambda tp: tp not in stream), label="empty partition")
    m.track(*empty)
    assert list(m.ready(lambda tp: tp != empty)) == []  # it may still deliver an earlier record
    assert m.sizes()[empty] == 0 and m.buffered() == sum(map(len, stream.values()))
    # read to its end, it holds nothing back
    assert [r.value for r in m.ready(drained)] == naive_merge(stream)


@given(streams(ordered=True), st.data())
def test_release_stops_when_a_partition_not_read_to_its_end_runs_dry(
    stream: dict[TP, list[int]], data: st.DataObject
) -> None:
    tailing = data.draw(st.sampled_from(sorted(stream)), label="tailing partition")
    full = naive_merge(stream)
    last = max(i for i, v in enumerate(full) if v[:2] == tailing)  # its last record buffered
    m = filled(stream)
    first = [r.value for r in m.ready(lambda tp: tp != tailing)]
    assert first == full[: last + 1]  # up to its last record, nothing after it
    assert m.buffered() == len(full) - len(first)
    # its next record arrives, later than everything: the rest is released once it is read to its end
    topic, partition = tailing
    end = max(t for ts in stream.values() for t in ts) + 1
    m.add(topic, partition, len(stream[tailing]), end, "late")
    assert [r.value for r in m.ready(drained)] == [*full[last + 1 :], "late"]


def test_a_record_without_a_time_is_released_as_soon_as_it_heads_its_partition() -> None:
    m = Merger(dict(RANKS))
    m.add("features", 0, 0, 10, "a")
    m.add("features", 1, 0, NO_TIME, "refused")
    m.add("features", 1, 1, 5, "b")
    assert [r.value for r in m.ready(drained)] == ["refused", "b", "a"]


def test_a_time_far_past_its_partition_is_merged_at_its_median() -> None:
    m = Merger(dict(RANKS))
    for offset, t in enumerate([100, 200, 300, 300 + MAX_SKEW_MS + 1, 400]):
        m.add("features", 0, offset, t, offset)
    m.add("features", 1, 0, 350, "other")
    out = list(m.ready(drained))
    assert [r.value for r in out] == [0, 1, 2, 3, "other", 4]
    assert out[3].ts == 200  # the median of 100, 200, 300 and itself
    one = Merger(dict(RANKS))
    one.add("features", 0, 0, 100, "x")
    one.add("features", 0, 1, 100 + MAX_SKEW_MS, "at the edge")  # exactly the tolerance: its own time
    assert [r.ts for r in one.ready(drained)] == [100, 100 + MAX_SKEW_MS]


# ---------------------------------------------------------------- the order journal

journal_tps = st.tuples(st.sampled_from(["f", "l", "p"]), st.integers(min_value=0, max_value=2))


def journal_of(seq: list[TP]) -> OrderJournal:
    j = OrderJournal()
    for tp in seq:
        j.add(tp)
    return j


@given(st.lists(journal_tps, max_size=60))
def test_an_order_journal_replays_any_sequence_of_additions(seq: list[TP]) -> None:
    j = journal_of(seq)
    header: dict[str, Any] = orjson.loads(orjson.dumps(j.to_header()))  # as a checkpoint stores it
    assert list(OrderJournal.steps([header])) == seq
    assert len(j) == len(seq)
    assert all(j.has(tp) == (tp in seq) for tp in [*seq, ("f", 9)])
    runs = header["runs"]
    assert all(n > 0 for n in runs[1::2])  # run-length encoded: no empty run...
    assert all(a != b for a, b in zip(runs[0::2], runs[2::2], strict=False))  # ...and no two runs alike
    assert len(header["tps"]) == len(set(seq))  # each partition named once, however often it comes back


@given(st.lists(st.lists(journal_tps, max_size=20), min_size=1, max_size=4))
def test_consecutive_journals_replay_as_one_sequence(parts: list[list[TP]]) -> None:
    headers = [journal_of(part).to_header() for part in parts]
    assert list(OrderJournal.steps(headers)) == [tp for part in parts for tp in part]


def test_a_partition_that_goes_away_and_comes_back_is_a_new_run_of_the_same_index() -> None:
    j = journal_of([("f", 0), ("f", 0), ("l", 0), ("f", 0), ("f", 1), ("f", 0)])
    assert j.to_header() == {"tps": [["f", 0], ["l", 0], ["f", 1]], "runs": [0, 2, 1, 1, 0, 1, 2, 1, 0, 1]}


def interleaving(stream: dict[TP, list[int]], senders: list[TP]) -> list[tuple[TP, int]]:
    """The arrivals when ``senders[i]`` is the partition that sends the i-th record: each partition's
    records come in its own offset order, the partitions interleaved in any way.

    >>> interleaving({("a", 0): [5, 6], ("b", 0): [7]}, [("a", 0), ("b", 0), ("a", 0)])
    [(('a', 0), 0), (('b', 0), 0), (('a', 0), 1)]
    """
    sent = dict.fromkeys(stream, 0)
    arrivals = []
    for tp in senders:
        arrivals.append((tp, sent[tp]))
        sent[tp] += 1
    assert sent == {tp: len(ts) for tp, ts in stream.items()}
    return arrivals


@settings(max_examples=50)
@given(streams(ordered=False), st.data())
def test_the_journal_of_a_merge_replays_its_order_whatever_the_arrival(
    stream: dict[TP, list[int]], data: st.DataObject
) -> None:
    """What the journal is for: a live learner takes records in an order that depends on arrival; the
    journal of that order, with each partition read in offset order, gives back exactly that order."""
    tokens = [tp for tp, ts in stream.items() for _ in ts]  # one per record: its partition
    arrivals = interleaving(stream, data.draw(st.permutations(tokens), label="which partition sends next"))
    m, j, taken = Merger(dict(RANKS)), OrderJournal(), []
    for (topic, partition), offset in arrivals:
        m.add(topic, partition, offset, stream[(topic, partition)][offset], (topic, partition, offset))
        for r in m.ready(lambda tp: True):
            j.add((r.topic, r.partition))
            taken.append(r.value)
    heads = dict.fromkeys(stream, 0)
    replayed = []
    for tp in OrderJournal.steps([j.to_header()]):
        replayed.append((*tp, heads[tp]))
        heads[tp] += 1
    assert replayed == taken and sorted(taken) == sorted((*tp, o) for tp, o in arrivals)


# ---------------------------------------------------------------- what a record's merge time is


def test_decode_says_why_a_record_has_no_value() -> None:
    assert decode(b"") == decode(None) == Undecodable("an empty record")
    assert decode(b"[1]") == [1]
    refused = decode(b"{x")
    assert isinstance(refused, Undecodable) and refused.error.startswith("not JSON: ")


def test_an_id_is_a_string_of_1_to_200_characters() -> None:
    assert is_id("e") and is_id("e" * MAX_ID_CHARS)
    assert not is_id("") and not is_id("e" * (MAX_ID_CHARS + 1)) and not is_id(7)


def test_a_time_is_an_int_within_the_event_schemas_years() -> None:
    assert is_time(MIN_TS_MS) and is_time(MAX_TS_MS) and is_time(0)
    assert not is_time(MIN_TS_MS - 1) and not is_time(MAX_TS_MS + 1)
    assert not is_time(True) and not is_time(5.0) and not is_time("5")


@pytest.mark.parametrize(
    ("data", "ts"),
    [
        ({"view": "v", "features": {}, "event": {"event_id": "e", "ts": 5}}, 5),
        ({"view": "v", "features": {}, "prediction_id": "p", "ts": 6}, 6),
        ({"event": {"event_id": "e", "ts": 5}, "entity": "u", "ts": 5}, NO_TIME),  # an event key: no view
        ({"features": {}, "entity": "u", "ts": 5}, NO_TIME),  # a features key: no view
        ({"view": "v", "features": {}, "event": "e", "ts": 5}, NO_TIME),  # an event that is not a mapping
        ({"view": "v", "features": {}, "event": "e", "prediction_id": "p", "ts": 5}, NO_TIME),
        ({"view": "v", "features": {}, "prediction_id": "p", "ts": "6"}, NO_TIME),
        ({"view": "v", "features": {}, "ts": 6}, NO_TIME),  # a served prediction without its id
        ({"view": "v", "features": {}, "event": {"event_id": "", "ts": 5}}, NO_TIME),
        ({"view": "v", "features": {}, "prediction_id": "p" * 201, "ts": 6}, NO_TIME),
        ({"entity": "u", "ts": 9, "fields": {}}, 9),
        ({"entity": "u", "ts": "9", "fields": {}}, NO_TIME),
        ({"event_id": "e", "label": True, "ts": 7}, 7),
        ({"prediction_id": "p", "label": 2.5, "ts": 8}, 8),
        ([1, 2], NO_TIME),
    ],
)
def test_the_merge_time_of_each_kind_of_record(data: Any, ts: int) -> None:
    assert event_time(data) == ts


def test_a_label_no_models_task_takes_has_no_time() -> None:
    label = {"event_id": "e", "label": "banana", "ts": 7}
    assert event_time(label, label_ok=lambda y: isinstance(y, bool)) == NO_TIME
    assert event_time(label, label_ok=lambda y: True) == 7
    assert event_time(label, fallback=3, label_ok=lambda y: False) == 3
