"""What every subcommand shares: the settings object, logging, and turning errors into messages."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from kafka.errors import KafkaError
from pydantic import SecretStr, ValidationError
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from features.errors import FeaturesError
from streaming.errors import StreamingError
from streaming.logs import configure_logging
from streaming.runtime.stack import kept_keys
from streaming.settings import Settings

__all__ = [
    "USER_ERRORS",
    "console",
    "err_console",
    "fail",
    "load_settings",
    "progress_bar",
    "read_settings",
    "settings_of",
    "user_errors",
    "with_stack_keys",
]

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def load_settings(*, signing: bool = False) -> Settings:
    """The process's settings (:func:`read_settings`) completed with the stack's keys
    (:func:`with_stack_keys`), logging configured: what the ``rivulet`` root callback resolves once."""
    settings = with_stack_keys(read_settings(), signing=signing)
    configure_logging(settings)
    return settings


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the ``rivulet`` root callback resolved for this invocation."""
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):  # the callback skipped them ("--help" seen as a value): now
        root.obj = load_settings()
    return root.obj


def read_settings() -> Settings:
    """``Settings()`` from ``RIVULET_*``; invalid ones end the command with one line naming each bad
    setting by its variable and what is wrong with it."""
    try:
        return Settings()
    except ValidationError as exc:
        fail(
            "invalid configuration: "
            + "; ".join(
                f"RIVULET_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors()
            )
        )


def with_stack_keys(settings: Settings, *, signing: bool = False) -> Settings:
    """``settings`` completed with the keys ``rivulet up`` generated (if any), so the commands work
    against the stack it runs: without RIVULET_VERIFY_KEYS, the stack's public key
    (``<data dir>/stack/verify-keys``); with ``signing`` (the learner, the migration), without
    RIVULET_SIGNING_KEY, its private key (``<data dir>/stack/signing-key``)."""
    kept = kept_keys(settings)
    update: dict[str, object] = {}
    if not settings.verify_keys and kept.verify_keys:
        update["verify_keys"] = kept.verify_keys
    if signing and settings.signing_key is None and kept.signing_key:
        update["signing_key"] = SecretStr(kept.signing_key)
    return settings.model_copy(update=update) if update else settings


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as one error line and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


# what a user can cause (settings, specs, Kafka or Redis unreachable, a file): one line, never a traceback
USER_ERRORS = (StreamingError, FeaturesError, KafkaError, RedisError, OSError)


@contextmanager
def user_errors() -> Iterator[None]:
    """Report what a user can cause as one clear line and exit code 1, not a traceback: the roots of
    Rivulet's packages (:class:`~streaming.errors.StreamingError`, :class:`~features.errors.FeaturesError`:
    bad settings, specs, sources, ranges, keys) and the clients' own errors (Kafka or Redis unreachable, a
    file that cannot be read or written). Anything else is a bug and keeps its traceback."""
    try:
        yield
    except USER_ERRORS as exc:
        fail(f"{exc}" if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


def progress_bar(title: str, *columns: ProgressColumn, quiet: bool) -> Progress:
    """A progress bar on stderr (``quiet``: none) titled ``title``, with ``columns`` before the time."""
    return Progress(
        TextColumn(f"[bold]{title}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        *columns,
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
    )
