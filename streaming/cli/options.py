"""Options that several commands share, declared once as dataclasses and given to each command whole.

A command names a group as one parameter typed with the group's dataclass and is decorated with
:func:`grouped`: typer then sees the group's fields as the command's own options, and the command receives
one typed object. ``rivulet produce`` and ``rivulet replay file``/``dataset`` read rows the same way
(:class:`RowFields`, :class:`RowTiming`, :class:`Synth`); the three ``rivulet replay`` commands share
:class:`ReplayOptions`.

>>> import inspect
>>> @grouped
... def command(source: str, timing: RowTiming) -> RowTiming:
...     return timing
>>> [p for p in inspect.signature(command).parameters][:3]
['source', 'entities', 'start_ts']
>>> command("x", entities=3, start_ts=None, step_ms=10)
RowTiming(entities=3, start_ts=None, step_ms=10)
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from features.events import parse_ts
from streaming.ingest.rows import RowMapping

__all__ = [
    "DriftWidth",
    "ModelsModule",
    "Quiet",
    "ReplayOptions",
    "RowFields",
    "RowTiming",
    "Seed",
    "Synth",
    "grouped",
    "row_mapping",
]

R = TypeVar("R")

ModelsModule = Annotated[
    str | None, typer.Option(help="Module with the model specs (default RIVULET_MODELS_MODULE).")
]
Quiet = Annotated[bool, typer.Option(help="No progress bar.")]
Seed = Annotated[int, typer.Option(help="Seed of synthetic streams.")]
DriftWidth = Annotated[int, typer.Option(min=1, help="synth:drift: width of the drift (>= tens).")]


@dataclass(frozen=True, slots=True)
class RowFields:
    """Which columns of a file's rows hold what."""

    entity_field: Annotated[str, typer.Option(help="Column holding the entity key.")] = "entity"
    ts_field: Annotated[str, typer.Option(help="Column holding the event time (epoch ms or ISO 8601).")] = (
        "ts"
    )
    label_field: Annotated[str, typer.Option(help="Column holding the label.")] = "label"
    id_field: Annotated[str, typer.Option(help="Column holding the event id (generated when absent).")] = (
        "event_id"
    )


@dataclass(frozen=True, slots=True)
class RowTiming:
    """Entities and times of rows that have none."""

    entities: Annotated[
        int | None,
        typer.Option(
            min=1, help="Rows without an entity get one of N synthetic keys (default 100 for river:/synth:)."
        ),
    ] = None
    start_ts: Annotated[
        str | None,
        typer.Option(
            help="Rows without a time get start + i*step. river:/synth: default: produce stamps each event "
            "with the clock as it is sent, replay starts at 2026-01-01."
        ),
    ] = None
    step_ms: Annotated[int, typer.Option(min=0, help="Event-time step between rows without a time.")] = 1000


@dataclass(frozen=True, slots=True)
class Synth:
    """The synthetic streams' parameters."""

    seed: Seed = 42
    drift_at: Annotated[int, typer.Option(help="synth:drift: position of the concept drift.")] = 5_000
    drift_width: DriftWidth = 500

    def source_options(self) -> dict[str, int]:
        """As :func:`streaming.ingest.rows.open_source` takes them."""
        return {"seed": self.seed, "drift_at": self.drift_at, "drift_width": self.drift_width}


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What every replay takes, whatever it reads."""

    models: ModelsModule = None
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Only these candidate specs (repeatable).")
    ] = None
    champion: Annotated[
        list[str] | None,
        typer.Option(help="Also replay this registry model as it was at the range's start (repeatable)."),
    ] = None
    label_delay: Annotated[
        int | None, typer.Option(min=0, help="Simulate labels arriving N records after their event.")
    ] = None
    label_delay_ms: Annotated[
        int | None, typer.Option(min=0, help="Simulate labels arriving T ms of event time after their event.")
    ] = None
    out: Annotated[
        Path | None, typer.Option(help="Directory for replay.json and replay.html (default under data dir).")
    ] = None
    sample_every: Annotated[
        int | None,
        typer.Option(min=1, help="Points of the metric curves: one every N records (default ~400 points)."),
    ] = None
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=2**63 - 1,  # the report is JSON (orjson): a larger count cannot be written
            help="Stop after this many events (or features records); labels do not count.",
        ),
    ] = None
    quiet: Quiet = False


def row_mapping(
    source: str, fields: RowFields, timing: RowTiming, default_start_ms: int | None
) -> RowMapping:
    """The mapping of a source's rows; River datasets and synthetic streams get 100 entities and times
    from ``default_start_ms`` unless told otherwise (None: the wall clock as each row is mapped). A bad
    ``--start-ts``: :class:`~features.errors.FeaturesError`.

    >>> row_mapping("river:Phishing", RowFields(), RowTiming(start_ts="1970-01-01T00:00:01Z"), None).start_ts
    1000
    >>> row_mapping("rows.csv", RowFields(), RowTiming(), 5).start_ts is None
    True
    """
    generated = source.startswith(("river:", "synth:"))
    start = parse_ts(timing.start_ts, "--start-ts") if timing.start_ts is not None else None
    return RowMapping(
        entity_field=fields.entity_field,
        ts_field=fields.ts_field,
        label_field=fields.label_field,
        id_field=fields.id_field,
        entities=timing.entities if timing.entities is not None else (100 if generated else None),
        start_ts=start if start is not None else (default_start_ms if generated else None),
        step_ms=timing.step_ms,
        clock=generated and start is None and default_start_ms is None,
    )


def grouped(command: Callable[..., R]) -> Callable[..., R]:
    """``command`` with each parameter typed by an option group replaced, for typer, by the group's fields;
    called, it builds the groups from them. Field names must not repeat across a command's groups."""
    hints = typing.get_type_hints(command, include_extras=True)
    groups: dict[str, type] = {}
    params: list[inspect.Parameter] = []
    for p in inspect.signature(command).parameters.values():
        kind = hints.get(p.name)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            groups[p.name] = kind
            fields = typing.get_type_hints(kind, include_extras=True)
            params += [
                inspect.Parameter(
                    f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=fields[f.name]
                )
                for f in dataclasses.fields(kind)
            ]
        else:
            params.append(
                p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
            )

    def wrapper(*args: Any, **kwargs: Any) -> R:
        for name, kind in groups.items():
            kwargs[name] = kind(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(kind)})
        return command(*args, **kwargs)

    # no __wrapped__ (functools.wraps): typer must read the new signature, not the command's
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, attr, getattr(command, attr))
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
