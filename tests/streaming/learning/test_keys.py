"""Ed25519 keys: their base64 forms, key ids, the keyring, the registry's signer and reader roles, the
keys ``rivulet up`` generates and hands out (the private one to the learner alone), and ``rivulet keys``."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr
from typer.testing import CliRunner

from streaming.cli import app
from streaming.clients import keyring, signing_key
from streaming.errors import InvalidKey, MissingKey
from streaming.learning.keys import (
    Keyring,
    SigningKey,
    generate,
    parse_keyring,
    parse_signing_key,
    parse_verify_key,
)
from streaming.learning.registry import MemoryRegistry
from streaming.runtime.stack import Stack
from streaming.settings import Settings

pytestmark = pytest.mark.unit

SEED = bytes(range(32))


def test_a_key_matches_the_reference_implementation() -> None:
    """The seed's public key and signatures are those of cryptography's Ed25519 itself (an oracle)."""
    reference = Ed25519PrivateKey.from_private_bytes(SEED)
    raw = reference.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key = parse_signing_key(base64.b64encode(SEED).decode())
    assert key.public.raw == raw
    assert key.key_id == hashlib.sha256(raw).hexdigest()[:16]
    assert key.sign(b"data") == reference.sign(b"data")  # Ed25519 is deterministic
    assert parse_verify_key(base64.b64encode(raw).decode()).verify(key.sign(b"data"), b"data")
    assert not key.public.verify(key.sign(b"data"), b"other data")
    assert not key.public.verify(generate().sign(b"data"), b"data")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not base64!", "is not valid base64"),
        (base64.b64encode(b"short").decode(), "is 5 bytes once decoded; an Ed25519 key is 32"),
        (base64.b64encode(bytes(64)).decode(), "is 64 bytes once decoded"),
        ("", "is 0 bytes once decoded"),
    ],
)
def test_malformed_keys_are_refused_clearly(text: str, problem: str) -> None:
    with pytest.raises(InvalidKey, match=f"RIVULET_SIGNING_KEY {re.escape(problem)}"):
        parse_signing_key(text)
    with pytest.raises(InvalidKey, match=f"RIVULET_VERIFY_KEYS entry 2 {re.escape(problem)}"):
        parse_keyring([generate().public.encoded, text])


def test_url_safe_base64_and_whitespace_are_accepted() -> None:
    key = SigningKey(bytes([251] * 32))  # its base64 has '+' and '/'
    assert "+" in key.encoded or "/" in key.encoded
    urlsafe = base64.urlsafe_b64encode(key.seed).decode()
    assert parse_signing_key(f"  {urlsafe}\n") == key


def test_the_keyring_holds_keys_by_id() -> None:
    a, b = generate(), generate()
    ring = Keyring.of(a.public)
    assert a.key_id in ring and b.key_id not in ring and len(ring) == 1
    bigger = ring.with_key(b.public).with_key(b.public)
    assert len(bigger) == 2 and bigger.get(b.key_id) == b.public and len(ring) == 1  # immutable
    assert bigger.ids == sorted([a.key_id, b.key_id])


def test_a_signer_always_reads_what_it_wrote_and_a_reader_cannot_write() -> None:
    signer, other = generate(), generate()
    reg = MemoryRegistry(signer=signer, keyring=Keyring.of(other.public))
    assert signer.key_id in reg.keyring and other.key_id in reg.keyring
    version = reg.save("m", {"w": 1}, {})
    assert reg.load("m", version).header["key_id"] == signer.key_id
    with pytest.raises(MissingKey, match="RIVULET_VERIFY_KEYS"):
        MemoryRegistry()  # no key at all
    with pytest.raises(MissingKey, match="RIVULET_SIGNING_KEY"):
        MemoryRegistry(keyring=Keyring.of(signer.public)).save("m", {"w": 1}, {})


def test_settings_keys_and_their_errors() -> None:
    a, b = generate(), generate()
    s = Settings(signing_key=SecretStr(a.encoded), verify_keys=[b.public.encoded])
    assert signing_key(s) == a
    assert set(keyring(s).ids) == {a.key_id, b.key_id}  # the signer's own public key is in its ring
    with pytest.raises(MissingKey, match="RIVULET_SIGNING_KEY is not set"):
        signing_key(Settings(signing_key=None))
    with pytest.raises(MissingKey, match="RIVULET_VERIFY_KEYS is not set"):
        keyring(Settings(signing_key=None, verify_keys=[]))


# ---------------------------------------------------------------- rivulet up and the CLI


def _programs(conf: str) -> dict[str, str]:
    return {part.split("]", 1)[0]: part for part in conf.split("[program:")[1:]}


def test_rivulet_up_generates_keeps_and_hands_out_the_keys(tmp_path: Path) -> None:
    given = generate()
    settings = Settings(data_dir=str(tmp_path), signing_key=None, verify_keys=[given.public.encoded])
    stack = Stack(settings)
    stack.write_conf()
    kept = tmp_path / "stack" / "signing-key"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    signer = parse_signing_key(kept.read_text())
    programs = _programs((tmp_path / "stack" / "supervisord.conf").read_text())
    assert set(programs) == {"features", "learner", "api"}
    for name, section in programs.items():
        ring = re.search(r'RIVULET_VERIFY_KEYS="([^"]*)"', section)
        assert ring and set(parse_keyring(ring.group(1).split(",")).ids) == {signer.key_id, given.key_id}
        assert ("RIVULET_SIGNING_KEY" in section) == (name == "learner"), name  # the learner alone
    assert f'RIVULET_SIGNING_KEY="{signer.encoded}"' in programs["learner"]
    # the same key on the next rivulet up; the public keys kept for the CLI
    Stack(settings).write_conf()
    assert parse_signing_key(kept.read_text()) == signer
    kept_ring = (tmp_path / "stack" / "verify-keys").read_text().strip().split(",")
    assert set(parse_keyring(kept_ring).ids) == {signer.key_id, given.key_id}


def test_a_configured_signing_key_is_used_and_not_written(tmp_path: Path) -> None:
    mine = generate()
    Stack(Settings(data_dir=str(tmp_path), signing_key=SecretStr(mine.encoded), verify_keys=[])).write_conf()
    assert not (tmp_path / "stack" / "signing-key").exists()
    conf = (tmp_path / "stack" / "supervisord.conf").read_text()
    assert f'RIVULET_SIGNING_KEY="{mine.encoded}"' in _programs(conf)["learner"]


def test_the_cli_finds_the_stack_keys_and_only_the_learner_its_private_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streaming.cli.common import load_settings

    for var in ("RIVULET_SIGNING_KEY", "RIVULET_VERIFY_KEYS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RIVULET_DATA_DIR", str(tmp_path))
    Stack(Settings()).write_conf()
    signer = parse_signing_key((tmp_path / "stack" / "signing-key").read_text())
    reader = load_settings()
    assert reader.signing_key is None and keyring(reader).ids == [signer.key_id]
    learner = load_settings(signing=True)
    assert learner.signing_key is not None and signing_key(learner) == signer
    # configured keys win over the kept ones
    other = generate()
    monkeypatch.setenv("RIVULET_VERIFY_KEYS", other.public.encoded)
    assert keyring(load_settings()).ids == [other.key_id]


def test_rivulet_keys_generate_prints_a_matching_pair(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["keys", "generate"]).output
    found = dict(line.split("=", 1) for line in out.splitlines() if not line.startswith("#"))
    signer = parse_signing_key(found["RIVULET_SIGNING_KEY"])
    assert parse_verify_key(found["RIVULET_VERIFY_KEYS"]) == signer.public
    assert f"# key id {signer.key_id}" in out
    exported = CliRunner().invoke(app, ["keys", "generate", "--export"]).output
    assert exported.count("export RIVULET_") == 2
    shown = CliRunner().invoke(
        app,
        ["keys", "show"],
        env={
            "RIVULET_SIGNING_KEY": signer.encoded,
            "RIVULET_VERIFY_KEYS": "",
            "RIVULET_DATA_DIR": str(tmp_path),
        },
    )
    assert shown.exit_code == 0 and f"signs with: {signer.key_id}" in shown.output
    assert signer.encoded not in shown.output  # never the private key
    bare = CliRunner().invoke(
        app,
        ["keys", "show"],
        env={"RIVULET_SIGNING_KEY": "", "RIVULET_VERIFY_KEYS": "", "RIVULET_DATA_DIR": str(tmp_path)},
    )
    assert bare.exit_code == 1 and "RIVULET_VERIFY_KEYS is not set" in bare.output


def test_a_private_key_file_is_never_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        Stack(Settings(data_dir=str(tmp_path), signing_key=None, verify_keys=[])).write_conf()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "stack" / "signing-key").stat().st_mode) == 0o600


def test_the_api_and_the_learner_refuse_to_start_without_their_keys(tmp_path: Path) -> None:
    from streaming.runtime.learner import LearnerWorker
    from tests.support.model_defs import LR

    env = {
        "RIVULET_SIGNING_KEY": "",
        "RIVULET_VERIFY_KEYS": "",
        "RIVULET_DATA_DIR": str(tmp_path),
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs:DIRECT",
    }
    served = CliRunner().invoke(app, ["serve", "--port", "1"], env=env)
    assert served.exit_code == 1 and "RIVULET_VERIFY_KEYS is not set" in served.output
    learned = CliRunner().invoke(app, ["learn", "run", "--models", "tests.support.model_defs"], env=env)
    assert learned.exit_code == 1 and "RIVULET_SIGNING_KEY is not set" in learned.output
    bare = Settings(signing_key=None, verify_keys=[], data_dir=str(tmp_path))
    with pytest.raises(MissingKey, match="RIVULET_SIGNING_KEY"):
        LearnerWorker(bare, [LR])
    reader = MemoryRegistry(keyring=Keyring.of(generate().public))
    with pytest.raises(MissingKey, match="RIVULET_SIGNING_KEY"):
        LearnerWorker(bare, [LR], registry=reader)  # a registry that cannot sign is no learner's


def test_rivulet_keys_generate_api_keys_prints_one_key_per_scope_and_prometheus_the_read_one() -> None:
    """``(umask 077; rivulet keys generate --api-keys >> .env)`` sets up Compose's API: the lines are
    settings whose API serves each scope to its own key only, and Prometheus scrapes with the read key."""
    out = CliRunner().invoke(app, ["keys", "generate", "--api-keys"]).output
    found = dict(line.split("=", 1) for line in out.splitlines() if not line.startswith("#"))
    scopes = ("SCORING", "INGEST", "READ", "ADMIN")
    assert set(found) == {
        "RIVULET_SIGNING_KEY",
        "RIVULET_VERIFY_KEYS",
        "RIVULET_PROMETHEUS_API_KEY",
        *(f"RIVULET_{s}_API_KEYS" for s in scopes),
    }
    keys = [found[f"RIVULET_{s}_API_KEYS"] for s in scopes]
    assert len(set(keys)) == 4 and all(len(k) >= 32 and "," not in k for k in keys)
    assert found["RIVULET_PROMETHEUS_API_KEY"] == found["RIVULET_READ_API_KEYS"]
    again = CliRunner().invoke(app, ["keys", "generate", "--api-keys"]).output
    assert found["RIVULET_SCORING_API_KEYS"] not in again  # random, not derived
    settings = Settings(
        **{k.removeprefix("RIVULET_").lower(): v for k, v in found.items() if "API_KEYS" in k}
    )
    from serving.auth import KeyRing, Scope

    ring = KeyRing.from_settings(settings)
    for scope, needed in zip(scopes, (Scope.SCORE, Scope.INGEST, Scope.READ, Scope.ADMIN), strict=True):
        granted = ring.scopes_of(found[f"RIVULET_{scope}_API_KEYS"].encode())
        assert needed in granted and (Scope.ADMIN in granted) == (needed is Scope.ADMIN), (scope, granted)
    assert CliRunner().invoke(app, ["keys", "generate"]).output.count("API_KEY") == 0  # only when asked
