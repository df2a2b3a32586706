"""Sources of `rivulet produce`: positions, malformed rows, River datasets and synthetic streams."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from features.errors import InvalidEvent
from streaming.ingest.rows import Row, RowMapping, SourceError, open_source, river_datasets, synth_streams

pytestmark = pytest.mark.unit


def test_jsonl_rows_keep_their_line_numbers(tmp_path: Path) -> None:
    src = tmp_path / "e.jsonl"
    src.write_bytes(b'{"a": 1}\n\n{oops\n[1]\n{"b": 2}\n')
    rows = list(open_source(str(src)))
    assert [(r.position, r.data, r.error is None) for r in rows] == [
        (1, {"a": 1}, True),
        (3, None, False),
        (4, None, False),
        (5, {"b": 2}, True),
    ]
    assert rows[1].raw == "{oops"


def test_csv_converts_numbers_and_flags_ragged_and_non_utf8_rows(tmp_path: Path) -> None:
    src = tmp_path / "e.csv"
    src.write_bytes(b'entity,ts,x,s\na,1,2.5,hi\nb,2\nc,3,,"x,y"\nd,4,1,\xff\n')
    rows = list(open_source(str(src)))
    assert rows[0] == Row(2, {"entity": "a", "ts": 1, "x": 2.5, "s": "hi"}, raw="a,1,2.5,hi")
    assert (rows[1].position, rows[1].error) == (3, "expected 4 columns, got 2")
    assert rows[2].data == {"entity": "c", "ts": 3, "x": None, "s": "x,y"}
    assert (rows[3].position, rows[3].error) == (5, "not valid UTF-8")


def test_flat_rows_map_onto_events_and_event_shaped_rows_pass_through() -> None:
    m = RowMapping(entities=3, start_ts=1_000, step_ms=10)
    e = m.to_event(Row(5, {"x": 1, "label": 0}))
    assert (e.entity, e.ts, e.fields, e.label) == ("e1", 1_040, {"x": 1}, 0)
    shaped = {"event_id": "i", "entity": "u", "ts": 7, "fields": {"y": 2}}
    assert m.to_event(Row(1, shaped)).to_dict() == shaped
    with pytest.raises(InvalidEvent, match=r"^entity: is required"):
        RowMapping().to_event(Row(1, {"ts": 1}))
    with pytest.raises(InvalidEvent, match=r"^when: 'soon'"):
        RowMapping(ts_field="when").to_event(Row(1, {"entity": "a", "when": "soon"}))


def test_river_datasets_are_the_bundled_ones() -> None:
    names = river_datasets()
    assert "Phishing" in names
    assert "CreditCard" not in names
    rows = list(itertools.islice(open_source("river:phishing"), 3))
    assert [r.position for r in rows] == [1, 2, 3]
    assert isinstance(rows[0].data["label"], bool)
    assert len(rows[0].data) == 10


def test_synthetic_streams_are_seeded() -> None:
    assert {"agrawal", "drift", "sea"} <= set(synth_streams())
    a = [r.data for r in itertools.islice(open_source("synth:agrawal", seed=7), 50)]
    b = [r.data for r in itertools.islice(open_source("synth:agrawal", seed=7), 50)]
    c = [r.data for r in itertools.islice(open_source("synth:agrawal", seed=8), 50)]
    assert a == b != c


def _before(row: dict[str, Any]) -> int:
    """Agrawal et al.'s classification function 1 (River's index 0): the concept before the drift."""
    return int(row["age"] < 40 or row["age"] >= 60)


def _after(row: dict[str, Any]) -> int:
    """Agrawal et al.'s function 3 (River's index 2): the concept after the drift, by age and education."""
    if row["age"] < 40:
        return int(row["elevel"] in (0, 1))
    if row["age"] < 60:
        return int(row["elevel"] in (1, 2, 3))
    return int(row["elevel"] in (2, 3, 4))


@pytest.mark.parametrize("seed", [1, 42])
def test_synth_drift_switches_concept_at_the_drift_point(seed: int) -> None:
    """``synth:drift`` is River's ConceptDriftStream from Agrawal function 1 to function 3, centred on
    ``drift_at`` over ``drift_width`` rows: every label before the window follows the first concept, every
    label after it the second, and the two disagree on many rows (so the drift shows in the labels)."""
    rows = [
        r.data
        for r in itertools.islice(open_source("synth:drift", seed=seed, drift_at=500, drift_width=20), 800)
    ]
    assert len(rows) == 800 and set(rows[0]) >= {"salary", "age", "elevel", "label"}
    before, after = rows[:400], rows[600:]  # 100 rows = 20 widths from the centre: the other concept's
    # share there is 1 / (1 + e^20), none in 400 rows
    assert [r["label"] for r in before] == [_before(r) for r in before]
    assert [r["label"] for r in after] == [_after(r) for r in after]
    assert sum(r["label"] != _before(r) for r in after) > len(after) // 4  # the old concept fails after
    assert sum(r["label"] != _after(r) for r in before) > len(before) // 4  # and the new one before


def test_unknown_sources_say_what_exists(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"bundled ones: .*Phishing"):
        open_source("river:nope")
    with pytest.raises(SourceError, match=r"known: .*agrawal"):
        open_source("synth:nope")
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.jsonl"))
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(SourceError, match="unknown file type"):
        open_source(str(tmp_path / "x.parquet"))
