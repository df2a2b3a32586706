"""The feature worker's Faust app (built, not run: no broker is contacted)."""

from __future__ import annotations

from pathlib import Path

import mode
import pytest

from features.definitions import load_views
from streaming.runtime.feature_worker import create_app
from streaming.settings import Settings

pytestmark = pytest.mark.unit


def test_an_agent_crash_ends_the_process_for_its_supervisor(tmp_path: Path) -> None:
    """Faust's default restarts a crashed agent in place; one that crashed in its batching after a
    rebalance came back consuming nothing while the process looked alive. The worker exits instead, and
    supervisord or Compose restarts it (a restart double counts nothing:
    tests/streaming/runtime/test_feature_worker.py)."""
    settings = Settings(data_dir=str(tmp_path))
    app = create_app(settings, load_views(settings.features_module))
    assert app.conf.agent_supervisor is mode.CrashingSupervisor


def test_a_feature_record_that_cannot_be_serialised_becomes_a_dead_letter_not_a_failed_batch() -> None:
    from features.events import Event
    from features.pipeline import BatchResult, FeatureRecord, RawRecord
    from streaming.runtime.feature_worker import _feature_records

    event = Event(event_id="e1", entity="u", ts=1)
    source = RawRecord(event.to_json(), "events", 2, 41, b"u")
    result = BatchResult(
        records=[
            FeatureRecord("v", "u", event, {"x": 1.0}, source),
            FeatureRecord("v", "u", event, {"x": object()}, source),  # say, a future feature function's slip
        ]
    )
    out = _feature_records(result)
    assert [value for _, value in out] == [result.records[0].to_json()] and len(result.records) == 1
    (dead,) = result.dead_letters
    assert (dead.reason, dead.stage, dead.record, dead.view) == ("error", "features", source, "v")
    assert "not serialisable" in dead.error


def test_the_worker_reads_its_topics_in_bulk_through_inboxes(tmp_path: Path) -> None:
    """Every topic the worker's agents read (the events topic, each re-keyed view's repartition topic) has an
    inbox, and the app's consumer is the one that fills them (streaming.runtime.faust_bulk): no record of
    them goes through Faust's per-message stream."""
    import asyncio

    from features.examples import VIEWS
    from streaming.runtime import faust_bulk

    settings = Settings(data_dir=str(tmp_path))

    async def made() -> tuple[type, set[str]]:
        app = create_app(settings, VIEWS, app_id="app")
        return type(app.consumer), set(app.inboxes)  # type: ignore[attr-defined]

    consumer, topics = asyncio.run(made())
    assert issubclass(consumer, faust_bulk.Consumer)
    assert topics == {settings.topics.events, f"app-{settings.topics.events}-by-site-repartition"}
