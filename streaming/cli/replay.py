"""``rivulet replay topic | file | dataset``: evaluate candidate models on history.

Each kind of source is its own command with only its own options: a range (``--start``, ``--end``...)
belongs to ``topic``, a row mapping (``--entity-field``...) to ``file``, synthetic-stream options to
``dataset``; an option of another kind is refused by the parser. The form before these commands,
``rivulet replay SOURCE [OPTIONS]``, still works: the source says which command it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.progress import TextColumn
from typer import Context
from typer.core import TyperGroup

from streaming.cli.common import console, err_console, fail, progress_bar, settings_of, user_errors
from streaming.cli.options import ReplayOptions, RowFields, RowTiming, Synth, grouped, row_mapping
from streaming.cli.specs import checked_specs, registry_of
from streaming.replay.kafka import Bound, parse_bound
from streaming.settings import Settings

if TYPE_CHECKING:
    from rich.progress import Progress
    from typer._click import Context as ClickContext  # TyperGroup.parse_args's: typer vendors click

    from streaming.learning.spec import ModelSpec
    from streaming.replay.plan import RowSource, TopicSource
    from streaming.replay.runner import ReplayResult

FilePath = Annotated[str, typer.Argument(help="A .jsonl or .csv file.", show_default=False)]
DatasetName = Annotated[str, typer.Argument(help="river:<Dataset> or synth:<generator>.", show_default=False)]
GENERATED_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: replays of generated streams are repeatable


def command_of(source: str) -> str:
    """The command that replays ``source`` when it is given the old way, ``rivulet replay SOURCE``.

    >>> [command_of(s) for s in ("events", "topic:x", "river:Phishing", "synth:drift", "rows.csv")]
    ['topic', 'topic', 'dataset', 'dataset', 'file']
    """
    if source in ("events", "features") or source.startswith("topic:"):
        return "topic"
    return "dataset" if source.startswith(("river:", "synth:")) else "file"


class _Replay(TyperGroup):
    """Routes ``rivulet replay SOURCE ...`` (and ``rivulet replay [OPTIONS]``: the features topic) to the
    command of its source."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] != "--help"):
            source = self._source(args)
            args = [command_of(source) if source is not None else "topic", *args]
        return super().parse_args(ctx, args)

    def _source(self, args: list[str]) -> str | None:
        """The old form's SOURCE: the first argument that is neither an option nor an option's value
        (``rivulet replay --limit 5 rows.csv``, ``rivulet replay -- -odd-name.csv``)."""
        takes_value = {
            opt
            for command in self.commands.values()
            for param in command.params
            if param.param_type_name == "option" and not getattr(param, "is_flag", False)
            for opt in param.opts
        }
        rest = iter(args)
        for arg in rest:
            if arg == "--":
                return next(rest, None)
            if not arg.startswith("-"):
                return arg
            if arg in takes_value:  # --limit 5: its value is no source ("--limit=5" carries it)
                next(rest, None)
        return None


@dataclass(frozen=True, slots=True)
class TopicRange:
    """A topic's range, ``[start, end)``, and where reading the labels topic starts: each a bound,
    ``beginning``/``end``, ``time:<ISO|epoch ms>``, ``offset:N`` or per partition ``P:N,P:N``."""

    start: Annotated[str, typer.Option(help="Range start (a bound: see --help of replay topic).")] = (
        "beginning"
    )
    end: Annotated[str, typer.Option(help="Range end, exclusive (a bound).")] = "end"
    labels_start: Annotated[str, typer.Option(help="Where the labels topic is read from (a bound).")] = (
        "beginning"
    )

    def bounds(self) -> tuple[Bound, Bound, Bound]:
        """The three bounds parsed (:class:`~streaming.replay.kafka.RangeError` for a bad one)."""
        return parse_bound(self.start), parse_bound(self.end), parse_bound(self.labels_start)


app = typer.Typer(
    cls=_Replay,
    help="Evaluate candidate models on history (a topic over a range, a file, a dataset): final metrics, "
    "metric curves, drifts and throughput. Never joins a consumer group, commits nothing, writes to no "
    "topic and no Redis key.",
)


@app.command()
@grouped
def topic(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(help="events or features (Rivulet's topics), or a topic's name.")
    ] = "features",
    input_kind: Annotated[
        Literal["auto", "events", "features"],
        typer.Option("--input", help="What the topic holds (auto: by the topic's name)."),
    ] = "auto",
    order: Annotated[
        Literal["event-time", "kafka"],
        typer.Option(help="Merge partitions by event time, or keep Kafka's order (by record timestamp)."),
    ] = "event-time",
    *,
    span: TopicRange,
    opts: ReplayOptions,
) -> None:
    """Replay a topic over a range: events (features recomputed by the same engine) or features records,
    with the labels topic beside them. A range bound (--start, --end, --labels-start) is beginning or end,
    time:<ISO|epoch ms>, offset:N (every partition) or P:N,P:N (per partition)."""
    from streaming.replay.plan import TopicSource

    settings = settings_of(ctx)
    topics = settings.topics
    name = {"events": topics.events, "features": topics.features}.get(source, source.removeprefix("topic:"))
    kind = input_kind if input_kind != "auto" else "features" if name == topics.features else "events"
    with user_errors():  # a bad range option fails before anything connects
        bounds = span.bounds()
    _replay(settings, TopicSource(name, kind, *bounds, kafka_order=order == "kafka"), opts)


