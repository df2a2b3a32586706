"""The learner's metrics without services: lifecycle decisions counted per spec and kind (the session's own
handler still told), dead letters counted by reason and stage on their way to the sink."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest

from streaming.learning.deadletters import MemorySink, learner_letter
from streaming.learning.evidence import Decision
from streaming.runtime.learner_metrics import LearnerMetrics

pytestmark = pytest.mark.unit


def value(metrics: LearnerMetrics, line_start: str) -> float:
    [line] = [x for x in generate_latest(metrics.registry).decode().splitlines() if x.startswith(line_start)]
    return float(line.rsplit(" ", 1)[1])


def test_decisions_are_counted_and_passed_on() -> None:
    metrics = LearnerMetrics()
    told: list[Decision] = []
    session = SimpleNamespace(core=SimpleNamespace(on_decision=told.append))
    metrics.watch(session)  # type: ignore[arg-type]
    for kind in ("challenger", "promotion", "challenger", "rollback"):
        session.core.on_decision(Decision(kind, "m", "m", "m~5", 9))
    assert [d.kind for d in told] == ["challenger", "promotion", "challenger", "rollback"]
    assert value(metrics, 'rivulet_learner_decisions_total{kind="challenger",spec="m"}') == 2
    assert value(metrics, 'rivulet_learner_decisions_total{kind="promotion",spec="m"}') == 1
    assert value(metrics, 'rivulet_learner_decisions_total{kind="rollback",spec="m"}') == 1


def test_dead_letters_counted_by_reason_and_stage() -> None:
    metrics = LearnerMetrics()
    inner = MemorySink()
    sink = metrics.sink(inner)
    for reason in ("invalid", "invalid", "label_type"):
        sink.send(learner_letter(reason, "bad", "t", 0, 1, b"x", None, ("m",)))
    sink.flush()
    assert inner.counts == {"invalid": 2, "label_type": 1}
    assert value(metrics, 'rivulet_learner_dead_letters_total{reason="invalid",stage="learner"}') == 2
    assert value(metrics, 'rivulet_learner_dead_letters_total{reason="label_type",stage="learner"}') == 1
