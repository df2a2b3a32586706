"""``rivulet status``: the pipeline at a glance (:mod:`streaming.runtime.pipeline_status`); exit 1 when
something needs a person, ``--json`` for scripts."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from streaming.cli.common import USER_ERRORS, console, settings_of, user_errors, with_stack_keys
from streaming.clients import registry_reader


def status(
    ctx: typer.Context,
    json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    api: Annotated[
        str | None,
        typer.Option(help="The API's base URL (default: RIVULET_SERVE_HOST:PORT's; '': not probed)."),
    ] = None,
    features_metrics: Annotated[
        str | None, typer.Option(help="The feature worker's metrics URL ('' : not probed).")
    ] = "http://127.0.0.1:9101/metrics",
    learner_metrics: Annotated[
        str | None,
        typer.Option(
            help="The learner's metrics URL (default from RIVULET_LEARNER_METRICS_PORT; '': not probed)."
        ),
    ] = None,
    max_lag: Annotated[int, typer.Option(help="Records behind that need a person.")] = 10_000,
    max_lag_seconds: Annotated[
        float | None,
        typer.Option(
            help="Event-time seconds behind, records waiting, that need a person (default: not judged)."
        ),
    ] = None,
    max_checkpoint_age: Annotated[
        float,
        typer.Option(help="A model's checkpoint age (s), records waiting, that needs a person."),
    ] = 600.0,
) -> None:
    """Each stage (up or down, lag), each model (versions, champion, challengers, last checkpoint age, rolling
    metric, drifts) and dead letters by reason; exit 1 when something needs a person."""
    settings = with_stack_keys(settings_of(ctx))
    from streaming.runtime.pipeline_status import gather

    port = settings.learner_metrics_port
    default_api = f"http://{settings.serve_host}:{settings.serve_port}"
    endpoints = {
        "api": None if api == "" else f"{(api or default_api).rstrip('/')}/healthz",
        "features": features_metrics or None,
        "learner": learner_metrics
        if learner_metrics is not None
        else (f"http://127.0.0.1:{port}/metrics" if port else None),
    }
    endpoints["learner"] = endpoints["learner"] or None
    with user_errors():  # Redis or Kafka unreachable: one line on stderr (and, with --json, JSON on stdout)
        try:
            result = gather(
                settings,
                registry_reader(settings),
                endpoints=endpoints,
                max_lag=max_lag,
                max_checkpoint_age_s=max_checkpoint_age,
                max_lag_s=max_lag_seconds,
            )
        except USER_ERRORS as exc:
            if json:  # a script reading the JSON gets JSON saying why
                why = str(exc) or type(exc).__name__
                print(orjson.dumps({"error": why, "problems": [f"status not known: {why}"]}).decode())
            raise
    if json:
        console.print_json(orjson.dumps(result.to_dict()).decode())
    else:
        for stage in result.stages:
            state = {True: "up", False: "DOWN", None: "?"}[stage.up]
            lag = "?" if stage.lag_records is None else str(stage.lag_records)
            secs = "?" if stage.lag_seconds is None else f"{stage.lag_seconds:.0f}"
            console.print(
                f"{stage.name:<9} {state:<5} lag {lag:>8} records {secs:>6} s  {stage.detail}", markup=False
            )
        for m in result.models:
            rolling = ", ".join(f"{k} {v:.4g}" for k, v in sorted(m.rolling.items())) or "-"
            age = "?" if m.checkpoint_age_s is None else f"{m.checkpoint_age_s:.0f}s"
            console.print(
                f"model {m.name}: {m.status}, v{m.current} of {m.versions}, champion {m.champion or '-'}, "
                f"challengers {len(m.challengers)}, checkpoint {age} ago, rolling {rolling}, "
                f"drifts {m.drifts}",
                markup=False,
            )
        for where, letters in result.dead_letters.items():
            if letters:
                text = ", ".join(f"{r} {n}" for r, n in sorted(letters.items()))
                console.print(f"dead letters ({where}): {text}", markup=False)
        for p in result.problems:
            console.print(f"NEEDS A PERSON: {p}", markup=False)
        if not result.problems:
            console.print("ok: nothing needs a person", markup=False)
    raise typer.Exit(1 if result.problems else 0)
