"""``rivulet learn run``: the learner process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streaming.cli.common import fail, settings_of, user_errors, with_stack_keys
from streaming.cli.options import ModelsModule
from streaming.cli.specs import checked_specs
from streaming.clients import registry_writer
from streaming.learning.registry import RedisRegistry
from streaming.learning.shards import Shard
from streaming.learning.spec import ModelSpec

app = typer.Typer(help="Run the learner: River models on the features stream.", no_args_is_help=True)


@app.command()
def run(
    ctx: typer.Context,
    models: ModelsModule = None,
    idle_exit: Annotated[float | None, typer.Option(help="Stop after N seconds without records.")] = None,
    heartbeat: Annotated[
        Path | None, typer.Option(help="Touch this file every 2 s (a health check).")
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="I/N: this learner's own specs are shard I of N (RIVULET_LEARNER_SHARD); it stands by for "
            "the others (RIVULET_LEARNER_STANDBY)."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics on this port (RIVULET_LEARNER_METRICS_PORT; 0: off)."),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of the metrics endpoint.")] = "127.0.0.1",
) -> None:
    """Learn continuously; checkpoint every N records or T seconds and at shutdown (SIGTERM, Ctrl-C)."""
    settings = with_stack_keys(settings_of(ctx), signing=True)
    try:
        own = Shard.parse(shard) if shard is not None else settings.shard()
    except ValueError as exc:
        fail(f"--shard: {exc}")
    with user_errors():  # a bad spec or feature view
        specs = checked_specs(settings, models)
    from streaming.runtime.learner import LearnerWorker
    from streaming.runtime.learner_metrics import LearnerMetrics

    port = settings.learner_metrics_port if metrics_port is None else metrics_port
    metrics = LearnerMetrics() if port else None
    if metrics is not None:
        metrics.serve(port, metrics_host)
    with user_errors():
        registry = registry_writer(settings)
        _restorable(registry, specs)
        worker = LearnerWorker(settings, specs, registry=registry, shard=own, metrics=metrics)
        worker.run(max_idle_s=idle_exit, heartbeat=heartbeat)


def _restorable(registry: RedisRegistry, specs: list[ModelSpec]) -> None:
    """A model with versions of which none verifies (signed by a key outside the ring, or in the HMAC
    format) is not silently started afresh: the learner refuses to start and says what to do."""
    for spec in specs:
        infos = registry.versions(spec.name)
        if infos and all(i.refused for i in infos):
            fail(
                f"model {spec.name!r} has {len(infos)} version(s) and none verifies ({infos[0].refused}); "
                "add its signer's public key to RIVULET_VERIFY_KEYS, migrate HMAC snapshots with `rivulet "
                "models resign`, or delete the model's versions to start it afresh"
            )
