"""Logs: one JSON line per record, with an exception's traceback as text (issue 15: a crash loop's cause
was lost because the lines said only ``<traceback object at ...>``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from streaming.logs import configure_logging, get_logger
from streaming.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """configure_logging binds the root logger to this test's captured stderr: put back what was there."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def _raise_invalid_state() -> None:
    raise RuntimeError("invalid state")


def _lines(err: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("how", ["stdlib", "structlog"])
def test_an_exception_is_logged_with_its_traceback_as_text(
    how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(Settings(log_format="json", log_level="INFO"))
    try:
        _raise_invalid_state()
    except RuntimeError as exc:
        if how == "stdlib":  # aiokafka, Faust and kafka-python log through the standard library
            logging.getLogger("aiokafka.consumer").exception("agent crashed")
        else:
            get_logger("rivulet.test").error("record failed", exc_info=exc)
    (line,) = [d for d in _lines(capsys.readouterr().err) if d["event"] in ("agent crashed", "record failed")]
    text = str(line["exception"])
    assert "Traceback (most recent call last)" in text and "_raise_invalid_state" in text
    assert "RuntimeError: invalid state" in text
    assert "<traceback object" not in orjson.dumps(line).decode()
    assert "exc_info" not in line


def test_the_console_format_still_prints_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_format="console", log_level="INFO"))
    try:
        _raise_invalid_state()
    except RuntimeError:
        logging.getLogger("faust").exception("agent crashed")
    err = capsys.readouterr().err
    assert "agent crashed" in err and "RuntimeError: invalid state" in err and "_raise_invalid_state" in err
