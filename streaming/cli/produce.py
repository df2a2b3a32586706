"""``rivulet produce SOURCE``: publish a file, a River dataset or a synthetic stream as events.

Labels are checked against the models module's specs (``RIVULET_MODELS_MODULE``) when it loads: a row whose
label no model can learn from (``banana`` for a binary model) is rejected like any other bad row.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from features.errors import InvalidEvent
from features.events import Event
from streaming.cli.common import (
    DriftAt,
    DriftWidth,
    Entities,
    EntityField,
    IdField,
    LabelField,
    Seed,
    StartTs,
    StepMs,
    TsField,
    console,
    err_console,
    fail,
    load_settings,
    row_mapping,
    user_errors,
)
from streaming.ingest.feed import LabelPolicy, PublishReport, RejectsFile, publish
from streaming.ingest.producer import Producer
from streaming.ingest.rows import Row, RowMapping, SourceError, open_source
from streaming.learning.errors import InvalidLabel
from streaming.learning.labels import LabelCheck
from streaming.learning.spec import SpecError, load_specs
from streaming.settings import Settings

SHOWN_REJECTS = 20
EXIT_REJECTED = 2


@dataclasses.dataclass(frozen=True)
class CheckedMapping(RowMapping):
    """A row mapping that also checks the event's label (a row with a bad label is rejected)."""

    check: LabelCheck | None = None

    def to_event(self, row: Row) -> Event:
        event = super().to_event(row)
        if self.check is not None and event.label is not None:
            try:
                self.check(event.label)
            except InvalidLabel as exc:
                raise InvalidEvent("label", str(exc)) from None
        return event


def label_check(settings: Settings) -> LabelCheck | None:
    """The label rules of the configured models module, or None when it does not load (or a spec in it
    cannot work)."""
    try:
        specs = load_specs(settings.models_module)
        for spec in specs:
            spec.check(None)  # an unknown task or bad classes: SpecError, as the learner would refuse it
        return LabelCheck.for_specs(specs)
    except SpecError as exc:
        err_console.print(
            f"labels not checked: models module {settings.models_module!r}: {exc}", markup=False
        )
        return None


def produce(
    source: Annotated[
        str,
        typer.Argument(
            help="A .jsonl/.csv file, river:<Dataset> (e.g. river:Phishing) "
            "or synth:<generator> (e.g. synth:agrawal, synth:drift)."
        ),
    ],
    limit: Annotated[int | None, typer.Option(help="Stop after this many rows.")] = None,
    rate: Annotated[
        float | None, typer.Option(help="Events per second (default: as fast as possible).")
    ] = None,
    labels: Annotated[
        Literal["inline", "topic", "none"],
        typer.Option(help="Labels inline on the event, to the labels topic after a delay, or dropped."),
    ] = "inline",
    label_delay: Annotated[
        int, typer.Option(help="With --labels topic: send each label N events later.")
    ] = 0,
    label_delay_s: Annotated[
        float, typer.Option(help="With --labels topic: send each label T s later.")
    ] = 0.0,
    entity_field: EntityField = "entity",
    ts_field: TsField = "ts",
    label_field: LabelField = "label",
    id_field: IdField = "event_id",
    entities: Entities = None,
    start_ts: StartTs = None,
    step_ms: StepMs = 1000,
    seed: Seed = 42,
    drift_at: DriftAt = 5_000,
    drift_width: DriftWidth = 500,
    rejects: Annotated[
        Path | None, typer.Option(help="Where rejected rows go (default: rejects-<source>.jsonl).")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Publish events to the events topic; bad rows are reported by line and written to a rejects file.

    Exit code 0 when every row was sent, 2 when some rows were rejected (the rest were sent), 1 on error.
    """
    settings = load_settings()
    if label_delay and label_delay_s:
        fail("give --label-delay or --label-delay-s, not both")
    if (label_delay or label_delay_s) and labels != "topic":
        fail("a label delay needs --labels topic")
    generated = source.startswith(("river:", "synth:"))
    mapping = row_mapping(
        source,
        entity_field,
        ts_field,
        label_field,
        id_field,
        entities,
        start_ts,
        step_ms,
        None,  # a generated stream is live: each event gets the wall clock as it is sent
    )
    mapping = CheckedMapping(**dataclasses.asdict(mapping), check=label_check(settings))
    try:
        rows = open_source(
            source, label_field=label_field, seed=seed, drift_at=drift_at, drift_width=drift_width
        )
    except SourceError as exc:
        fail(str(exc))
    stem = Path(source).stem if not generated else source.replace(":", "-")
    rejects_file = RejectsFile(rejects or Path(f"rejects-{stem}.jsonl"))
    policy = LabelPolicy(mode=labels, delay_events=label_delay, delay_s=label_delay_s)

    progress = Progress(
        TextColumn("[bold]producing[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9,.0f} events/s  {task.fields[rejected]} rejected"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    )
    task = progress.add_task("produce", total=limit, rate=0.0, rejected=0)

    def on_progress(r: PublishReport) -> None:
        progress.update(task, completed=r.read, rate=r.rate, rejected=len(r.rejected))

    with user_errors(), progress, Producer(settings) as producer:
        try:
            report = publish(
                rows,
                producer,
                mapping,
                labels=policy,
                rate=rate,
                limit=limit,
                rejects=rejects_file,
                on_progress=on_progress,
            )
        finally:
            rejects_file.close()
    console.print(
        f"sent {report.sent:,} events to {settings.topics.events} "
        f"({report.rate:,.0f} events/s), {report.labels_sent:,} labels to {settings.topics.labels}, "
        f"{len(report.rejected):,} rejected, all {report.delivered:,} records acknowledged"
    )
    if report.rejected:
        for r in report.rejected[:SHOWN_REJECTS]:
            err_console.print(f"  line {r.position}: {r.error}", highlight=False, markup=False)
        if len(report.rejected) > SHOWN_REJECTS:
            err_console.print(f"  ... and {len(report.rejected) - SHOWN_REJECTS:,} more")
        err_console.print(f"rejected rows written to {rejects_file.path}", highlight=False)
        raise typer.Exit(EXIT_REJECTED)
