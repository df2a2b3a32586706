"""Where ``rivulet produce`` reads events from: JSONL and CSV files, River's bundled datasets and its
synthetic streams. Every source yields :class:`Row` objects carrying their position (1-based line
number for files, 1-based index otherwise), so a bad row can be reported where it is.

A row becomes an :class:`~features.events.Event` through :class:`RowMapping`: a row that already has the
event's shape (a ``fields`` object) is taken as is; a flat row names its entity, time and label columns
and every other column becomes a field.

>>> m = RowMapping(entity_field="user", ts_field="time")
>>> e = m.to_event(Row(1, {"user": "u1", "time": 1000, "amount": 3.5, "label": True}))
>>> (e.entity, e.ts, e.fields, e.label)
('u1', 1000, {'amount': 3.5}, True)
"""

from __future__ import annotations

import csv
import inspect
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from features.errors import InvalidEvent
from features.events import Event
from streaming.errors import SourceError

__all__ = ["Row", "RowMapping", "SourceError", "open_source", "river_datasets", "synth_streams"]


@dataclass(slots=True)
class Row:
    position: int
    data: dict[str, Any] | None
    error: str | None = None
    raw: str | None = None


@dataclass(frozen=True, slots=True)
class RowMapping:
    """How a row maps onto an event. ``start_ts``/``step_ms`` give rows without a time one: start + i*step;
    ``clock``: the wall clock when the row is mapped (a live stream, as ``rivulet produce`` sends it)."""

    entity_field: str = "entity"
    ts_field: str = "ts"
    label_field: str = "label"
    id_field: str = "event_id"
    entities: int | None = None
    start_ts: int | None = None
    step_ms: int = 1
    clock: bool = False

    def to_event(self, row: Row) -> Event:
        data = row.data
        if data is None:
            raise InvalidEvent("", row.error or "unreadable row")
        if isinstance(data.get("fields"), dict):
            return Event.parse(data)
        rest = dict(data)
        entity = rest.pop(self.entity_field, None)
        if entity is None and self.entities:
            entity = f"e{(row.position - 1) % self.entities}"
        ts = rest.pop(self.ts_field, None)
        if ts is None:
            if self.clock:
                ts = time.time_ns() // 1_000_000
            elif self.start_ts is not None:
                ts = self.start_ts + (row.position - 1) * self.step_ms
        record: dict[str, Any] = {"entity": entity, "ts": ts, "label": rest.pop(self.label_field, None)}
        event_id = rest.pop(self.id_field, None)
        if event_id is not None:
            record["event_id"] = event_id
        record["fields"] = rest
        if entity is None:
            raise InvalidEvent(self.entity_field, "is required (the entity key column)")
        if ts is None:
            raise InvalidEvent(self.ts_field, "is required (the event time column), or give a start time")
        try:
            return Event.parse(record)
        except InvalidEvent as exc:  # name the row's own column, not the event field it maps to
            column = {
                "entity": self.entity_field,
                "ts": self.ts_field,
                "label": self.label_field,
                "event_id": self.id_field,
            }.get(exc.field)
            if column is None or column == exc.field:
                raise
            raise InvalidEvent(column, exc.problem) from None


# --------------------------------------------------------------------------- files


def _jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as f:
        for n, line in enumerate(f, start=1):
            if n == 1 and line.startswith(b"\xef\xbb\xbf"):  # a byte-order mark (as for CSV): not data
                line = line[3:]
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield Row(n, None, f"not valid JSON: {exc}", line.decode("utf-8", "replace").rstrip("\n"))
                continue
            if not isinstance(data, dict):
                yield Row(
                    n, None, f"expected a JSON object, got {type(data).__name__}", line.decode().rstrip()
                )
            else:
                yield Row(n, data)


