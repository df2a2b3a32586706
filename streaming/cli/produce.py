"""``rivulet produce SOURCE``: publish a file, a River dataset or a synthetic stream as events.

Labels are checked against the models module's specs (``RIVULET_MODELS_MODULE``) when it loads: a row whose
label no model can learn from (``banana`` for a binary model) is rejected like any other bad row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import TextColumn

from features.errors import InvalidEvent
from features.events import Event
from streaming.cli.common import console, err_console, fail, progress_bar, settings_of, user_errors
from streaming.cli.options import Quiet, RowFields, RowTiming, Synth, grouped, row_mapping
from streaming.ingest.feed import LabelPolicy, PublishReport, RejectsFile, publish
from streaming.ingest.producer import Producer
from streaming.ingest.rows import Row, RowMapping, open_source
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


@dataclasses.dataclass(frozen=True, slots=True)
class LabelOptions:
    """Where the labels go, and how late."""

    labels: Annotated[
        Literal["inline", "topic", "none"],
        typer.Option(help="Labels inline on the event, to the labels topic after a delay, or dropped."),
    ] = "inline"
    label_delay: Annotated[int, typer.Option(help="With --labels topic: send each label N events later.")] = 0
    label_delay_s: Annotated[float, typer.Option(help="With --labels topic: send each label T s later.")] = (
        0.0
    )

    def policy(self) -> LabelPolicy:
        if self.label_delay and self.label_delay_s:
            fail("give --label-delay or --label-delay-s, not both")
        if (self.label_delay or self.label_delay_s) and self.labels != "topic":
            fail("a label delay needs --labels topic")
        return LabelPolicy(mode=self.labels, delay_events=self.label_delay, delay_s=self.label_delay_s)


@grouped
def produce(
    ctx: typer.Context,
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
    rejects: Annotated[
        Path | None, typer.Option(help="Where rejected rows go (default: rejects-<source>.jsonl).")
    ] = None,
    quiet: Quiet = False,
    *,
    labels: LabelOptions,
    fields: RowFields,
    timing: RowTiming,
    synth: Synth,
) -> None:
    """Publish events to the events topic; bad rows are reported by line and written to a rejects file.

    Exit code 0 when every row was sent, 2 when some rows were rejected (the rest were sent), 1 on error.
    """
    settings = settings_of(ctx)
    policy = labels.policy()
    # a generated stream is live: each event gets the wall clock as it is sent (no default start)
    with user_errors():  # a bad --start-ts
        mapping = row_mapping(source, fields, timing, None)
    checked = CheckedMapping(**dataclasses.asdict(mapping), check=label_check(settings))
    with user_errors():
        rows = open_source(source, label_field=fields.label_field, **synth.source_options())
    generated = source.startswith(("river:", "synth:"))
    stem = source.replace(":", "-") if generated else Path(source).stem
    rejects_file = RejectsFile(rejects or Path(f"rejects-{stem}.jsonl"))
    report = _publish(
        settings, rows, checked, policy, rate=rate, limit=limit, rejects=rejects_file, quiet=quiet
    )
    _summary(settings, report, rejects_file.path)


def _publish(
    settings: Settings,
    rows: Iterable[Row],
    mapping: RowMapping,
    policy: LabelPolicy,
    *,
    rate: float | None,
    limit: int | None,
    rejects: RejectsFile,
    quiet: bool,
) -> PublishReport:
    """Publish with a progress bar; the rejects file is closed whatever happens."""
    progress = progress_bar(
        "producing",
        TextColumn("{task.fields[rate]:>9,.0f} events/s  {task.fields[rejected]} rejected"),
        quiet=quiet,
    )
    task = progress.add_task("produce", total=limit, rate=0.0, rejected=0)

    def on_progress(r: PublishReport) -> None:
        progress.update(task, completed=r.read, rate=r.rate, rejected=len(r.rejected))

    with user_errors(), progress, Producer(settings) as producer:
        try:
            return publish(
                rows,
                producer,
                mapping,
                labels=policy,
                rate=rate,
                limit=limit,
                rejects=rejects,
                on_progress=on_progress,
            )
        finally:
            rejects.close()


def _summary(settings: Settings, report: PublishReport, rejects: Path) -> None:
    """What was sent, and the first rejected rows (exit code 2 when there are any)."""
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
        err_console.print(f"rejected rows written to {rejects}", highlight=False)
        raise typer.Exit(EXIT_REJECTED)
