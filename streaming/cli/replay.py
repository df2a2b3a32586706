"""``rivulet replay SOURCE`` and ``rivulet models verify NAME VERSION``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from features.errors import FeaturesError
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
from streaming.cli.learn import checked_specs, registry_of
from streaming.learning.spec import SpecError
from streaming.replay.collect import fewer_collections

if TYPE_CHECKING:
    from streaming.learning.merge import Positioned
    from streaming.replay.runner import Champion, Replay

GENERATED_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: replays of generated streams are repeatable


def replay(
    source: Annotated[
        str,
        typer.Argument(
            help="events or features (Rivulet's topics), topic:<name>, a .jsonl/.csv file, river:<Dataset> "
            "or synth:<generator>."
        ),
    ] = "features",
    start: Annotated[
        str, typer.Option(help="Range start: beginning, time:<ISO|epoch ms>, offset:N or P:N,P:N.")
    ] = "beginning",
    end: Annotated[
        str, typer.Option(help="Range end (exclusive): end, time:..., offset:N or P:N,P:N.")
    ] = "end",
    labels_start: Annotated[
        str, typer.Option(help="Where reading the labels topic starts (a range bound; labels are small).")
    ] = "beginning",
    input_kind: Annotated[
        Literal["auto", "events", "features"],
        typer.Option("--input", help="What a topic:<name> holds (auto: by the topic's name)."),
    ] = "auto",
    order: Annotated[
        Literal["event-time", "kafka"],
        typer.Option(help="Merge partitions by event time, or keep Kafka's order (by record timestamp)."),
    ] = "event-time",
    models: Annotated[
        str | None, typer.Option(help="Module with the candidate specs (default RIVULET_MODELS_MODULE).")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Only these candidate specs (repeatable).")
    ] = None,
    champion: Annotated[
        list[str] | None,
        typer.Option(help="Also replay this registry model as it was at the range's start (repeatable)."),
    ] = None,
    label_delay: Annotated[
        int | None, typer.Option(min=0, help="Simulate labels arriving N records after their event.")
    ] = None,
    label_delay_ms: Annotated[
        int | None, typer.Option(min=0, help="Simulate labels arriving T ms of event time after their event.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Directory for replay.json and replay.html (default under data dir).")
    ] = None,
    sample_every: Annotated[
        int | None,
        typer.Option(min=1, help="Points of the metric curves: one every N records (default ~400 points)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Stop after this many events (or features records); labels do not count."),
    ] = None,
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
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Evaluate candidate models on history: read a topic over a range (or a file), recompute features with
    the same engine or take them from the features topic, run the models through the same learner core,
    and report final metrics, metric curves, drifts and throughput.

    Never joins a consumer group, commits nothing, writes to no topic and no Redis key.
    """
    from features.definitions import load_views
    from streaming.replay.champion import champion_at
    from streaming.replay.kafka import RangeReader, parse_bound
    from streaming.replay.report import metrics_table, write_outputs
    from streaming.replay.runner import EVENTS, FEATURES, LabelMode, Replay
    from streaming.replay.sources import file_records, kafka_records, plan_kafka

    settings = load_settings()
    if label_delay is not None and label_delay_ms is not None:
        fail("give --label-delay or --label-delay-ms, not both")
    labels = (
        LabelMode("records", label_delay)
        if label_delay is not None
        else LabelMode("ms", label_delay_ms)
        if label_delay_ms is not None
        else LabelMode()
    )
    try:
        specs = checked_specs(settings, models)
        if model:
            unknown = sorted(set(model) - {s.name for s in specs})
            if unknown:
                fail(f"no spec {unknown[0]!r}; specs: {', '.join(s.name for s in specs)}")
            specs = [s for s in specs if s.name in model]
        production_specs = checked_specs(settings) if champion else []
        # only the views the models read: nothing else is computed, or counted as not computable
        used = {s.view for s in specs} | {s.view for s in production_specs if s.name in (champion or [])}
        views = [v for v in load_views(settings.features_module) if v.name in used]
    except (SpecError, FeaturesError) as exc:
        fail(str(exc))

    topics = settings.topics
    topic: str | None = {"events": topics.events, "features": topics.features}.get(source)
    if source.startswith("topic:"):
        topic = source.removeprefix("topic:")
    if topic is None:
        given = [
            option
            for option, value, default in (
                ("--start", start, "beginning"),
                ("--end", end, "end"),
                ("--labels-start", labels_start, "beginning"),
                ("--input", input_kind, "auto"),
                ("--order", order, "event-time"),
            )
            if value != default
        ]
        if given:
            fail(f"{', '.join(given)} apply to topics; {source} is read whole (--limit stops early)")
    else:
        with user_errors():  # a bad range option fails before anything connects
            bounds = (parse_bound(start), parse_bound(end), parse_bound(labels_start))
    target = _output_dir(out, Path(settings.data_dir) / "replays")
    kind = input_kind
    if topic is not None and kind == "auto":
        kind = "features" if topic == topics.features else "events"

    registry = registry_of(settings) if champion else None

    def champions(ts: int) -> list[Champion]:
        assert registry is not None
        return [champion_at(registry, name, production_specs, ts) for name in champion or []]

    progress = Progress(
        TextColumn("[bold]replaying[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9,.0f} records/s"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
    )
    with user_errors(), progress:
        run = Replay(
            specs,
            views=views,
            labels=labels,
            sample_every=sample_every,
            champions=champions if champion else None,
        )
        if topic is not None:
            reader = RangeReader(settings)
            try:
                plan = plan_kafka(
                    reader,
                    settings,
                    topic,
                    FEATURES if kind == "features" else EVENTS,
                    bounds[0],
                    bounds[1],
                    kafka_order=order == "kafka",
                    labels_start=bounds[2],
                )
                main = sum(max(0, e - s) for s, e in plan.ranges[topic].values())
                total = main if limit is None else min(limit, main)
                task = progress.add_task("replay", total=total, rate=0.0)
                records = kafka_records(reader, plan, run)
                range_desc = plan.describe()
                _drive(run, records, limit, progress, task)
            finally:
                reader.close()
            label = f"{topic} ({kind})"
        else:
            mapping = row_mapping(
                source,
                entity_field,
                ts_field,
                label_field,
                id_field,
                entities,
                start_ts,
                step_ms,
                GENERATED_START_MS,
            )
            records = file_records(source, mapping, seed=seed, drift_at=drift_at, drift_width=drift_width)
            task = progress.add_task("replay", total=limit, rate=0.0)
            range_desc = {"limit": limit}
            _drive(run, records, limit, progress, task)
            label = source
        result = run.finish(label, range_desc, order)
    console.print(metrics_table(result))
    console.print(
        f"{result.read:,} records read, {result.records:,} scored in {result.elapsed_s:.1f} s "
        f"({result.rate:,.0f} records/s)"
    )
    refused = {k: v for k, v in result.features.items() if k != "events" and v}
    if refused or result.skipped:
        counts = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in refused.items())
        skipped = f"{result.skipped:,} records not of their kind" if result.skipped else ""
        err_console.print(f"[yellow]not scored:[/] {', '.join(x for x in (counts, skipped) if x)}")
        for reason in result.rejected:
            err_console.print(f"  {reason}", highlight=False, markup=False)
    for name, m in result.models.items():  # what the learner's router refused, as the live learner would
        if m.rejected or m.status != "learning":
            why = ", ".join(f"{n:,} {reason}" for reason, n in sorted(m.rejected.items()))
            status = f" [red]{m.status}[/]" if m.status != "learning" else ""
            err_console.print(f"[yellow]rejected for {escape(name)}:[/] {why}{status}", highlight=False)
    with user_errors():
        paths = write_outputs(result, target)
    console.print(f"result: {paths['json']}\nreport: {paths['html']}")
    if result.records == 0:
        fail("nothing was scored: the range holds no events (or features records) the models could use")


