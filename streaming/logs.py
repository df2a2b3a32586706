"""Structured logging, configured once per process: JSON lines (or console) on stderr, quiet by default."""

from __future__ import annotations

import logging
import sys

import structlog

from streaming.settings import Settings

__all__ = ["configure_logging", "get_logger"]


def configure_logging(settings: Settings) -> None:
    """Route stdlib and structlog records through one renderer at ``settings.log_level``."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # an exception as its traceback's text under "exception" (rendered as it was, the JSON line
                # said only <traceback object at ...>); the console renderer formats its own
                *([structlog.processors.format_exc_info] if settings.log_format == "json" else []),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # kafka-python logs every reconnect attempt at WARNING/ERROR; our own messages carry the outcome.
    logging.getLogger("kafka").setLevel(max(logging.ERROR, logging.getLevelName(settings.log_level)))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
