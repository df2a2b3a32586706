"""The test server helper (:mod:`tests.serving.running`): a server that cannot start fails the test at once,
with the server's log, instead of leaving a start loop waiting for ever (the loops it replaced had no
deadline: an app whose start-up raised hung the run until the suite's timeout)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.serving.running import running

pytestmark = pytest.mark.unit


def test_an_app_that_fails_to_start_fails_the_test_with_its_log() -> None:
    @contextlib.asynccontextmanager
    async def broken(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no registry: the lifespan cannot start")
        yield

    with pytest.raises(pytest.fail.Exception) as failed, running(FastAPI(lifespan=broken)):
        pytest.fail("the server must not be reported as started")  # pragma: no cover
    message = str(failed.value)
    assert "the API stopped while starting" in message
    assert "no registry: the lifespan cannot start" in message  # the server's own log, with the cause


def test_a_server_that_does_not_start_in_time_fails_the_test() -> None:
    @contextlib.asynccontextmanager
    async def slow(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        await asyncio.sleep(5)  # start-up outlasts the deadline (then the server sees it must stop)
        yield

    with pytest.raises(pytest.fail.Exception) as failed, running(FastAPI(lifespan=slow), start_s=0.5):
        pytest.fail("the server must not be reported as started")  # pragma: no cover
    assert "the API did not start in 0.5 s" in str(failed.value)


def test_a_working_app_is_served_and_stopped() -> None:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"pong": True}

    with running(app) as url:
        assert httpx.get(f"{url}/ping").json() == {"pong": True}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/ping")
