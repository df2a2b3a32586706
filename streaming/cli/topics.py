"""``rivulet topics create | list | describe``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from streaming.cli.common import console, settings_of, user_errors
from streaming.ingest.topics import TopicAdmin

app = typer.Typer(help="Create, list and describe Rivulet's Kafka topics.", no_args_is_help=True)


@app.command()
def create(
    ctx: typer.Context,
    partitions: Annotated[int | None, typer.Option(help="Partitions (default RIVULET_PARTITIONS).")] = None,
    replication: Annotated[int | None, typer.Option(help="Replication factor.")] = None,
) -> None:
    """Create the events, labels, features, predictions and dead-letters topics if absent."""
    settings = settings_of(ctx)
    with user_errors(), TopicAdmin(settings) as admin:
        for name, created in admin.create(partitions=partitions, replication_factor=replication).items():
            console.print(f"{'created' if created else 'exists '}  {name}")


@app.command("list")
def list_(
    ctx: typer.Context,
    all_topics: Annotated[bool, typer.Option("--all", help="Also topics outside the prefix.")] = False,
) -> None:
    """Topic names under RIVULET_TOPIC_PREFIX."""
    settings = settings_of(ctx)
    with user_errors(), TopicAdmin(settings) as admin:
        for name in admin.list_topics(all_topics=all_topics):
            console.print(name)


@app.command()
def describe(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Topic name, or a short name such as 'events'.")] = "events",
) -> None:
    """Partitions with leader, replicas, in-sync replicas and offsets, and the topic's own configs."""
    settings = settings_of(ctx)
    short = {t.removeprefix(settings.topic_prefix): t for t in settings.topics.all()}
    with user_errors(), TopicAdmin(settings) as admin:
        info = admin.describe(short.get(name, name))
    table = Table(title=f"{info.name}: {info.messages:,} messages")
    for col in ("partition", "leader", "replicas", "isr", "earliest", "latest"):
        table.add_column(col, justify="right")
    for p in info.partitions:
        table.add_row(
            str(p.partition),
            str(p.leader),
            ",".join(map(str, p.replicas)),
            ",".join(map(str, p.isr)),
            f"{p.earliest:,}",
            f"{p.latest:,}",
        )
    console.print(table)
    for key, value in sorted(info.configs.items()):
        console.print(f"  {key} = {value}")
