"""A record the router refuses whatever the models' state has no merge time: released as soon as it heads its
partition, it never holds back the good records behind it. Before, a refused label stamped 23 hours ahead
held every later label of its partition until all features had passed: the models learned late and the
metrics were not those of the stream without it.

A record refused on its values alone (a number beyond the numeric domain, an inline label no model's task
takes) had its time too, and that time entered its partition's clock (:mod:`streaming.learning.clock`):
stamped in year 1 at the head of a partition, it made the median of the partition's first two times year 1,
and the partition's first good record (more than a day past it) was merged at year 1, ahead of the earlier
good records of the other partitions (the pipeline fuzz test's failure: ``lr``'s LogLoss off River's).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import pytest

from features.events import MIN_TS_MS
from streaming.learning.core import LearnerCore
from streaming.learning.deadletters import MemorySink
from streaming.learning.labels import taken_by_any
from streaming.learning.merge import NO_TIME, Merger, decode, event_time
from streaming.learning.router import Router
from tests.streaming.learning.test_isolation import ROLES, SPECS, good_stream, oracle
from tests.support.model_defs import scaled_lr

pytestmark = pytest.mark.unit

AHEAD = 23 * 3_600_000  # within the merge's MAX_SKEW_MS: a refused record's own time counted before

REFUSED = [
    ("l", {"event_id": "e4", "label": ["banana"], "ts": AHEAD}),  # not a scalar: no task takes it
    ("l", {"event_id": "e" * 201, "label": True, "ts": AHEAD}),  # not an id
    ("l", {"label": True, "ts": AHEAD}),  # no id at all
    ("f", {"view": "v", "features": [1], "event": {"event_id": "x", "ts": AHEAD}}),  # no vector
    ("f", {"features": {"a": 1}, "event": {"event_id": "y", "ts": AHEAD}}),  # no view
    ("p", {"view": "v", "features": {"a": 1}, "ts": AHEAD}),  # no prediction id
    ("f", {"view": "v", "features": {"a": 1e308}, "event": {"event_id": "z", "ts": AHEAD}}),  # value_domain
    ("p", {"view": "v", "features": {"a": [1]}, "prediction_id": "q", "ts": AHEAD}),  # not a scalar
]


def merged(stream: list[tuple[str, Any]], label_ok: Any = None) -> list[Any]:
    """The learner's merge over one partition per topic, every record read (the order the models see);
    ``label_ok``: the specs' label rules, as the live learner gives them."""
    merger = Merger({"l": 0, "f": 1, "p": 2})
    offsets = {"l": 0, "f": 0, "p": 0}
    for topic in offsets:
        merger.track(topic, 0)
    for topic, value in stream:
        raw = orjson.dumps(value)
        data = decode(raw)
        merger.add(topic, 0, offsets[topic], event_time(data, label_ok=label_ok), data, raw)
        offsets[topic] += 1
    return list(merger.ready(lambda tp: True))


def assert_as_river(core: LearnerCore, good: list[tuple[str, Any]]) -> None:
    """``lr`` learned exactly as River's progressive validation on the good stream alone: as many records,
    the same Accuracy and LogLoss, nothing expired or held early."""
    want, learned = oracle(scaled_lr(), good)
    state = core.models["lr"]
    assert state.n_learned == learned
    assert state.metric_values()["Accuracy"] == want["Accuracy"]
    assert state.metric_values()["LogLoss"] == pytest.approx(want["LogLoss"], rel=1e-12)
    assert state.counters["expired"] == 0 and state.counters["early_labels"] == 0


@pytest.mark.parametrize("refused", REFUSED, ids=lambda r: orjson.dumps(r[1])[:40].decode())
def test_a_refused_record_23_hours_ahead_holds_back_nothing(refused: tuple[str, dict[str, Any]]) -> None:
    assert event_time(refused[1]) == NO_TIME
    good = good_stream(400)
    stream = [*good[:10], refused, *good[10:]]  # early in its partition, before most good records
    core = LearnerCore(SPECS)
    sink = MemorySink()
    router = Router(core, ROLES, sink=sink)
    for rec in merged(stream):
        router.process(rec)
    assert len(sink.letters) == 1 and sink.letters[0].record.topic == refused[0]
    assert_as_river(core, good)


def test_a_label_only_the_models_tasks_refuse_holds_back_nothing() -> None:
    """A well-formed label that every model's task refuses ("banana" for binary models) is merged at once
    when the merge is given the specs' label rules, as the live learner, the demo and replay give it."""
    banana = ("l", {"event_id": "e4", "label": "banana", "ts": AHEAD})
    takes = taken_by_any(SPECS)
    assert event_time(banana[1]) == AHEAD  # well-formed: without the rules it has its time
    assert event_time(banana[1], label_ok=takes) == NO_TIME
    good = good_stream(400)
    stream = [*good[:10], banana, *good[10:]]
    core = LearnerCore(SPECS)
    sink = MemorySink()
    router = Router(core, ROLES, sink=sink)
    for rec in merged(stream, label_ok=takes):
        router.process(rec)
    assert [(d.reason, d.models) for d in sink.letters] == [("label_type", ("lr", "tree"))]
    want, learned = oracle(scaled_lr(), good)
    state = core.models["lr"]
    assert state.n_learned == learned
    assert state.metric_values()["LogLoss"] == pytest.approx(want["LogLoss"], rel=1e-12)
    assert state.counters["expired"] == 0 and state.counters["early_labels"] == 0


# features records the router refuses on their values alone, for every model: (record, reason)
REFUSED_ON_VALUES = [
    ({"view": "v", "event": {"event_id": "huge"}, "features": {"salary": 1e308, "age": 30}}, "value_domain"),
    ({"view": "v", "event": {"event_id": "b", "label": "banana"}, "features": {"salary": 1.0}}, "label_type"),
]


@pytest.mark.parametrize("ts", [MIN_TS_MS, AHEAD], ids=["year 1", "23 h ahead"])
@pytest.mark.parametrize("refused", REFUSED_ON_VALUES, ids=["value_domain", "inline_label"])
def test_a_features_record_refused_on_its_values_moves_no_good_record(
    refused: tuple[dict[str, Any], str], ts: int
) -> None:
    """Two features partitions (the good records alternate between them); the refused record heads
    partition 1, stamped in year 1 (no later than the good records, as a backdated event is) or ahead."""
    record, reason = refused
    record = {**record, "event": {**record["event"], "ts": ts}}
    takes = taken_by_any(SPECS)
    assert event_time(record, label_ok=takes) == NO_TIME
    merger = Merger({"l": 0, "f": 1, "p": 2})
    offsets: dict[tuple[str, int], int] = defaultdict(int)

    def add(topic: str, partition: int, value: dict[str, Any]) -> None:
        raw = orjson.dumps(value)
        data = decode(raw)
        merger.add(topic, partition, offsets[topic, partition], event_time(data, label_ok=takes), data, raw)
        offsets[topic, partition] += 1

    for tp in [("l", 0), ("f", 0), ("f", 1), ("p", 0)]:
        merger.track(*tp)
    add("f", 1, record)
    good = good_stream(400)
    for n, (topic, value) in enumerate(good):
        add(topic, n % 2 if topic == "f" else 0, value)
    core = LearnerCore(SPECS)
    sink = MemorySink()
    router = Router(core, ROLES, sink=sink)
    for rec in merger.ready(lambda tp: True):
        router.process(rec)
    assert [(d.reason, d.models, d.record.partition) for d in sink.letters] == [(reason, ("lr", "tree"), 1)]
    assert_as_river(core, good)