@app.command()
@grouped
def file(ctx: Context, path: FilePath, fields: RowFields, timing: RowTiming, opts: ReplayOptions) -> None:
    """Replay the rows of a file as events, in file order."""
    _replay_rows(settings_of(ctx), path, fields, timing, {}, opts)


@app.command()
@grouped
def dataset(ctx: Context, name: DatasetName, timing: RowTiming, synth: Synth, opts: ReplayOptions) -> None:
    """Replay a River dataset or a synthetic stream as events (repeatable: times from 2026-01-01)."""
    _replay_rows(settings_of(ctx), name, RowFields(), timing, synth.source_options(), opts)


def _replay_rows(
    settings: Settings,
    source: str,
    fields: RowFields,
    timing: RowTiming,
    source_options: dict[str, int],
    options: ReplayOptions,
) -> None:
    from streaming.replay.plan import RowSource

    with user_errors():  # a bad --start-ts
        mapping = row_mapping(source, fields, timing, GENERATED_START_MS)
    _replay(settings, RowSource(source, mapping, source_options), options)


def _replay(settings: Settings, source: TopicSource | RowSource, options: ReplayOptions) -> None:
    """Check the request, run it with a progress bar, print and write the results."""
    from features.definitions import load_views
    from streaming.replay import plan
    from streaming.replay.report import new_output_dir, print_result, write_outputs

    if settings.mlflow_tracking_uri:  # before the output directory is made
        _mlflow_usable(settings)
    with user_errors():  # a bad spec, view or option fails before anything connects
        labels = plan.label_mode(options.label_delay, options.label_delay_ms)
        specs = plan.candidates(checked_specs(settings, options.models), options.model)
        champions = options.champion or []
        production = checked_specs(settings) if champions else []  # the specs the champions were trained with
        used = [*specs, *(s for s in production if s.name in champions)]
        views = plan.views_for(load_views(settings.features_module), used)
        target = new_output_dir(options.out, Path(settings.data_dir) / "replays")
    at = plan.champions_from(registry_of(settings), champions, production) if champions else None
    request = plan.ReplayRequest(source, specs, views, labels, options.sample_every, options.limit, at)
    bar = progress_bar("replaying", TextColumn("{task.fields[rate]:>9,.0f} records/s"), quiet=options.quiet)
    with user_errors(), bar:
        result = plan.run_replay(settings, request, _Bar(bar))
    print_result(result, console, err_console)
    with user_errors():
        paths = write_outputs(result, target)
    console.print(f"result: {paths['json']}\nreport: {paths['html']}")
    if settings.mlflow_tracking_uri:
        _to_mlflow(settings, result, used, {v.name: v.fingerprint() for v in views}, paths)
    if result.records == 0:
        fail("nothing was scored: the range holds no events (or features records) the models could use")


def _mlflow_usable(settings: Settings) -> None:
    """Refuse, before replaying, a tracking URI MLflow can never use (one it has no store for, a file store
    it refuses, a database driver missing): the run would be lost at the end. MLflow not installed or
    unreachable is said after the replay, whose outputs stand."""
    from streaming.tracking.tracker import never_connects

    try:
        from streaming.tracking.replays import client_for

        client_for(settings)
    except Exception as exc:
        if isinstance(exc, ImportError) and exc.name in ("mlflow", "streaming.tracking.replays"):
            return  # the extra is not installed: said after the replay
        if never_connects(exc):
            why = " ".join(f"{type(exc).__name__}: {exc}".split())[:800]
            fail(f"RIVULET_MLFLOW_TRACKING_URI {settings.mlflow_tracking_uri!r} cannot be used: {why}")


def _to_mlflow(
    settings: Settings,
    result: ReplayResult,
    specs: list[ModelSpec],
    hashes: dict[str, str],
    paths: dict[str, Path],
) -> None:
    """A run per candidate in MLflow (:mod:`streaming.tracking.replays`). The replay's result and report are
    written already: MLflow missing, down or refusing is said, not a failed replay."""
    try:
        from streaming.tracking.replays import log_replay
    except ImportError as exc:
        err_console.print(f"MLflow: the replay was not logged: {exc} (pip install 'rivulet[mlflow]')")
        return
    try:
        runs = log_replay(settings, result, specs, hashes, paths)
    except Exception as exc:  # anything MLflow raises (unreachable, refused): the outputs above stand
        err_console.print(f"MLflow: the replay was not logged: {type(exc).__name__}: {str(exc)[:500]}")
        return
    console.print(f"mlflow: {len(runs)} runs in {settings.mlflow_experiment}-replays")


class _Bar:
    """A rich progress bar as :class:`streaming.replay.plan.ReplayProgress`."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("replay", total=None, rate=0.0)

    def start(self, total: int | None) -> None:
        self.progress.update(self.task, total=total)

    def update(self, done: int, rate: float) -> None:
        self.progress.update(self.task, completed=done, rate=rate)
