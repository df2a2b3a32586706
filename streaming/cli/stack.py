"""``rivulet up`` and ``rivulet down``."""

from __future__ import annotations

from typing import Annotated

import typer

from streaming.cli.common import console, fail, settings_of, user_errors


def up(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option(help="Seconds to wait for every process to be running.")] = 60.0,
    features_metrics_port: Annotated[
        int, typer.Option(help="Port of the feature worker's Prometheus metrics.")
    ] = 9101,
) -> None:
    """Run the pipeline on real Kafka and Redis as supervised processes (feature worker, learner, API),
    each with its own log; Kafka and Redis are started with scripts/services when they do not answer."""
    from streaming.runtime.stack import Stack

    settings = settings_of(ctx)
    stack = Stack(settings, features_metrics_port=features_metrics_port)
    with user_errors():  # a StackError is a StreamingError: one error line
        console.print(stack.ensure_services())
        stack.up()
        states = stack.wait_running(wait)
    for name, state in states.items():
        console.print(f"  {name:9s} {state:9s} log: {stack.logs / (name + '.log')}")
    if not states or any(s != "RUNNING" for s in states.values()):
        with user_errors():
            stack.down()  # no half-started stack left behind
        fail(f"not every process is running, so none is left running; see the logs in {stack.logs}")
    url = f"http://{settings.serve_host}:{settings.serve_port}"
    console.print(
        f"API {url}/docs · dashboard {url}/dashboard · publish with rivulet produce · stop with rivulet down"
    )


def down(ctx: typer.Context) -> None:
    """Stop the processes started by rivulet up (Kafka and Redis keep running: scripts/services down)."""
    from streaming.runtime.stack import Stack

    stack = Stack(settings_of(ctx))
    with user_errors():
        stopped = stack.down()
    console.print("stopped" if stopped else "nothing was running")
