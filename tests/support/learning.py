"""What the learner, replay and verify tests share: topics, a featurised stream, a live learner run, and the
data River's evaluator is given."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from river.datasets import synth

from features.events import Event
from streaming.clients import registry_redis
from streaming.ingest.topics import TopicAdmin
from streaming.learning.keys import SigningKey
from streaming.learning.registry import RedisRegistry
from streaming.learning.state import ModelState
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.support.kafka_read import read_all
from tests.support.model_defs import LR
from tests.support.oracle import stream
from tests.support.workers import Worker, rivulet_process, wait_caught_up

# how long an in-process learner run waits without records before it stops: every record is in Kafka
# before it starts, so this covers its first fetch (was 3 s, 2 s in the serving tests; every learner test
# passed at 1 s on a loaded 2-core machine)
LEARNER_IDLE_S = 1.5

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


T0 = 1_700_000_000_000  # the first record's time in the learner streams below


def ts(i: int) -> int:
    """The time of record ``i``: one second apart from :data:`T0`."""
    return T0 + 1_000 * i


Labelled = list[tuple[dict[str, Any], bool]]


def delayed_stream(
    n: int, delay: int, *, function: int, seed: int
) -> tuple[Labelled, list[tuple[str, dict[str, Any]]]]:
    """``n`` features records of River's Agrawal stream (classification ``function``; ts strictly
    increasing) and their labels, each revealed at the time of the record ``delay`` later (the remaining
    ones after the last record, in order), as River's ``progressive_val_score(delay=delay)`` does. Returns
    (River's data, [(topic role, record)] in time order)."""
    data = [
        (x, bool(y))
        for x, y in itertools.islice(synth.Agrawal(classification_function=function, seed=seed), n)
    ]
    out: list[tuple[str, dict[str, Any]]] = []
    for i, (x, _) in enumerate(data):
        if i >= delay:
            out.append(("labels", {"event_id": f"ev{i - delay}", "label": data[i - delay][1], "ts": ts(i)}))
        event = {"event_id": f"ev{i}", "ts": ts(i), "label": None}
        out.append(("features", {"view": "all", "entity": f"u{i % 20}", "event": event, "features": x}))
    for k, j in enumerate(range(n - delay, n)):
        out.append(("labels", {"event_id": f"ev{j}", "label": data[j][1], "ts": ts(n - 1) + 1 + k}))
    return data, out


@pytest.fixture
def topics(settings: Settings, kafka_up: str, redis_client: Any) -> Iterator[Settings]:
    """:func:`learning_topics` as a fixture (Kafka and Redis must be up)."""
    with learning_topics(settings) as s:
        yield s


def learner_process(settings: Settings, models: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``rivulet learn run --models <models>`` in a child process, with the test signing key (and ``env``)."""
    return rivulet_process(
        settings,
        ["learn", "run", "--models", models],
        log,
        RIVULET_FEATURES_MODULE="tests.support.feature_defs",
        **KEY_ENV,
        **env,
    )


def registry(settings: Settings, prefix: str | None = None) -> RedisRegistry:
    """The test signer's registry, on the client Rivulet's learner uses (a cluster client on a cluster)."""
    return RedisRegistry(registry_redis(settings), prefix or settings.redis_prefix, signer=SIGNER)


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
    worker.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)
    return worker


def restored_without(state: ModelState, *keys: str) -> ModelState:
    """``state`` as a snapshot written before its fields ``keys`` existed would restore it."""
    old = state.__getstate__()
    for key in keys:
        del old[key]
    back = ModelState.__new__(ModelState)
    back.__setstate__(old)
    return back
