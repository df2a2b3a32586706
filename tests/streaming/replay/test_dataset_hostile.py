"""Hostile feature values in a point-in-time dataset's columns: an integer past int64 (JSON allows it, the
features topic may carry it) does not stop the export, and the file keeps every value."""

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
