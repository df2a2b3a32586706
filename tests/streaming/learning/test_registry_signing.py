"""Signed snapshots in the real registry and API (Redis): the empty-secret remote code execution, snapshots
substituted under another key, unknown signers, listings that read headers only, the migration of HMAC
snapshots, and ``rivulet serve`` finding the keys ``rivulet up`` kept."""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from river import linear_model, metrics
from typer.testing import CliRunner

from serving.app import create_app
from streaming import clients
from streaming.cli import app as cli_app
from streaming.errors import MissingKey
from streaming.learning.keys import Keyring, SigningKey
from streaming.learning.registry import NoValidVersion, RedisRegistry
from streaming.learning.snapshot import SnapshotRejected
from streaming.learning.spec import ModelSpec
from streaming.learning.state import new_state
from streaming.settings import Settings
from tests.support.api_env import free_port

pytestmark = pytest.mark.integration

LEARNER = SigningKey(bytes(range(50, 82)))
STRANGER = SigningKey(bytes(range(90, 122)))
SPEC = ModelSpec("m", "binary", "zip", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))


class Acts:
    """Unpickling this makes a directory: the proof that a snapshot was deserialised."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.path,))


def legacy_seal(state: Any, header: dict[str, Any], secret: bytes) -> bytes:
    """Format 1 as the HMAC code wrote it (an independent copy)."""
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    full = {**header, "payload_sha256": hashlib.sha256(payload).hexdigest(), "payload_bytes": len(payload)}
    head = orjson.dumps(full, option=orjson.OPT_SORT_KEYS)
    signature = hmac.new(secret, head + payload, hashlib.sha256).digest()
    return b"RVLT1\n" + len(head).to_bytes(4, "big") + head + signature + payload


def put_legacy(client: redis.Redis, prefix: str, name: str, version: int, blob: bytes) -> None:
    """A version as the HMAC registry stored it (no separate header)."""
    client.set(f"{prefix}model:{{{name}}}:v:{version}", blob)
    client.zadd(f"{prefix}model:{{{name}}}:versions", {str(version): version})
    client.set(f"{prefix}model:{{{name}}}:current", version)
    client.set(f"{prefix}model:{{{name}}}:seq", version)
    client.sadd(f"{prefix}models", name)


@pytest.fixture
def s(settings: Settings, redis_client: redis.Redis) -> Settings:
    return settings.model_copy(
        update={"features_module": "tests.support.feature_defs", "verify_keys": [LEARNER.public.encoded]}
    )


def writer(s: Settings, signer: SigningKey = LEARNER) -> RedisRegistry:
    return RedisRegistry(clients.redis_client(s), s.redis_prefix, signer=signer)


def reader(s: Settings, *keys: SigningKey) -> RedisRegistry:
    ring = Keyring(k.public for k in keys)
    return RedisRegistry(clients.redis_client(s), s.redis_prefix, keyring=ring)


def api(s: Settings) -> TestClient:
    return TestClient(create_app(s), base_url="http://localhost")


# ---------------------------------------------------------------- the empty-secret RCE


def test_nothing_that_loads_snapshots_starts_without_keys(s: Settings) -> None:
    bare = s.model_copy(update={"verify_keys": [], "signing_key": None})
    with pytest.raises(MissingKey, match="RIVULET_VERIFY_KEYS is not set"):
        create_app(bare)  # at creation, not with a 500 on the first load
    with pytest.raises(MissingKey, match="RIVULET_VERIFY_KEYS"):
        clients.registry_reader(bare)
    with pytest.raises(MissingKey, match="RIVULET_SIGNING_KEY is not set"):
        clients.registry_writer(bare)
    with pytest.raises(MissingKey, match="RIVULET_SIGNING_KEY"):
        reader(s, LEARNER).save("m", {"w": 1}, {})  # a reader cannot write a version


def test_a_pickle_signed_with_the_empty_secret_is_not_run_by_the_api(
    s: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "acted"
    blob = legacy_seal(Acts(str(marker)), {"model": "evil", "version": 1, "view": "zip"}, b"")
    put_legacy(redis_client, s.redis_prefix, "evil", 1, blob)
    with api(s) as client:
        assert client.get("/readyz").status_code == 503  # nothing loaded
        assert not marker.exists()
    with pytest.raises(SnapshotRejected, match="rivulet models resign"):
        clients.registry_reader(s).load("evil", 1)
    assert not marker.exists()

    # the control: the same pickle signed by the learner's key is opened by the API, and it acts (then it
    # is refused as no model state: the API serves a ModelState only)
    writer(s).save("evil", Acts(str(marker)), {"view": "zip"})
    with api(s) as client:
        assert client.get("/readyz").status_code == 503
    assert marker.is_dir()


# ---------------------------------------------------------------- snapshots bound to their key


def test_a_snapshot_copied_under_another_version_or_model_is_refused(
    s: Settings, redis_client: redis.Redis
) -> None:
    reg = writer(s)
    v1 = reg.save("m", {"w": 1}, {"offsets": {}})
    v2 = reg.save("m", {"w": 2}, {"offsets": {}})
    reg.save("other", {"w": 99}, {"offsets": {}})
    key = f"{s.redis_prefix}model:{{m}}:"
    other = f"{s.redis_prefix}model:{{other}}:"
    for src in (f"{key}v:{v1}", f"{other}v:1"):  # version 1's bytes, then another model's
        blob = redis_client.get(src)
        assert blob is not None
        redis_client.set(f"{key}v:{v2}", blob)
        redis_client.set(f"{key}h:{v2}", redis_client.get(src.replace(":v:", ":h:")))  # type: ignore[arg-type]
        with pytest.raises(SnapshotRejected, match=f"but it was read as model 'm' version {v2}"):
            reg.load("m", v2)
        opened, rejected = reg.load_latest("m")
        assert opened.state == {"w": 1} and len(rejected) == 1
        listed = {i.version: i for i in reg.versions("m")}
        assert listed[v2].refused and "read as model 'm'" in listed[v2].refused and listed[v2].header == {}
        assert listed[v1].refused is None and listed[v1].header["version"] == v1
    with pytest.raises(SnapshotRejected):
        reg.set_current("m", v2)  # a misplaced version cannot be promoted


def test_a_signer_not_in_the_ring_is_refused(s: Settings) -> None:
    writer(s, STRANGER).save("m", {"w": 1}, {})
    with pytest.raises(SnapshotRejected, match=f"signed by key {STRANGER.key_id}, not in the keyring"):
        reader(s, LEARNER).load("m", 1)
    with pytest.raises(NoValidVersion, match=STRANGER.key_id):
        reader(s, LEARNER).load_latest("m")
    (info,) = reader(s, LEARNER).versions("m")
    assert info.refused is not None and STRANGER.key_id in info.refused
    assert reader(s, LEARNER, STRANGER).load("m", 1).state == {"w": 1}  # once in the ring, accepted


# ---------------------------------------------------------------- listings read headers only


def test_listing_reads_the_stored_headers_not_the_snapshots(s: Settings, redis_client: redis.Redis) -> None:
    reg = writer(s)
    big = {"w": os.urandom(1_000_000)}  # a 1 MB model
    for n in range(4):
        reg.save("m", big, {"n_learned": n, "offsets": {"t": {"0": n}}}, keep=3)
    key = f"{s.redis_prefix}model:{{m}}:"
    assert redis_client.exists(f"{key}v:1", f"{key}h:1") == 0  # trimmed together
    assert all(redis_client.strlen(f"{key}h:{v}") < 2_000 for v in (2, 3, 4))
    assert all(redis_client.strlen(f"{key}v:{v}") > 1_000_000 for v in (2, 3, 4))
    # with the snapshots gone, the listing is whole: it never read them
    redis_client.delete(*[f"{key}v:{v}" for v in (2, 3, 4)])
    listed = reader(s, LEARNER).versions("m")
    assert [(i.version, i.current, i.refused) for i in listed] == [
        (4, True, None),
        (3, False, None),
        (2, False, None),
    ]
    assert [i.header["n_learned"] for i in listed] == [3, 2, 1]
    assert {i.header["key_id"] for i in listed} == {LEARNER.key_id}
    # a header altered in place does not verify
    head = bytearray(redis_client.get(f"{key}h:4"))  # type: ignore[arg-type]
    head[head.index(b'"n_learned":3') + 12] = ord("9")
    redis_client.set(f"{key}h:4", bytes(head))
    assert "bad signature" in (reader(s, LEARNER).versions("m")[0].refused or "")


# ---------------------------------------------------------------- migration of HMAC snapshots


def test_rivulet_models_resign_migrates_hmac_snapshots(s: Settings, redis_client: redis.Redis) -> None:
    old_secret = "the-old-hmac-secret-of-32-bytes!"
    for v in (1, 2):
        blob = legacy_seal({"w": v}, {"model": "m", "version": v, "n_learned": 10 * v}, old_secret.encode())
        put_legacy(redis_client, s.redis_prefix, "m", v, blob)
    with pytest.raises(NoValidVersion, match="rivulet models resign"):
        reader(s, LEARNER).load_latest("m")
    env = {
        "RIVULET_REDIS_PREFIX": s.redis_prefix,
        "RIVULET_SIGNING_KEY": LEARNER.encoded,
        "RIVULET_DATA_DIR": "/nonexistent",
    }
    wrong = CliRunner().invoke(cli_app, ["models", "resign"], env={**env, "RIVULET_SIGNING_SECRET": "nope"})
    assert wrong.exit_code == 1 and "bad HMAC signature" in wrong.output
    with pytest.raises(NoValidVersion):
        reader(s, LEARNER).load_latest("m")  # nothing migrated with the wrong secret
    done = CliRunner().invoke(
        cli_app, ["models", "resign"], env={**env, "RIVULET_SIGNING_SECRET": old_secret}
    )
    assert done.exit_code == 0 and f"re-signed 2 version(s) with key {LEARNER.key_id}" in done.output, (
        done.output
    )
    reg = reader(s, LEARNER)
    assert [reg.load("m", v).state for v in (1, 2)] == [{"w": 1}, {"w": 2}]
    assert [i.header["n_learned"] for i in reg.versions("m")] == [20, 10]  # headers stored apart too


def test_the_learner_does_not_restart_afresh_over_versions_it_cannot_verify(
    s: Settings, redis_client: redis.Redis
) -> None:
    """A new key without the old one in the ring (or unmigrated HMAC snapshots) once restarted every model
    from zero; now the learner refuses to start and says what to do."""
    put_legacy(
        redis_client, s.redis_prefix, "lr", 1, legacy_seal({"w": 1}, {"model": "lr", "version": 1}, b"s")
    )
    (info,) = reader(s, LEARNER).versions("lr")
    assert info.refused and "rivulet models resign" in info.refused  # a 6-byte read tells the format
    env = {
        "RIVULET_REDIS_PREFIX": s.redis_prefix,
        "RIVULET_TOPIC_PREFIX": s.topic_prefix,
        "RIVULET_SIGNING_KEY": LEARNER.encoded,
        "RIVULET_DATA_DIR": "/nonexistent",
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs:DIRECT",
    }
    run = ["learn", "run", "--models", "tests.support.model_defs", "--idle-exit", "1"]
    refused = CliRunner().invoke(cli_app, run, env=env)
    assert refused.exit_code == 1 and "model 'lr' has 1 version(s) and none verifies" in refused.output
    assert "rivulet models resign" in refused.output
    writer(s, STRANGER).save("lr", {"w": 2}, {})  # and a version by a key outside the ring
    refused = CliRunner().invoke(cli_app, run, env=env)
    assert refused.exit_code == 1 and "2 version(s) and none verifies" in refused.output
    assert redis_client.zcard(f"{s.redis_prefix}model:{{lr}}:versions") == 2  # nothing written


# ---------------------------------------------------------------- rivulet serve with the stack's keys


@pytest.mark.parametrize("workers", [1, 2])
def test_rivulet_serve_uses_the_keys_rivulet_up_kept(s: Settings, tmp_path: Path, workers: int) -> None:
    writer(s).save("m", new_state(SPEC, "m"), {"view": "zip"})  # the API loads a model state only
    stack = tmp_path / "data" / "stack"
    stack.mkdir(parents=True)
    (stack / "verify-keys").write_text(LEARNER.public.encoded + "\n")  # as rivulet up keeps it
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RIVULET_")},
        "RIVULET_REDIS_PREFIX": s.redis_prefix,
        "RIVULET_TOPIC_PREFIX": s.topic_prefix,
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs",
        "RIVULET_DATA_DIR": str(tmp_path / "data"),
    }
    cmd = [sys.executable, "-m", "streaming.cli", "serve", "--port", str(port), "--workers", str(workers)]
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        status, deadline = 0, time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
            except httpx.HTTPError:
                status = 0  # not listening yet
            if status == 200:
                break
            time.sleep(0.3)  # every round: a 503 (not ready yet) must not spin
        assert status == 200, (tmp_path / "serve.log").read_text()[-3000:]  # the version verified
    finally:
        proc.terminate()
        proc.wait(30)
