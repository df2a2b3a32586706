"""The worker's own re-keying (streaming.runtime.feature_forward) and its acknowledgements: the records
forwarded to a repartition topic, and a batch acknowledged only once processed (never after a failure).
Built, not run: no broker is contacted (the real-Kafka cases are in test_feature_worker.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from features.definitions import FeatureView, load_views
from features.events import MAX_ENTITY_CHARS, Event
from streaming.runtime import feature_worker
from streaming.runtime.feature_batches import Inbox
from streaming.runtime.feature_forward import SOURCE_HEADER, forwarded, rekey, repartition_topic, source
from streaming.settings import Settings

pytestmark = pytest.mark.unit

ZIP = FeatureView(name="zip", entity="zipcode")


@dataclass
class Message:
    """What the worker reads of Faust's consumer messages."""

    value: bytes | None
    offset: int
    topic: str = "events"
    partition: int = 2
    headers: Any = field(default_factory=list)
    timestamp: float | None = 1_704_067_200.123  # faust: seconds
    key: bytes | None = None


def event(zipcode: Any, i: int = 0) -> bytes:
    return Event(event_id=f"e{i}", entity=f"u{i}", ts=1, fields={"zipcode": zipcode}).to_json()


def test_a_forwarded_record_carries_its_own_position_and_keeps_the_producers_other_headers() -> None:
    forged = orjson.dumps(["events", 2, 10**9])
    m = Message(event(7), 41, headers=[("trace", b"abc"), (SOURCE_HEADER, forged), (b"rivulet-src", forged)])
    ((key, value, headers, timestamp),) = forwarded(ZIP, [m])
    assert key == b"7" and value == m.value and timestamp == 1_704_067_200_123
    assert headers == [("trace", b"abc"), (SOURCE_HEADER, b'["events",2,41]')]
    assert source(headers) == ("events", 2, 41)


def test_keys_of_events_without_a_usable_key_field_are_placeholders_that_fit_the_topic() -> None:
    long = "z" * (4 * MAX_ENTITY_CHARS + 1)
    values = [b"{", event(None), event(long)]
    keys = [k for k, *_ in forwarded(ZIP, [Message(v, i) for i, v in enumerate(values)])]
    assert keys[:2] == [b"\x00invalid", b"\x00missing"]
    assert keys[2].startswith(b"\x00long:") and len(keys[2]) < 100
    assert rekey(ZIP, None) == b"\x00invalid"


def test_the_repartition_topic_keeps_the_name_faust_gave_it() -> None:
    """Faust's group_by(name="by-zip") on the events topic of app "app": a deployment keeps its topic and
    its committed positions across the change from group_by."""
    assert repartition_topic("app", "ev", ZIP) == "app-ev-by-zip-repartition"


class _Consumer:
    def __init__(self) -> None:
        self.acked: list[Any] = []

    def ack(self, message: Any) -> bool:
        self.acked.append(message)
        return True


class _App:
    def __init__(self) -> None:
        self.consumer = _Consumer()


class _Failing(feature_worker._Worker):
    """The worker with its batch processing replaced: the second batch's commit fails (Redis down, say)."""

    def __init__(self, settings: Settings, app: Any) -> None:
        super().__init__(settings, app)
        self.processed: list[list[Any]] = []

    async def _compute(self, taken: Any, *args: Any) -> Any:
        _, batch = taken  # (the rebalances seen when it was taken, the batch)
        self.processed.append(list(batch))
        return feature_worker._Computed(list(batch), 0.0, 0.0)  # type: ignore[arg-type]

    async def _publish_and_commit(self, result: Any, store: Any) -> None:
        if result == ["d", "e"]:  # the second batch
            raise RuntimeError("redis down")


def test_a_batch_is_acknowledged_once_processed_and_never_when_its_processing_failed(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), features_batch_size=3)
    app = _App()
    worker = _Failing(settings, app)

    async def go() -> None:
        inbox = Inbox(100)
        await inbox.put(["a", "b", "c", "d", "e"], asyncio.Event())
        with pytest.raises(RuntimeError, match="redis down"):
            await worker.run(inbox, load_views(settings.features_module))

    asyncio.run(go())
    assert worker.processed == [["a", "b", "c"], ["d", "e"]]
    assert app.consumer.acked == ["a", "b", "c"]
