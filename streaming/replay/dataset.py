"""A point-in-time dataset as a Parquet file: the rows a :class:`~streaming.replay.recorder.Recorder`
recorded, one column per field and per input feature, and what names the dataset in the file's metadata.

Columns, in this order:

- ``predicted_step``, ``learned_step``: where the prediction and the learning happened among all of the
  model's steps (``learned_step`` null: never learned); rows are in predicted order;
- ``event_id`` (the join key: ``p:<id>`` for a served prediction), ``entity``, ``ts`` (event time, epoch ms);
- ``topic``, ``partition``, ``offset``: the record's position;
- ``label`` (null: not learned), ``learned_ts``, ``label_topic``, ``label_partition``, ``label_offset``;
- ``x.<name>`` for each input feature the model was given, in the order it was given them
  (:func:`input_order`: a model sums over its inputs in their order, so a row rebuilt in column order
  learns to the same bits), null where a record did not have it. A column holds one type: booleans,
  integers, or floats (integers and floats together are floats), or strings.

The metadata key ``rivulet.export`` holds a JSON object: the source, the model and its spec, view and
task, the feature-definition hash, the resolved range (``range``: topic -> partition -> ``[start,
end)``) and the positions after it (``offsets``), the counts (rows, learned, dead letters by reason) and
``content_sha256``: :func:`content_hash` of the rows. Nothing in the file depends on the wall clock, and
the writer's options are fixed (:data:`WRITER`), so the same range gives the same bytes (with the same
pyarrow).

>>> from streaming.replay.recorder import Row
>>> rows = [Row("e1", 5, ("f", 0, 3), {"a": 1, "b": 0.5}, "u1", 0, True, 5, ("f", 0, 3), 1)]
>>> table = to_table(rows, {"model": "m"})
>>> table.column_names[-2:], table.column("x.a").type
(['x.a', 'x.b'], DataType(int64))
>>> meta = metadata_of(table.schema)
>>> meta["model"], meta["rows"], meta["content_sha256"] == content_hash(table)
('m', 1, True)
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from streaming.errors import StreamingError
from streaming.replay.recorder import Row

__all__ = [
    "KEY",
    "WRITER",
    "ExportError",
    "content_hash",
    "metadata_of",
    "read_metadata",
    "to_table",
    "write",
]

KEY = b"rivulet.export"
FORMAT = 1
# fixed writer options: the same rows give the same bytes
WRITER: dict[str, Any] = {
    "version": "2.6",
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "row_group_size": 65_536,
    "data_page_size": 1 << 20,
    "write_page_index": False,
    "store_schema": True,
}


class ExportError(StreamingError):
    """A dataset that cannot be written or read (pyarrow missing, a file that is not an export)."""


def _pa() -> Any:
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover: a dependency; a broken install
        raise ExportError("rivulet export needs pyarrow: pip install pyarrow") from None
    return pa


def to_table(rows: Sequence[Row], meta: Mapping[str, Any]) -> Any:
    """The rows as a ``pyarrow.Table`` with ``meta`` (plus ``format``, ``rows``, ``learned``, ``columns``
    and ``content_sha256``) in its schema's metadata."""
    pa = _pa()
    names = input_order(r.x for r in rows)
    pos = [r.position or (None, None, None) for r in rows]
    lpos = [r.label_position or (None, None, None) for r in rows]
    columns: dict[str, Any] = {
        "predicted_step": pa.array([r.predicted_step for r in rows], pa.int64()),
        "learned_step": pa.array([r.learned_step for r in rows], pa.int64()),
        "event_id": pa.array([r.key for r in rows], pa.string()),
        "entity": pa.array([r.entity for r in rows], pa.string()),
        "ts": pa.array([r.ts for r in rows], pa.int64()),
        "topic": pa.array([p[0] for p in pos], pa.string()),
        "partition": pa.array([p[1] for p in pos], pa.int32()),
        "offset": pa.array([p[2] for p in pos], pa.int64()),
        "label": _column(pa, [r.label for r in rows]),
        "learned_ts": pa.array([r.learned_ts for r in rows], pa.int64()),
        "label_topic": pa.array([p[0] for p in lpos], pa.string()),
        "label_partition": pa.array([p[1] for p in lpos], pa.int32()),
        "label_offset": pa.array([p[2] for p in lpos], pa.int64()),
    }
    for name in names:
        columns[f"x.{name}"] = _column(pa, [r.x.get(name) for r in rows])
    table = pa.table(columns)
    full = {
        "format": FORMAT,
        **meta,
        "rows": len(rows),
        "learned": sum(r.learned_step is not None for r in rows),
        "features": names,
        "content_sha256": content_hash(table),
    }
    return table.replace_schema_metadata({KEY: orjson.dumps(full, option=orjson.OPT_SORT_KEYS)})


