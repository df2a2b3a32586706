"""Sources of `rivulet produce`: positions, malformed rows, River datasets and synthetic streams."""

from __future__ import annotations

import itertools
from pathlib import Path

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


def test_synthetic_streams_are_seeded_and_have_a_drift() -> None:
    assert {"agrawal", "drift", "sea"} <= set(synth_streams())
    a = [r.data for r in itertools.islice(open_source("synth:agrawal", seed=7), 50)]
    b = [r.data for r in itertools.islice(open_source("synth:agrawal", seed=7), 50)]
    c = [r.data for r in itertools.islice(open_source("synth:agrawal", seed=8), 50)]
    assert a == b != c
    drift = list(itertools.islice(open_source("synth:drift", drift_at=100, drift_width=20), 200))
    assert len(drift) == 200
    assert set(drift[0].data) >= {"salary", "age", "label"}


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
