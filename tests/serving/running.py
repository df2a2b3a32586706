"""The API on a real uvicorn server in a thread, for the tests that need a socket (schemathesis, concurrent
clients, a browser). Start-up has a deadline: a server that does not start, or stops while starting, fails
the test with the server's own log instead of hanging it."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from tests.support.api_env import free_port

__all__ = ["running"]

START_S = 30.0  # uvicorn binds and runs the lifespan (models loaded from the registry) well within this


@contextlib.contextmanager
def running(app: Any, *, start_s: float = START_S) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL, and stops the server on exit."""
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    uv = logging.getLogger("uvicorn")
    uv.addHandler(handler)
    port = free_port()
    # log_config=None: uvicorn's records reach the handler above (its own config sends them to stderr only)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None)
    )

    def serve() -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits when start-up fails: its log says why
            server.run()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                late = f"did not start in {start_s:g} s"
                what = late if thread.is_alive() else "stopped while starting"
                pytest.fail(f"the API {what}; its log:\n{log.getvalue() or '(empty)'}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        uv.removeHandler(handler)
