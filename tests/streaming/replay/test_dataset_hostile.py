"""Hostile feature values in a point-in-time dataset's columns: an integer past int64 (JSON allows it, the
features topic may carry it) does not stop the export, and the file keeps every value; NaN, the infinities
and null, which the file tells apart, have content hashes of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.replay.dataset import ExportError, content_hash, metadata_of, to_table, write
from streaming.replay.recorder import Row

pytestmark = pytest.mark.unit


def row(i: int, x: dict[str, object]) -> Row:
    return Row(f"e{i}", i, ("f", 0, i), x, "u1", i, True, i, ("f", 0, i), 1)


@pytest.mark.parametrize("big", [2**63, -(2**63) - 1, 2**64 - 1])
def test_an_integer_past_int64_is_kept_as_its_json_text(big: int) -> None:
    table = to_table([row(0, {"a": big, "b": 0.5}), row(1, {"a": 3, "b": 1.5})], {"model": "m"})
    assert table.column("x.a").to_pylist() == [str(big), "3"]
    assert metadata_of(table.schema)["content_sha256"] == content_hash(table)


def test_a_big_integer_among_floats_is_a_float() -> None:
    table = to_table([row(0, {"a": 2**64 - 1}), row(1, {"a": 0.5})], {"model": "m"})
    assert table.column("x.a").to_pylist() == [float(2**64 - 1), 0.5]


def test_out_that_is_a_directory_is_one_clear_error(tmp_path: Path) -> None:
    table = to_table([row(0, {"a": 1})], {"model": "m"})
    with pytest.raises(ExportError, match="is a directory"):
        write(table, tmp_path)
    assert list(tmp_path.parent.glob(f".{tmp_path.name}.*.tmp")) == []


NAN, INF = float("nan"), float("inf")


def one(x: dict[str, object], label: object = 1) -> object:
    return to_table([Row("e0", 0, ("f", 0, 0), x, "u1", 0, label, 0, ("f", 0, 0), 1)], {"model": "m"})


@pytest.mark.parametrize("column", ["feature", "label"])
def test_nan_inf_and_null_do_not_share_a_content_hash(column: str) -> None:
    """The Parquet column keeps NaN, inf, -inf, null, 0.0 and -0.0 apart: so must the hash (it wrote each
    row as JSON, where orjson makes NaN and the infinities null)."""
    values = [None, NAN, INF, -INF, 0.0, -0.0, 2.5]
    tables = [one({"a": v, "b": 1.5}) if column == "feature" else one({"b": 1.5}, v) for v in values]
    name = "x.a" if column == "feature" else "label"
    for v, table in zip(values, tables, strict=True):
        [got] = table.column(name).to_pylist()
        assert got is v or got == v or (got != got and v != v)  # the column holds the value itself
        assert metadata_of(table.schema)["content_sha256"] == content_hash(table)
    assert len({content_hash(t) for t in tables}) == len(values)


def test_nan_inf_and_null_in_a_file_hash_the_same_read_back_and_write_the_same_bytes(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    rows = [row(i, {"a": v, "b": float(i)}) for i, v in enumerate([None, NAN, INF, -INF, 1.0, NAN, None])]
    table = to_table(rows, {"model": "m"})
    flipped = to_table([row(0, {"a": NAN, "b": 0.0}), *rows[1:]], {"model": "m"})  # null -> NaN
    assert content_hash(flipped) != content_hash(table)
    first, second = write(table, tmp_path / "a.parquet"), write(table, tmp_path / "b.parquet")
    assert first.read_bytes() == second.read_bytes()
    back = pq.read_table(first)
    assert content_hash(back) == metadata_of(back.schema)["content_sha256"] == content_hash(table)
    got = back.column("x.a").to_pylist()
    assert got[0] is None and got[1] != got[1] and got[2:4] == [INF, -INF] and got[6] is None


def test_a_mixed_column_keeps_nan_and_the_infinities_apart_from_null() -> None:
    """A column of strings and numbers is written as JSON text: NaN and the infinities as their names, not
    orjson's ``null`` (which made NaN, inf and -inf one value)."""
    table = to_table([row(i, {"a": v}) for i, v in enumerate(["s", NAN, INF, -INF, None, "NaN"])], {})
    assert table.column("x.a").to_pylist() == ['"s"', "NaN", "Infinity", "-Infinity", None, '"NaN"']
