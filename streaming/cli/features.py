"""``rivulet features run | status | show``: the feature worker and a look at what it produced."""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
import typer

from features.definitions import load_views
from streaming.cli.common import console, settings_of, user_errors
from streaming.clients import feature_store

app = typer.Typer(
    help="Run the feature processor and inspect the online feature store.", no_args_is_help=True
)

FeaturesOption = Annotated[
    str | None,
    typer.Option("--features", help="Module with the feature views (default RIVULET_FEATURES_MODULE)."),
]


@app.command()
def run(
    ctx: typer.Context,
    features: FeaturesOption = None,
    metrics_port: Annotated[int, typer.Option(help="Serve Prometheus metrics on this port (0: off).")] = 0,
    metrics_host: Annotated[str, typer.Option(help="Address of the metrics endpoint.")] = "127.0.0.1",
) -> None:
    """Start a feature worker. Workers with the same topic prefix form one consumer group."""
    settings = settings_of(ctx)
    with user_errors():  # a bad feature view (FeaturesError)
        views = load_views(features or settings.features_module)
    from faust import Worker
    from prometheus_client import start_http_server

    from streaming.runtime.feature_worker import create_app, tune_gc

    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host)
    app = create_app(settings, views)
    # our structured logging stays in charge (mode would reconfigure it, and aiokafka would log per record)
    worker = Worker(
        app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False, override_logging=False
    )
    tune_gc(settings)
    worker.execute_from_commandline()


@app.command()
def status(ctx: typer.Context) -> None:
    """Counters of the feature workers: records per view, dead letters per reason, redeliveries skipped."""
    settings = settings_of(ctx)
    from streaming.runtime.feature_worker import stats_key

    async def go() -> dict[str, int]:
        store = feature_store(settings)
        try:
            return await store.counts(stats_key(settings))
        finally:
            await store.close()

    with user_errors():  # Redis unreachable
        counts = asyncio.run(go())
    console.print(orjson.dumps(counts, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@app.command()
def show(
    ctx: typer.Context,
    entity: Annotated[list[str], typer.Argument(help="Entity keys.")],
    view: Annotated[str, typer.Option(help="Feature view.")] = "customer",
) -> None:
    """The online vector of one or more entities, with the event time it reflects."""
    settings = settings_of(ctx)

    async def go() -> list:
        store = feature_store(settings)
        try:
            return await store.read(view, entity)
        finally:
            await store.close()

    with user_errors():  # Redis unreachable
        rows = asyncio.run(go())
    for key, row in zip(entity, rows, strict=True):
        out = None if row is None else {"ts": row.ts, "features": row.values}
        console.print(orjson.dumps({"entity": key, "view": view, "online": out}).decode())