def _csv_value(text: str | None) -> Any:
    """Numbers become numbers, empty cells null; 'nan' and 'inf' become floats so validation refuses them."""
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _csv(path: Path) -> Iterator[Row]:
    # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the first column's name
    with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise SourceError(f"{path}: unreadable CSV header: {exc}") from None
        width = len(header)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Row(reader.line_num, None, f"malformed CSV: {exc}")
                continue
            line = reader.line_num
            raw = _join_csv(cells)
            if not cells:
                continue
            if len(cells) != width:
                yield Row(line, None, f"expected {width} columns, got {len(cells)}", raw)
                continue
            if any("\udc80" <= ch <= "\udcff" for cell in cells for ch in cell):
                yield Row(
                    line,
                    None,
                    "not valid UTF-8",
                    raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                )
                continue
            yield Row(line, {k: _csv_value(v) for k, v in zip(header, cells, strict=True)}, raw=raw)


def _join_csv(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(cells)
    return buf.getvalue().rstrip("\r\n")


# --------------------------------------------------------------------------- River


def river_datasets() -> list[str]:
    """River datasets shipped inside the river package (no download needed)."""
    from river import datasets
    from river.datasets import base

    return sorted(
        name
        for name in dir(datasets)
        if inspect.isclass(cls := getattr(datasets, name))
        and issubclass(cls, base.FileDataset)
        and not issubclass(cls, base.RemoteDataset)
    )


def synth_streams() -> list[str]:
    """River's synthetic generators, plus ``drift``: Agrawal with a concept drift at a known position."""
    from river.datasets import synth

    return sorted(["drift", *(n.lower() for n in dir(synth) if inspect.isclass(getattr(synth, n)))])


def _xy_rows(stream: Any, label_field: str) -> Iterator[Row]:
    for n, (x, y) in enumerate(stream, start=1):
        # names as strings: many of River's generators number their features (0, 1, ...), and an event's
        # field names are strings (every row of synth:hyperplane was rejected)
        data = {str(k): (v.item() if hasattr(v, "item") else v) for k, v in x.items()}
        data[label_field] = y.item() if hasattr(y, "item") else y
        yield Row(n, data)


def _synth(name: str, seed: int, drift_at: int, drift_width: int) -> Any:
    from river.datasets import synth

    if name == "drift":
        return synth.ConceptDriftStream(
            stream=synth.Agrawal(classification_function=0, seed=seed),
            drift_stream=synth.Agrawal(classification_function=2, seed=seed + 1),
            position=drift_at,
            width=drift_width,
            seed=seed,
        )
    classes = {n.lower(): getattr(synth, n) for n in dir(synth) if inspect.isclass(getattr(synth, n))}
    cls = classes[name]
    kwargs = {"seed": seed} if "seed" in inspect.signature(cls).parameters else {}
    return cls(**kwargs)


def open_source(
    spec: str, *, label_field: str = "label", seed: int = 42, drift_at: int = 5_000, drift_width: int = 500
) -> Iterator[Row]:
    """Rows of a source: a ``.jsonl``/``.csv`` path, ``river:<Dataset>`` or ``synth:<generator>``."""
    kind, _, name = spec.partition(":")
    if kind == "river" and name:
        known = {n.lower(): n for n in river_datasets()}
        if name.lower() not in known:
            raise SourceError(f"unknown River dataset {name!r}; bundled ones: {', '.join(known.values())}")
        from river import datasets

        return _xy_rows(getattr(datasets, known[name.lower()])(), label_field)
    if kind == "synth" and name:
        if name.lower() not in synth_streams():
            raise SourceError(f"unknown synthetic stream {name!r}; known: {', '.join(synth_streams())}")
        return _xy_rows(_synth(name.lower(), seed, drift_at, drift_width), label_field)
    path = Path(spec)
    if not path.is_file():
        raise SourceError(f"{spec}: no such file (or use river:<Dataset> / synth:<generator>)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl(path)
    if suffix == ".csv":
        return _csv(path)
    raise SourceError(f"{spec}: unknown file type {suffix!r}; expected .jsonl or .csv")
