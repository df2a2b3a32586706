"""What every subcommand shares: the settings object, logging, and turning errors into messages."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from kafka.errors import KafkaError
from pydantic import SecretStr, ValidationError
from redis.exceptions import RedisError
from rich.console import Console

from features.errors import FeaturesError
from features.events import parse_ts
from streaming.errors import StreamingError
from streaming.ingest.rows import RowMapping
from streaming.logs import configure_logging
from streaming.settings import Settings

__all__ = [
    "DriftAt",
    "DriftWidth",
    "Entities",
    "EntityField",
    "IdField",
    "LabelField",
    "Seed",
    "StartTs",
    "StepMs",
    "TsField",
    "console",
    "err_console",
    "fail",
    "load_settings",
    "row_mapping",
    "user_errors",
]

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def load_settings(*, signing: bool = False) -> Settings:
    """The settings, completed with the keys ``rivulet up`` generated (if any), so the commands work
    against the stack it runs: without RIVULET_VERIFY_KEYS, the stack's public key
    (``<data dir>/stack/verify-keys``); with ``signing`` (the learner, the migration), without
    RIVULET_SIGNING_KEY, its private key (``<data dir>/stack/signing-key``)."""
    try:
        settings = Settings()
    except ValidationError as exc:  # one line: each bad setting by its variable, and what is wrong
        fail(
            "invalid configuration: "
            + "; ".join(
                f"RIVULET_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors()
            )
        )
    home = Path(settings.data_dir) / "stack"
    update: dict[str, object] = {}
    kept = home / "verify-keys"
    if not settings.verify_keys and kept.is_file():
        update["verify_keys"] = [k.strip() for k in kept.read_text().split(",") if k.strip()]
    kept = home / "signing-key"
    if signing and settings.signing_key is None and kept.is_file():
        update["signing_key"] = SecretStr(kept.read_text().strip())
    if update:
        settings = settings.model_copy(update=update)
    configure_logging(settings)
    return settings


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as one error line and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Report what a user can cause as one clear line and exit code 1, not a traceback: the roots of
    Rivulet's packages (:class:`~streaming.errors.StreamingError`, :class:`~features.errors.FeaturesError`:
    bad settings, specs, sources, ranges, keys) and the clients' own errors (Kafka or Redis unreachable, a
    file that cannot be read or written). Anything else is a bug and keeps its traceback."""
    try:
        yield
    except (StreamingError, FeaturesError, KafkaError, RedisError, OSError) as exc:
        fail(f"{exc}" if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


# ---------------------------------------------------------------- how rows of a file become events
# (``rivulet produce`` and ``rivulet replay`` read the same sources the same way)

EntityField = Annotated[str, typer.Option(help="Column holding the entity key.")]
TsField = Annotated[str, typer.Option(help="Column holding the event time (epoch ms or ISO 8601).")]
LabelField = Annotated[str, typer.Option(help="Column holding the label.")]
IdField = Annotated[str, typer.Option(help="Column holding the event id (generated when absent).")]
Entities = Annotated[
    int | None,
    typer.Option(help="Rows without an entity get one of N synthetic keys (default 100 for river:/synth:)."),
]
StartTs = Annotated[
    str | None,
    typer.Option(
        help="Rows without a time get start + i*step. river:/synth: default: produce stamps each event with "
        "the clock as it is sent, replay starts at 2026-01-01."
    ),
]
StepMs = Annotated[int, typer.Option(help="Event-time step between rows without a time.")]
Seed = Annotated[int, typer.Option(help="Seed of synthetic streams.")]
DriftAt = Annotated[int, typer.Option(help="synth:drift: position of the concept drift.")]
DriftWidth = Annotated[int, typer.Option(min=1, help="synth:drift: width of the drift (>= tens).")]


def row_mapping(
    source: str,
    entity_field: str,
    ts_field: str,
    label_field: str,
    id_field: str,
    entities: int | None,
    start_ts: str | None,
    step_ms: int,
    default_start_ms: int | None,
) -> RowMapping:
    """The mapping of a source's rows; River datasets and synthetic streams get 100 entities and times
    from ``default_start_ms`` unless told otherwise (None: the wall clock as each row is mapped)."""
    generated = source.startswith(("river:", "synth:"))
    with user_errors():
        start = parse_ts(start_ts, "--start-ts") if start_ts is not None else None
    return RowMapping(
        entity_field=entity_field,
        ts_field=ts_field,
        label_field=label_field,
        id_field=id_field,
        entities=entities if entities is not None else (100 if generated else None),
        start_ts=start if start is not None else (default_start_ms if generated else None),
        step_ms=step_ms,
        clock=generated and start is None and default_start_ms is None,
    )
