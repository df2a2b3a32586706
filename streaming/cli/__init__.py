"""The ``rivulet`` command. Each subcommand group lives in its own module; the settings are resolved once,
in the root callback, before any subcommand runs, and each command takes them from its context
(:func:`streaming.cli.common.settings_of`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from typer.core import TyperGroup

from streaming.cli import (
    demo,
    export,
    features,
    keys,
    learn,
    models,
    produce,
    replay,
    serve,
    stack,
    status,
    topics,
    watch,
)
from streaming.cli.common import load_settings

if TYPE_CHECKING:
    from typer._click import Context  # TyperGroup.parse_args's: typer vendors click

__all__ = ["app", "main"]


class _Root(TyperGroup):
    """Notes whether a subcommand's help was asked for: help needs no settings, so bad ones do not stop it."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        group = self.commands.get(args[0]) if len(args) == 1 else None  # `rivulet models`: its help
        ctx.meta["rivulet.help"] = "--help" in args or getattr(group, "no_args_is_help", False)
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="rivulet",
    cls=_Root,
    help="Streaming online learning: Kafka events, streaming features, River models, real-time scoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _settings(ctx: typer.Context) -> None:
    """Streaming online learning: Kafka events, streaming features, River models, real-time scoring."""
    if not ctx.resilient_parsing and not ctx.meta.get("rivulet.help"):
        ctx.obj = load_settings()  # bad settings: one `error:` line and exit 1, whatever the command


app.add_typer(topics.app, name="topics")
app.add_typer(features.app, name="features")
app.add_typer(learn.app, name="learn")
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
app.add_typer(replay.app, name="replay")
app.add_typer(export.app, name="export")
app.command("produce")(produce.produce)
app.command("watch")(watch.watch)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
app.command("up")(stack.up)
app.command("down")(stack.down)
app.command("status")(status.status)


def main() -> None:
    app()
