"""What the learner, replay and verify tests share: topics, a featurised stream, a live learner run, and the
data River's evaluator is given."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from pydantic import SecretStr

from features.events import Event
from streaming.clients import redis_client
from streaming.ingest.topics import TopicAdmin
from streaming.learning.keys import SigningKey
from streaming.learning.registry import RedisRegistry
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.support.kafka_read import read_all
from tests.support.model_defs import LR
from tests.support.oracle import stream
from tests.support.workers import Worker, wait_caught_up

SIGNER = SigningKey(bytes(range(32)))  # the learner tests' signing key (fixed: tests restart processes)
KEY_ENV = {"RIVULET_SIGNING_KEY": SIGNER.encoded, "RIVULET_VERIFY_KEYS": SIGNER.public.encoded}


@contextmanager
def learning_topics(settings: Settings) -> Iterator[Settings]:
    """Rivulet's topics under the settings' prefix (deleted afterwards), and the signing key."""
    s = settings.model_copy(
        update={"signing_key": SecretStr(SIGNER.encoded), "verify_keys": [SIGNER.public.encoded]}
    )
    with TopicAdmin(s) as admin:
        admin.create()
        try:
            yield s
        finally:
            admin.delete([t for t in admin.list_topics(all_topics=True) if s.topic_prefix in t])


def registry(settings: Settings, prefix: str | None = None) -> RedisRegistry:
    return RedisRegistry(redis_client(settings), prefix or settings.redis_prefix, signer=SIGNER)


def events(n: int, seed: int) -> list[Event]:
    return stream(n, entities=40, seed=seed, step_ms=1_000)  # strictly increasing event times


def featurise(settings: Settings, tmp: Path) -> None:
    worker = Worker(settings, "tests.support.feature_defs:DIRECT", tmp / "features.log")
    try:
        wait_caught_up(settings, [worker])
    finally:
        worker.stop()


def river_data(settings: Settings, by_id: dict[str, Event]) -> list[tuple[dict, bool]]:
    """(x, y) in event order, from the features topic: the data the learner saw, for River's evaluator."""
    recs = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap, settings.topics.features)]
    recs = sorted((r for r in recs if r["view"] == "all"), key=lambda r: r["event"]["ts"])
    return [
        (
            {k: v for k, v in r["features"].items() if v is not None and not isinstance(v, bool | str)},
            by_id[r["event"]["event_id"]].label,
        )
        for r in recs
    ]


def learn(settings: Settings, prefix: str | None = None) -> LearnerWorker:
    s = settings.model_copy(update={"redis_prefix": prefix}) if prefix else settings
    worker = LearnerWorker(s, [LR], registry=registry(settings, prefix))
    worker.run(max_idle_s=3.0, install_signals=False)
    return worker
