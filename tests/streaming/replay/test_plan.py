"""A replay built by hand as a :class:`ReplayRequest` and run by :func:`run_replay`, without the command
line: River's progressive validation on the same rows is the oracle; the limit counts events, and the
progress it reports ends at what it read."""

from __future__ import annotations

import itertools

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing

from features.definitions import FeatureView
from streaming.ingest.rows import RowMapping
from streaming.learning.spec import ModelSpec
from streaming.replay.plan import ReplayError, ReplayRequest, RowSource, candidates, label_mode, run_replay
from streaming.replay.runner import LabelMode
from streaming.settings import Settings

pytestmark = pytest.mark.unit

RAW = FeatureView(name="raw", include_fields=True)
OTHER = FeatureView(name="other", include_fields=True)
MAPPING = RowMapping(entities=10, start_ts=1_700_000_000_000, step_ms=1_000)


def lr() -> object:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


SPECS = [
    ModelSpec("lr", "binary", "raw", lr, metrics=(metrics.LogLoss,)),  # type: ignore[arg-type]
    ModelSpec("lr-other", "binary", "other", lr, metrics=(metrics.LogLoss,)),  # type: ignore[arg-type]
]


class Recorder:
    def __init__(self) -> None:
        self.totals: list[int | None] = []
        self.done: list[int] = []

    def start(self, total: int | None) -> None:
        self.totals.append(total)

    def update(self, done: int, rate: float) -> None:
        self.done.append(done)


@pytest.mark.parametrize("delay", [None, 7])
def test_a_request_replays_the_first_rows_as_river_scores_them(delay: int | None) -> None:
    progress = Recorder()
    request = ReplayRequest(
        RowSource("river:Phishing", MAPPING),
        candidates(SPECS, ["lr"]),
        [RAW],
        labels=label_mode(delay, None),
        limit=300,
    )
    result = run_replay(Settings(), request, progress)
    first = list(itertools.islice(datasets.Phishing(), 300))
    expected = evaluate.progressive_val_score(first, lr(), metrics.LogLoss(), delay=delay)
    assert list(result.models) == ["lr"]  # only the chosen candidate
    assert result.records == 300 and result.models["lr"].counters["learned"] == 300
    assert result.models["lr"].metrics["LogLoss"] == pytest.approx(expected.get(), rel=1e-12)
    assert result.labels == (LabelMode() if delay is None else LabelMode("records", delay)).describe()
    assert result.source == "river:Phishing" and result.order == "event-time"
    assert progress.totals == [300] and progress.done[-1] == 300


def test_a_request_that_cannot_run_is_refused_before_reading() -> None:
    with pytest.raises(ReplayError, match="not both"):
        label_mode(1, 1)
    with pytest.raises(ReplayError, match="no spec 'nope'; specs: lr, lr-other"):
        candidates(SPECS, ["lr", "nope"])
    assert [s.name for s in candidates(SPECS, None)] == ["lr", "lr-other"]
