"""``rivulet demo``: the whole pipeline in one process, no services needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from streaming.cli.common import console, fail, settings_of, user_errors
from streaming.cli.options import DriftWidth, Seed


def demo(
    ctx: typer.Context,
    events: Annotated[
        int | None, typer.Option(help="Stop after N events (default: run until Ctrl-C, at --rate).")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(help="Events per second (default: as fast as possible with --events, else 1000)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address of the API and dashboard.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API and dashboard.")] = 8000,
    hold: Annotated[
        bool, typer.Option(help="Keep the API and dashboard up after the stream ends, until Ctrl-C.")
    ] = False,
    seed: Seed = 42,
    drift_at: Annotated[
        int | None, typer.Option(help="Event at which the concept drifts (default: half of --events).")
    ] = None,
    drift_width: DriftWidth = 500,
    entities: Annotated[int, typer.Option(min=1, help="Customers in the synthetic stream.")] = 10_000,
    record: Annotated[
        Path | None,
        typer.Option(help="Write the events as JSONL (replay them with rivulet replay file FILE)."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the final summary as JSON.")] = None,
    quiet: Annotated[bool, typer.Option(help="No live view; print the summary at the end.")] = False,
) -> None:
    """Run Rivulet in one process on embedded defaults (an in-process log instead of Kafka, in-memory stores
    instead of Redis; the same feature engine, learner core and API): a drifting synthetic stream, a live
    view, and the API and dashboard on localhost."""
    from streaming.runtime.demo import Demo, write_summary

    for path, option in ((json_out, "--json"), (record, "--record")):
        if path is not None and not path.parent.is_dir():
            fail(f"{option} {path}: no directory {path.parent}")
    with user_errors():
        summary = Demo(
            settings_of(ctx),
            events=events,
            rate=rate if rate is not None else (None if events else 1000.0),
            seed=seed,
            drift_at=drift_at,
            drift_width=drift_width,
            entities=entities,
            host=host,
            port=port,
            hold=hold,
            record=record,
            console=console,
            live=not quiet,
        ).run()
    console.print(_table(summary))
    if json_out is not None:
        with user_errors():
            write_summary(summary, json_out)
        console.print(f"summary: {json_out}")
    _next(record)


def _next(record: Path | None) -> None:
    """What to try next."""
    if record is not None:
        console.print(
            f"events recorded to {record}: rivulet replay file {record} compares other models on them"
        )
    console.print(
        "next: scripts/services up (Kafka and Redis), then rivulet up for the same pipeline as separate "
        "processes; rivulet --help for everything else"
    )


def _table(summary: dict[str, Any]) -> Table:
    """The final metrics of every model."""
    models = summary["models"]
    names = sorted({k for m in models.values() for k in m["metrics"] if not k.startswith("rolling_")})
    table = Table(
        title=f"final metrics after {summary['events']:,} events ({summary['events_per_s']:,.0f}/s)"
    )
    for col in ("model", "version", "learned", *names, "drifts"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in models.items():
        table.add_row(
            name,
            f"v{m['version']}" if m["version"] else "-",
            f"{m['learned']:,}",
            *(f"{m['metrics'].get(k, 0.0):.6f}" for k in names),
            str(m["drifts"]),
        )
    return table
