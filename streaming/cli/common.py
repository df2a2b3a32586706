"""What every subcommand shares: the settings object, logging, and turning errors into messages."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from kafka.errors import KafkaError
from pydantic import ValidationError
from redis.exceptions import RedisError
from rich.console import Console

from features.errors import FeaturesError
from streaming.errors import StreamingError
from streaming.logs import configure_logging
from streaming.settings import Settings

__all__ = ["console", "err_console", "fail", "load_settings", "user_errors"]

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def load_settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        fail(f"invalid configuration: {exc}")
    configure_logging(settings)
    return settings


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Report Rivulet and Kafka errors as one clear line and a non-zero exit, not a traceback."""
    try:
        yield
    except (StreamingError, FeaturesError, KafkaError, RedisError, OSError, ValueError) as exc:
        fail(f"{exc}" if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
