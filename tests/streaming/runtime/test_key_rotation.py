"""The key rotation drill on real Kafka and Redis with the real learner: learn and checkpoint with key A,
rotate the learner to key B with the ring {A, B}, restart. It restores from A's version and learns every
record once; history still verifies; new versions carry B's key id; a reader whose ring lacks A refuses A's
versions; a version signed by a key outside the ring is refused by readers, by the restarted learner and by
the restarted API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from serving.app import create_app
from streaming.clients import redis_client, registry_reader
from streaming.ingest.producer import Producer
from streaming.learning.keys import SigningKey
from streaming.learning.registry import RedisRegistry
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.support.learning import LEARNER_IDLE_S, events, featurise, learning_topics
from tests.support.model_defs import LR

pytestmark = pytest.mark.integration

A = SigningKey(bytes(range(10, 42)))
B = SigningKey(bytes(range(20, 52)))
C = SigningKey(bytes(range(30, 62)))  # not in any ring


@pytest.fixture
def topics(settings: Settings, kafka_up: str, redis_client: Any) -> Iterator[Settings]:
    with learning_topics(settings) as s:
        yield s.model_copy(update={"signing_key": None, "verify_keys": []})


def keyed(s: Settings, signing: SigningKey | None, *ring: SigningKey) -> Settings:
    return s.model_copy(
        update={
            "signing_key": SecretStr(signing.encoded) if signing else None,
            "verify_keys": [k.public.encoded for k in ring],
        }
    )


def learner(s: Settings) -> LearnerWorker:
    """The learner process as ``rivulet learn run`` builds it: its registry from its settings alone."""
    worker = LearnerWorker(s, [LR])
    worker.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)
    return worker


def test_rotation_drill(topics: Settings, tmp_path: Path) -> None:
    s = topics
    evs = events(2_400, seed=31)
    first, second = evs[:1_200], evs[1_200:]
    with Producer(s) as producer:
        producer.send_many(first)
    (tmp_path / "a").mkdir()
    featurise(s, tmp_path / "a")

    # learn and checkpoint with key A
    assert learner(keyed(s, A)).core.models["lr"].n_learned == len(first)
    with_a = registry_reader(keyed(s, None, A)).versions("lr")
    assert with_a and {v.header["key_id"] for v in with_a} == {A.key_id}
    last_a = with_a[0].version

    # rotate: the learner signs with B, its ring holds A; restart on the rest of the stream
    with Producer(s) as producer:
        producer.send_many(second)
    (tmp_path / "b").mkdir()
    featurise(s, tmp_path / "b")
    rotated = keyed(s, B, A)
    worker = learner(rotated)
    assert worker.rejected == []
    assert worker.core.models["lr"].n_learned == len(evs)  # restored from A's version: nothing twice

    # history still verifies, for a reader holding both public keys; new versions carry B's key id
    both = registry_reader(keyed(s, None, A, B))
    history = both.versions("lr")
    assert all(v.refused is None for v in history)
    new = [v for v in history if v.version > last_a]
    assert new and {v.header["key_id"] for v in new} == {B.key_id}
    assert {v.header["key_id"] for v in history if v.version <= last_a} == {A.key_id}
    assert min(new, key=lambda v: v.version).header["base"]["version"] == last_a
    assert both.load("lr", last_a).header["key_id"] == A.key_id
    assert both.load_latest("lr")[0].state.n_learned == len(evs)

    # a reader whose ring lacks A refuses A's versions and accepts B's
    only_b = registry_reader(keyed(s, None, B))
    for info in only_b.versions("lr"):
        if info.version <= last_a:
            assert info.refused and f"signed by key {A.key_id}, not in the keyring" in info.refused
        else:
            assert info.refused is None and info.header["key_id"] == B.key_id
    with pytest.raises(Exception, match=f"signed by key {A.key_id}"):
        only_b.load("lr", last_a)

    # a version signed by a key outside the ring, now the newest and current, is refused by readers ...
    newest_b = history[0].version
    state = both.load("lr", newest_b).state
    stranger = RedisRegistry(redis_client(s), s.redis_prefix, signer=C)
    forged = stranger.save("lr", state, {"offsets": {}, "n_learned": 10**6})
    opened, refused = both.load_latest("lr", current=True)
    assert opened.header["version"] == newest_b and opened.header["key_id"] == B.key_id
    assert len(refused) == 1 and f"version {forged}" in refused[0] and C.key_id in refused[0]
    # ... and by the learner on restart, which restores from B's newest version instead
    again = learner(rotated)
    assert again.core.models["lr"].n_learned == len(evs)
    assert len(again.rejected) == 1 and C.key_id in again.rejected[0]

    # the API restarted with the ring {A, B} serves B's newest version; one still holding only A serves
    # A's last (it refuses B's versions and the stranger's)
    for ring, served in (((A, B), newest_b), ((A,), last_a)):
        with TestClient(create_app(keyed(s, None, *ring)), base_url="http://localhost") as client:
            assert client.get("/readyz").status_code == 200
            loaded = client.app.state.services.models.get("lr")  # type: ignore[attr-defined]
            assert loaded is not None and loaded.version == served
