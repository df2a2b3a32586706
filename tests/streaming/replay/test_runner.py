"""The replay runner on files and River datasets (no services): River's own progressive validation on the
same dataset is the oracle, inline and with simulated label delays."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing, tree
from typer.testing import CliRunner

from features.definitions import FeatureView
from streaming.cli import app
from streaming.ingest.rows import RowMapping
from streaming.learning.spec import ModelSpec
from streaming.replay.report import curve_points, html_report, metrics_table
from streaming.replay.runner import LabelMode, Replay
from streaming.replay.sources import file_records

pytestmark = pytest.mark.unit

RAW = FeatureView(name="raw", include_fields=True)  # the event's own fields, as River gives them
MAPPING = RowMapping(entities=10, start_ts=1_700_000_000_000, step_ms=1_000)


def lr() -> object:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


SPECS = [
    ModelSpec("lr", "binary", "raw", lr, metrics=(metrics.LogLoss, metrics.Accuracy)),  # type: ignore[arg-type]
    ModelSpec("tree", "binary", "raw", tree.HoeffdingTreeClassifier, metrics=(metrics.Accuracy,)),
]


def run(labels: LabelMode, sample_every: int = 100) -> Replay:
    replay = Replay(SPECS, views=[RAW], labels=labels, sample_every=sample_every)
    replay.run(file_records("river:Phishing", MAPPING))
    return replay


@pytest.mark.parametrize("delay", [None, 1, 25])
def test_replay_metrics_equal_progressive_val_score(delay: int | None) -> None:
    replay = run(LabelMode() if delay is None else LabelMode("records", delay))
    result = replay.finish("river:Phishing", {}, "event-time")
    n = sum(1 for _ in datasets.Phishing())
    assert result.records == n
    expected_ll = evaluate.progressive_val_score(datasets.Phishing(), lr(), metrics.LogLoss(), delay=delay)
    expected_acc = evaluate.progressive_val_score(
        datasets.Phishing(), tree.HoeffdingTreeClassifier(), metrics.Accuracy(), delay=delay
    )
    assert result.models["lr"].metrics["LogLoss"] == pytest.approx(expected_ll.get(), rel=1e-12)
    assert result.models["tree"].metrics["Accuracy"] == pytest.approx(expected_acc.get(), rel=1e-12)
    assert all(m.counters["learned"] == n and m.counters["pending"] == 0 for m in result.models.values())


def test_simulated_delay_changes_the_result() -> None:
    """A control for the test above: the delay is really applied (a model learning later scores worse)."""
    inline = run(LabelMode()).finish("s", {}, "event-time").models["lr"].metrics["LogLoss"]
    late = run(LabelMode("records", 200)).finish("s", {}, "event-time").models["lr"].metrics["LogLoss"]
    assert late != inline


def test_curves_report_and_table() -> None:
    result = run(LabelMode(), sample_every=100).finish("river:Phishing", {"limit": None}, "event-time")
    points = curve_points(result, "lr", "LogLoss")
    assert [n for n, _ in points] == [*range(100, 1201, 100), 1250]
    assert points[-1][1] == result.models["lr"].metrics["LogLoss"]  # the curve ends at the final value
    page = html_report(result)
    start = page.index('<script id="replay-data" type="application/json">') + len(
        '<script id="replay-data" type="application/json">'
    )
    embedded = orjson.loads(page[start : page.index("</script>", start)])
    assert embedded["models"]["tree"]["curve"][-1][0] == 1250
    assert "uPlot" in page and "RivuletCharts" in page and "@@" not in page
    table = metrics_table(result)
    assert [c.header for c in table.columns][:3] == ["model", "Accuracy", "LogLoss"]


def test_curves_have_no_points_before_a_model_has_learned() -> None:
    """With labels 250 records late, the first two samples come before anything was learned: River would
    report 0 for every metric there, which is no measurement; the curve starts at the first learned label."""
    result = run(LabelMode("records", 250), sample_every=100).finish("s", {}, "event-time")
    curve = result.models["lr"].curve
    assert [(n, values) for n, _, values in curve[:2]] == [(100, {}), (200, {})]
    assert set(curve[2][2]) == {"LogLoss", "Accuracy", "rolling_LogLoss", "rolling_Accuracy"}
    assert curve_points(result, "lr", "Accuracy")[0][0] == 300


def test_invalid_rows_are_counted_not_fatal(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "events.jsonl"
    good = {"entity": "a", "ts": 1_000, "fields": {"x": 1.0}, "label": True}
    path.write_bytes(orjson.dumps(good) + b"\nnot json\n" + orjson.dumps({**good, "ts": "yesterday"}) + b"\n")
    spec = ModelSpec("lr", "binary", "raw", lr)  # type: ignore[arg-type]
    replay = Replay([spec], views=[RAW])
    replay.run(file_records(str(path), RowMapping()))
    result = replay.finish(str(path), {}, "event-time")
    assert result.read == 3 and result.records == 1
    assert result.features["invalid"] == 2
    first, second = result.rejected  # why, with the row
    assert first.startswith("not valid JSON") and first.endswith("(row 2)")
    assert "yesterday" in second and second.startswith("ts:") and second.endswith("(row 3)")


def test_drifts_are_placed_where_they_happened_and_curves_keep_about_400_points() -> None:
    """Labels inline and one view: every record is learned as it comes, so a drift's place in records is
    the number of records learned when it was detected (not the next curve sample)."""
    spec = ModelSpec("lr", "binary", "raw", lr, metrics=(metrics.Accuracy,))  # type: ignore[arg-type]
    replay = Replay([spec], views=[RAW])
    mapping = RowMapping(entities=10, start_ts=1_700_000_000_000, step_ms=1_000)
    records = file_records("synth:drift", mapping, seed=3, drift_at=2_000, drift_width=50)
    replay.run(itertools.islice(records, 6_000))
    result = replay.finish("synth:drift", {}, "event-time")
    model = result.models["lr"]
    assert model.drifts, "the concept drift at 2,000 is detected"
    assert all(d["records"] == d["n_learned"] - 1 for d in model.drifts)  # detected while learning it
    xs = [n for n, _, _ in model.curve]
    assert 400 <= len(xs) < 800 and xs[-1] == result.records
    steps = {b - a for a, b in itertools.pairwise(xs[:-1])}  # the last point is the end
    assert len(steps) == 1  # evenly spaced, whatever the length


def test_replay_cli_on_files_refuses_range_options_and_says_why_nothing_scored(tmp_path: Path) -> None:
    runner = CliRunner()
    # a range option on a dataset is refused by the parser: `replay river:...` is `replay dataset river:...`
    res = runner.invoke(app, ["replay", "river:Phishing", "--start", "offset:5", "--quiet"])
    assert res.exit_code == 2 and "No such option: --start" in res.output

    (tmp_path / "rows.json").write_bytes(b'[{"entity": "a"}]\n')
    res = runner.invoke(app, ["replay", str(tmp_path / "rows.json"), "--out", str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 1, res.output
    assert "expected a JSON object, got list (row 1)" in res.output and "nothing was scored" in res.output

    # a byte-order mark (spreadsheets write one) is not part of the first column's name
    rows = "entity,ts,label,salary\n" + "".join(f"u{i},{1_000 * i},{i % 2},{i}.5\n" for i in range(50))
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    res = runner.invoke(app, ["replay", str(tmp_path / "bom.csv"), "--out", str(tmp_path / "b"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert orjson.loads((tmp_path / "b" / "replay.json").read_bytes())["records"] == 50


def test_bad_rows_are_rejected_and_counted_and_the_good_ones_score_as_without_them(tmp_path: Path) -> None:
    """A replay uses the learner's router: a label the models cannot take or a value outside the numeric
    domain is rejected (counted per model and reason), never fatal, and the metrics are those of the good
    rows alone (River's progressive validation is the oracle)."""
    good = list(itertools.islice(datasets.Phishing(), 600))
    lines = [{**x, "label": y} for x, y in good]
    bad = [
        {**good[0][0], "label": "banana"},
        {**good[1][0], "label": 2},
        {**good[2][0], "empty_server_form_handler": 1e308, "label": True},
    ]
    for k, row in enumerate(bad):
        lines.insert(100 + 150 * k, row)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    replay = Replay(SPECS, views=[RAW], sample_every=100)
    replay.run(file_records(str(path), MAPPING))  # the old replay raised on the banana label
    result = replay.finish(str(path), {}, "event-time")
    expected_ll = evaluate.progressive_val_score(good, lr(), metrics.LogLoss())
    expected_acc = evaluate.progressive_val_score(good, tree.HoeffdingTreeClassifier(), metrics.Accuracy())
    assert result.models["lr"].metrics["LogLoss"] == pytest.approx(expected_ll.get(), rel=1e-12)
    assert result.models["tree"].metrics["Accuracy"] == pytest.approx(expected_acc.get(), rel=1e-12)
    for m in result.models.values():
        assert m.counters["learned"] == len(good)
        assert m.rejected == {"label_type": 2, "value_domain": 1} and m.status == "learning"
    assert result.dead_letters == {"label_type": 2, "value_domain": 1}  # one letter per record
    letters = list(replay.dead_letters.letters)
    assert [orjson.loads(d.record.value or b"{}")["event"]["label"] for d in letters[:2]] == ["banana", 2]


def test_the_replay_command_says_what_was_rejected_for_each_model(tmp_path: Path) -> None:
    labels = ["banana" if i == 10 else str(i % 2) for i in range(50)]
    rows = "entity,ts,label,salary\n" + "".join(f"u{i},{1_000 * i},{y},{i}.5\n" for i, y in enumerate(labels))
    (tmp_path / "rows.csv").write_text(rows)
    res = CliRunner().invoke(
        app, ["replay", str(tmp_path / "rows.csv"), "--out", str(tmp_path / "o"), "--quiet"]
    )
    assert res.exit_code == 0, res.output  # the old replay raised on the banana label
    assert "rejected for approval-lr: 1 label_type" in res.output.replace("\n", " ")
    result = orjson.loads((tmp_path / "o" / "replay.json").read_bytes())
    assert result["models"]["approval-tree"]["rejected"] == {"label_type": 1}
    assert result["models"]["approval-tree"]["counters"]["learned"] == 49


@pytest.mark.parametrize("chunk", [1, 7, 256])
def test_the_replays_feature_step_is_the_feature_workers(tmp_path: Path, chunk: int) -> None:
    """A replay of events computes its features with the feature worker's own pipeline: each event's
    features records are what the worker publishes for it (as the learner decodes them from the features
    topic), in batches of any size, and what the pipeline refuses is counted by its reasons."""
    import asyncio

    from features.pipeline import FeaturePipeline, RawRecord
    from features.store import MemoryStore
    from streaming.learning.merge import decode
    from streaming.replay.runner import FeatureStage
    from tests.support.feature_defs import ALL, ZIP
    from tests.support.oracle import stream

    lines = []
    for i, e in enumerate(stream(400, entities=20, seed=9, step_ms=1_000)):
        d = e.to_dict()
        if i % 37 == 5:
            d["ts"] -= 3_600_000  # late for the direct view (two minutes allowed)
        if i % 41 == 7:
            lines.append(orjson.dumps(d))  # a duplicate
        if i % 53 == 9:
            lines.append(b'{"entity": 5}')  # not an event
        if i % 29 == 3:
            d["fields"].pop("zipcode", None)  # no key for the re-keyed view
        lines.append(orjson.dumps(d))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    records = [rec for rec, _ in file_records(str(path), RowMapping(label_field="label"))]
    stage = FeatureStage([ALL, ZIP])
    got = [out for k in range(0, len(records), chunk) for out in stage.batch(records[k : k + chunk])]

    worker = FeaturePipeline([ALL, ZIP], MemoryStore())  # the worker's pipeline on the producer's bytes
    raws = [
        RawRecord(r.value.to_json(), r.topic, 0, r.offset)
        for r in records
        if not isinstance(r.value, Exception)
    ]
    result = asyncio.run(worker.process(raws))
    expected: dict[int, list[object]] = {r.offset: [] for r in records}
    for fr in result.records:
        assert fr.source is not None
        expected[fr.source.offset].append(decode(fr.to_json()))
    assert got == [expected[r.offset] for r in records]
    refused = [d.reason for d in result.dead_letters]
    invalid = sum(isinstance(r.value, Exception) for r in records)
    assert invalid > 0 and refused.count("late") > 0 and result.skipped > 0 and result.missing_key > 0
    assert stage.counts == {
        "events": len(raws),
        "invalid": invalid + refused.count("invalid"),
        "late": refused.count("late"),
        "duplicates": result.skipped,
        "missing_key": result.missing_key,
    }
