"""A defect on one record (anything raised while routing it that is not a rejection) never stops the
learner: the record is an ``error`` dead letter at its position, the models it was routed to are quarantined
(their state may be partly updated), the models of other views and the positions go on."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streaming.learning.core import LearnerCore
from streaming.learning.deadletters import MemorySink
from streaming.learning.router import Router
from streaming.learning.spec import ModelSpec
from tests.streaming.learning.test_isolation import METRICS, ROLES, SPECS, good_stream, positioned, scaled_lr

pytestmark = pytest.mark.unit


def test_an_unexpected_exception_on_one_record_is_an_error_letter_and_the_learner_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = ModelSpec("other", "binary", "w", scaled_lr, metrics=METRICS)
    core = LearnerCore([*SPECS, other])
    sink = MemorySink()
    router = Router(core, ROLES, sink=sink)
    good = good_stream(300)
    at = next(i for i, (t, v) in enumerate(good) if t == "f" and v["event"]["event_id"] == "e40")
    real = LearnerCore.on_record

    def on_record(self: LearnerCore, *args: Any, **kwargs: Any) -> Any:
        if "e40" in args or "e40" in kwargs.values():
            raise RuntimeError("a defect nobody foresaw")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LearnerCore, "on_record", on_record)
    w = [("f", {**v, "view": "w"}) for t, v in good[:60] if t == "f"]  # the other view's records
    recs = positioned(good + w)
    for rec in recs:
        router.process(rec)  # before: RuntimeError out of process, and again after every restart

    bad = recs[at]
    assert [(d.reason, d.models, d.record.topic, d.record.offset) for d in sink.letters] == [
        ("error", ("lr", "tree"), "f", bad.offset)
    ]
    letter = orjson.loads(sink.letters[0].to_json())
    assert letter["stage"] == "learner" and "a defect nobody foresaw" in letter["error"]
    assert orjson.loads(sink.letters[0].record.value or b"") == good[at][1]
    for name in ("lr", "tree"):
        state = core.models[name]
        assert state.status == "quarantined" and "a defect nobody foresaw" in (state.quarantine or "")
        assert state.rejected == {"error": 1}
        # the positions go on past the record: a restart does not meet it again
        assert router.offsets[name]["f"][0] == recs[-1].offset + 1
    assert core.models["other"].status == "learning" and core.models["other"].rejected == {}
    # the other view's model learns exactly as on the same stream without the defect
    monkeypatch.setattr(LearnerCore, "on_record", real)
    reference = LearnerCore([*SPECS, other])
    ref_router = Router(reference, ROLES, sink=MemorySink())
    for rec in positioned(good + w):
        ref_router.process(rec)
    got, want = core.models["other"], reference.models["other"]
    assert got.n_learned == want.n_learned > 0 and got.metric_values() == want.metric_values()
