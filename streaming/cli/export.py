"""``rivulet export topic | version``: point-in-time datasets to Parquet (:mod:`streaming.replay.export`).

``topic`` exports a range of the features (or events) topic with the labels topic beside it, for one model
spec; ``version`` exports what a registry version learned, up to the offsets its header names. Both print
the resolved range: give it back as bounds to write the same bytes again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer

from streaming.cli.common import console, settings_of, user_errors
from streaming.cli.options import ModelsModule
from streaming.cli.specs import checked_specs, registry_of
from streaming.replay.kafka import RangeError, parse_bound

app = typer.Typer(
    help="Point-in-time datasets: the feature vectors a model saw and the labels joined to them, for a "
    "topic range or a model version's history, to Parquet (range, offsets, feature-definition hash and a "
    "content hash in the file's metadata). Reads Kafka without a consumer group; writes only the file.",
    no_args_is_help=True,
)

Out = Annotated[Path, typer.Option("--out", "-o", help="The Parquet file to write.")]


@app.command()
def topic(
    ctx: typer.Context,
    out: Out,
    source: Annotated[
        str, typer.Argument(help="events or features (Rivulet's topics), or a topic's name.")
    ] = "features",
    model: Annotated[
        str | None,
        typer.Option(help="The spec whose view, inputs and label rules apply (default: the only one)."),
    ] = None,
    models: ModelsModule = None,
    start: Annotated[
        str, typer.Option(help="Range start: beginning, end, time:<ISO|ms>, offset:N, P:N,P:N.")
    ] = ("beginning"),
    end: Annotated[str, typer.Option(help="Range end, exclusive (a bound).")] = "end",
    labels_start: Annotated[str, typer.Option(help="Where the labels topic is read from (a bound).")] = (
        "beginning"
    ),
    labels_end: Annotated[str, typer.Option(help="Where reading the labels topic stops (a bound).")] = "end",
    partitions: Annotated[
        str | None, typer.Option(help="Only these partitions of the topic (comma-separated).")
    ] = None,
    order: Annotated[
        Literal["event-time", "kafka"],
        typer.Option(help="Merge partitions by event time, or keep Kafka's order (by record timestamp)."),
    ] = "event-time",
) -> None:
    """Export a topic over a range: the rows one spec's model predicts on and learns from."""
    from features.definitions import load_views
    from streaming.clients import keyring
    from streaming.errors import MissingKey
    from streaming.replay import plan
    from streaming.replay.export import export_range

    settings = settings_of(ctx)
    topics = settings.topics
    name = {"events": topics.events, "features": topics.features}.get(source, source.removeprefix("topic:"))
    kind: Literal["events", "features"] = "features" if name == topics.features else "events"
    with user_errors():  # bad bounds, partitions or spec fail before anything connects
        bounds = [parse_bound(b) for b in (start, end, labels_start, labels_end)]
        parts = _partitions(partitions)
        specs = checked_specs(settings, models)
        if model is None and len(specs) != 1:
            raise RangeError(f"give --model: the specs are {', '.join(s.name for s in specs)}")
        spec = plan.candidates(specs, [model] if model else None)[0]
        views = load_views(settings.features_module)
    try:
        ring = keyring(settings)
    except MissingKey:
        ring = None
    src = plan.TopicSource(name, kind, bounds[0], bounds[1], bounds[2], order == "kafka", bounds[3])
    with user_errors():
        done = export_range(settings, src, spec, views, out, partitions=parts, keyring=ring)
    _summary(done.path, done.meta)


@app.command()
def version(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The registry model.")],
    out: Out,
    number: Annotated[int | None, typer.Argument(help="Its version (default: the newest).")] = None,
    models: ModelsModule = None,
) -> None:
    """Export what a model version learned: its history's records in its journal's order."""
    from streaming.replay.export import export_history

    settings = settings_of(ctx)
    with user_errors():
        specs = checked_specs(settings, models)
    registry = registry_of(settings)
    with user_errors():
        if number is None:
            versions = registry.versions(name)
            if not versions:
                raise RangeError(f"model {name!r} has no version in the registry")
            number = max(v.version for v in versions)
        done = export_history(settings, registry, specs, name, number, out)
    _summary(done.path, done.meta)


def _partitions(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise RangeError(f"bad --partitions {text!r}: expected numbers separated by commas") from None


def _summary(path: Path, meta: dict[str, object]) -> None:
    console.print(
        f"exported {meta['rows']:,} rows ({meta['learned']:,} learned) of {meta['model']} to {path}"
    )
    console.print(f"range: {orjson.dumps(meta['range']).decode()}")
    console.print(f"feature hash: {meta['feature_hash']}  content sha256: {meta['content_sha256']}")
    letters = meta.get("dead_letters") or {}
    if letters:
        console.print(f"rejected (dead letters, by reason): {orjson.dumps(letters).decode()}")
