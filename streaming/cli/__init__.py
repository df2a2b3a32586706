"""The ``rivulet`` command. Each subcommand group lives in its own module and reads one ``Settings``."""

from __future__ import annotations

import typer

from streaming.cli import demo, features, keys, learn, produce, replay, serve, stack, topics, watch

__all__ = ["app", "main"]

app = typer.Typer(
    name="rivulet",
    help="Streaming online learning: Kafka events, streaming features, River models, real-time scoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(topics.app, name="topics")
app.add_typer(features.app, name="features")
app.add_typer(learn.learn_app, name="learn")
app.add_typer(learn.models_app, name="models")
app.add_typer(keys.app, name="keys")
app.command("produce")(produce.produce)
app.command("watch")(watch.watch)
app.command("serve")(serve.serve)
app.command("replay")(replay.replay)
app.command("demo")(demo.demo)
app.command("up")(stack.up)
app.command("down")(stack.down)
learn.models_app.command("verify")(replay.verify)


def main() -> None:
    app()