def _output_dir(out: Path | None, replays: Path) -> Path:
    """The directory for the outputs, created before the replay runs (an unusable --out fails at once);
    by default a new one per replay, named by its start time."""
    with user_errors():
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            return out
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        replays.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            target = replays / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                target.mkdir()
                return target
            except FileExistsError:
                continue
    raise AssertionError("unreachable")


def _drive(
    run: Replay,
    records: Iterable[tuple[Positioned, str]],
    limit: int | None,
    progress: Progress,
    task: TaskID,
) -> None:
    """Feed the records; ``limit`` and the progress bar count events and features records (not labels)."""
    from streaming.replay.runner import LABELS

    last = time.monotonic()
    taken = 0
    with fewer_collections():  # as Replay.run: see streaming.replay.collect
        for rec, role in records:
            run.feed(rec, role)
            if role != LABELS:
                taken += 1
                if limit is not None and taken >= limit:
                    break
            if run.read % 1000 == 0:
                now = time.monotonic()
                if now - last >= 0.2:
                    last = now
                    progress.update(task, completed=taken, rate=run.rate())
    progress.update(task, completed=taken)


def verify(
    name: str,
    version: int,
    models: Annotated[
        str | None, typer.Option(help="Module with the model specs (default RIVULET_MODELS_MODULE).")
    ] = None,
    from_version: Annotated[
        int | None, typer.Option(help="Rebuild from this retained version (default: the earliest possible).")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Rebuild a model version from the log and check it equals the stored one.

    Exit code 0 when it does, 3 when it differs, 1 when it cannot be rebuilt.
    """
    from streaming.replay.verify import VerifyError
    from streaming.replay.verify import verify as run_verify

    settings = load_settings()
    try:
        specs = checked_specs(settings, models)
    except (SpecError, FeaturesError) as exc:
        fail(str(exc))
    registry = registry_of(settings)
    progress = Progress(
        TextColumn("[bold]rebuilding[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
    )
    task = progress.add_task("verify", total=None)
    with user_errors(), progress:
        try:
            result = run_verify(
                settings,
                registry,
                specs,
                name,
                version,
                from_version=from_version,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except VerifyError as exc:
            fail(str(exc))
    for line in result.notes:
        console.print(f"  [dim]note[/]  {line}")
    for line in result.checks:
        console.print(f"  [green]ok[/]  {line}")
    for line in result.mismatches:
        console.print(f"  [red]differs[/]  {line}", markup=True)
    where = f"rebuilt from {result.base} over {result.records:,} records"
    if result.ok:
        console.print(f"[bold green]verified[/]: {name} v{version} ({result.method}; {where})")
    else:
        console.print(f"[bold red]NOT verified[/]: {name} v{version} differs from its rebuild ({where})")
        raise typer.Exit(3)