def input_order(vectors: Iterable[Mapping[str, Any]]) -> list[str]:
    """The inputs' names in one order that keeps each vector's own: a name first seen is placed after the
    name before it in its vector (a feature missing from the first vectors, null then, takes its place
    among the others, not the end).

    >>> input_order([{"a": 1, "c": 3}, {"a": 1, "b": 2, "c": 3}, {"d": 4}, {"z": 0, "a": 1}])
    ['z', 'a', 'b', 'c', 'd']
    """
    order: list[str] = []
    known: set[str] = set()
    for x in vectors:
        names = list(x)
        for i, name in enumerate(names):
            if name in known:
                continue
            if i:  # after the name before it
                at = order.index(names[i - 1]) + 1
            else:  # before the first known name after it, or last
                after = next((n for n in names[1:] if n in known), None)
                at = order.index(after) if after is not None else len(order)
            order.insert(at, name)
            known.add(name)
    return order


def _column(pa: Any, values: list[Any]) -> Any:
    """One type per column: bool, int64, float64 (ints among floats), or string; anything else (a mix of
    strings and numbers) as its JSON text."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.array(values, pa.null())
    if kinds == {bool}:
        return pa.array(values, pa.bool_())
    if kinds <= {int, bool} and all(v is None or _INT64[0] <= v <= _INT64[1] for v in values):
        return pa.array([None if v is None else int(v) for v in values], pa.int64())
    if kinds <= {int, bool}:  # past int64 (JSON allows it): each value as its JSON text
        return pa.array([None if v is None else _json(v) for v in values], pa.string())
    if kinds <= {int, float, bool}:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if kinds == {str}:
        return pa.array(values, pa.string())
    return pa.array([None if v is None else _json(v) for v in values], pa.string())


_INT64 = (-(2**63), 2**63 - 1)


def _json(v: Any) -> str:
    """``v`` as JSON text; an integer orjson cannot take (past 64 bits) as its digits, a float that is not
    finite as ``NaN``, ``Infinity``, ``-Infinity`` (Python's ``json``; orjson writes ``null``, which would
    make them a missing value)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    try:
        return orjson.dumps(v).decode()
    except orjson.JSONEncodeError:  # a big integer inside a list or an object
        import json

        return json.dumps(v, sort_keys=False, allow_nan=True, default=str)


def content_hash(table: Any) -> str:
    """SHA-256 of the rows: the column names as a JSON list, then each row's values as a JSON list, one per
    line, in the table's order (the same for the table written and the table read back). A float that
    is not finite is written ``{"float": "nan"}`` (``"inf"``, ``"-inf"``), an object no column holds: JSON
    has no such numbers (orjson writes them ``null``), and the file tells NaN, infinities and null apart.

    >>> from streaming.replay.recorder import Row
    >>> def one(v):
    ...     return content_hash(to_table([Row("e", 1, None, {"a": v, "b": 1.5}, None, 0)], {}))
    >>> len({one(None), one(float("nan")), one(float("inf")), one(-float("inf")), one(0.0), one(-0.0)})
    6
    """
    h = hashlib.sha256(orjson.dumps(table.column_names) + b"\n")
    floats = [i for i, f in enumerate(table.schema) if _is_float(f.type)]
    for batch in table.to_batches(max_chunksize=8_192):
        cols = [c.to_pylist() for c in batch.columns]
        for i in floats:
            if any(v is not None and not math.isfinite(v) for v in cols[i]):
                cols[i] = [_float(v) for v in cols[i]]
        for row in zip(*cols, strict=True):
            h.update(orjson.dumps(list(row)) + b"\n")
    return h.hexdigest()


def _is_float(t: Any) -> bool:
    import pyarrow.types as pat

    return bool(pat.is_floating(t))


def _float(v: float | None) -> Any:
    return v if v is None or math.isfinite(v) else {"float": repr(v)}


def metadata_of(schema: Any) -> dict[str, Any]:
    """The ``rivulet.export`` metadata of a table's (or a file's) schema."""
    raw = (schema.metadata or {}).get(KEY)
    if raw is None:
        raise ExportError("not a Rivulet export: no rivulet.export metadata")
    out: dict[str, Any] = orjson.loads(raw)
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``rivulet.export`` metadata of a Parquet file, read from its footer."""
    _pa()
    import pyarrow.parquet as pq

    return metadata_of(pq.read_schema(path))


def write(table: Any, path: str | Path) -> Path:
    """Write the table to ``path`` with :data:`WRITER`'s options, atomically (a temporary file beside it,
    renamed)."""
    _pa()
    import pyarrow.parquet as pq

    target = Path(path)
    if target.is_dir():
        raise ExportError(f"--out {target} is a directory: give the Parquet file's path")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, **WRITER)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
