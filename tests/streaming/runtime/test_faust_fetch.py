"""The feature worker's Kafka consumer waits the setting's fetch wait, not Faust's hardcoded 1.5 s (a fetch
of Faust's idle leader partition alone held the broker's one in-flight fetch that long: a standing 1.4 s
delay at 2,000 events/s, see streaming/runtime/faust_fetch.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from features.examples import customer
from streaming.runtime.feature_worker import create_app
from streaming.settings import Settings

pytestmark = pytest.mark.unit


def made_consumer(settings: Settings, attribute: str) -> Any:
    """An attribute of the aiokafka consumer the worker's app would start (made here, never started)."""

    async def made() -> Any:
        app = create_app(settings, [customer], app_id="rivulet-test-consumer")
        thread = app.consumer._thread  # type: ignore[attr-defined]
        consumer = thread._create_consumer(loop=asyncio.get_running_loop())
        try:
            return getattr(consumer, attribute)
        finally:
            await consumer.stop()
            thread.thread_loop.close()  # made with the thread, never run: the thread was not started

    return asyncio.run(made())


def _consumer_fetch_wait(settings: Settings) -> int:
    return int(made_consumer(settings, "_fetch_max_wait_ms"))


@pytest.mark.parametrize("wait_ms", [20, 7])
def test_the_worker_consumer_waits_the_settings_fetch_wait(tmp_path: Path, wait_ms: int) -> None:
    settings = Settings(data_dir=str(tmp_path), features_fetch_wait_ms=wait_ms)
    assert _consumer_fetch_wait(settings) == wait_ms  # Faust's own consumer: 1500 whatever the setting


def test_the_default_fetch_wait_is_short() -> None:
    assert Settings().features_fetch_wait_ms <= 100
