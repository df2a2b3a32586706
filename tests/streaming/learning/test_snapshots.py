"""Signed snapshots: tampered, foreign, misplaced, legacy or unsigned bytes are refused, never unpickled."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from pathlib import Path
from typing import Any

import orjson
import pytest

from streaming.learning.keys import Keyring, SigningKey
from streaming.learning.snapshot import (
    SnapshotRejected,
    header_part,
    open_header,
    open_legacy,
    open_snapshot,
    read_header,
    reseal,
    seal,
)

pytestmark = pytest.mark.unit

LEARNER = SigningKey(bytes(range(32)))
ATTACKER = SigningKey(bytes(range(1, 33)))
RING = Keyring.of(LEARNER.public)


class Evil:
    """Unpickling this creates a file: the proof that a snapshot was deserialised."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def legacy_seal(state: Any, header: dict[str, Any], secret: bytes) -> bytes:
    """Format 1 as the HMAC code wrote it (an independent copy: the code under test no longer writes it)."""
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    full = {**header, "payload_sha256": hashlib.sha256(payload).hexdigest(), "payload_bytes": len(payload)}
    head = orjson.dumps(full, option=orjson.OPT_SORT_KEYS)
    signature = hmac.new(secret, head + payload, hashlib.sha256).digest()
    return b"RVLT1\n" + len(head).to_bytes(4, "big") + head + signature + payload


def test_round_trip_keeps_state_and_header() -> None:
    blob = seal({"w": [1.5, 2.0]}, {"model": "m", "version": 7, "offsets": {"t": {"0": 5}}}, LEARNER)
    opened = open_snapshot(blob, RING, model="m", version=7)
    assert opened.state == {"w": [1.5, 2.0]}
    assert opened.header["offsets"] == {"t": {"0": 5}} and opened.header["version"] == 7
    assert opened.header["key_id"] == LEARNER.public.key_id
    assert {"river", "python", "payload_sha256", "key_id", "model"} <= set(read_header(blob))


@pytest.mark.parametrize("where", ["payload", "header", "signature"])
def test_a_flipped_bit_is_refused(where: str) -> None:
    blob = bytearray(seal({"w": 1}, {"model": "m", "version": 1}, LEARNER))
    index = {"payload": len(blob) - 3, "header": 14, "signature": blob.index(b"}") + 5}[where]
    blob[index] ^= 0x01
    with pytest.raises(SnapshotRejected):
        open_snapshot(bytes(blob), RING, model="m", version=1)


def test_malicious_pickles_are_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = Evil(str(marker))
    header = {"model": "m", "version": 1}
    # signed by a key that is not in the ring
    with pytest.raises(SnapshotRejected, match=f"signed by key {ATTACKER.key_id}, not in the keyring"):
        open_snapshot(seal(evil, header, ATTACKER), RING, model="m", version=1)
    # signed by the attacker, but claiming to be the learner's key
    forged = seal(evil, header, ATTACKER).replace(ATTACKER.key_id.encode(), LEARNER.key_id.encode())
    with pytest.raises(SnapshotRejected, match="bad signature"):
        open_snapshot(forged, RING, model="m", version=1)
    # a bare pickle, no signature at all
    with pytest.raises(SnapshotRejected, match="not a Rivulet snapshot"):
        open_snapshot(pickle.dumps(evil), RING, model="m", version=1)
    # a genuine header and signature with the payload swapped
    genuine = seal({"w": 1}, header, LEARNER)
    payload = pickle.dumps({"w": 1}, protocol=pickle.HIGHEST_PROTOCOL)
    swapped = genuine[: -len(payload)] + pickle.dumps(evil, protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(SnapshotRejected, match="payload hash mismatch"):
        open_snapshot(swapped, RING, model="m", version=1)
    # format 1 signed with the empty key (what the API verified with when the secret was unset)
    with pytest.raises(SnapshotRejected, match="rivulet models resign"):
        open_snapshot(legacy_seal(evil, header, b""), RING, model="m", version=1)
    assert not marker.exists()


def test_the_malicious_pickle_does_act_when_trusted(tmp_path: Path) -> None:
    # the control for the test above: signed with the right key it is unpickled, and the file appears
    marker = tmp_path / "created"
    blob = seal(Evil(str(marker)), {"model": "m", "version": 1}, LEARNER)
    open_snapshot(blob, RING, model="m", version=1).state.close()
    assert marker.exists()


def test_a_snapshot_is_bound_to_its_model_and_version() -> None:
    v1 = seal({"w": 1}, {"model": "m", "version": 1}, LEARNER)
    other = seal({"w": 2}, {"model": "other", "version": 2}, LEARNER)
    assert open_snapshot(v1, RING, model="m", version=1).state == {"w": 1}
    with pytest.raises(
        SnapshotRejected, match="names model 'm' version 1, but it was read as model 'm' version 2"
    ):
        open_snapshot(v1, RING, model="m", version=2)  # version 1's bytes copied under version 2
    with pytest.raises(SnapshotRejected, match="names model 'other' version 2, but it was read as model 'm'"):
        open_snapshot(other, RING, model="m", version=2)  # another model's blob under this model's key


def test_the_signed_header_verifies_alone_and_binds_the_payload() -> None:
    blob = seal({"w": 1}, {"model": "m", "version": 3, "n_learned": 9}, LEARNER)
    head = header_part(blob)
    assert len(head) < 600 and blob.startswith(head)
    assert open_header(head, RING, model="m", version=3)["n_learned"] == 9
    with pytest.raises(SnapshotRejected, match="not in the keyring"):
        open_header(head, Keyring.of(ATTACKER.public), model="m", version=3)
    # a header is not a snapshot: with no payload its hash does not match
    with pytest.raises(SnapshotRejected, match="payload hash mismatch"):
        open_snapshot(head, RING, model="m", version=3)


def test_a_legacy_snapshot_migrates_with_its_secret_and_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    old = legacy_seal({"w": 5}, {"model": "m", "version": 4, "n_learned": 7}, b"old-secret-old-secret")
    header, payload = open_legacy(old, b"old-secret-old-secret", model="m", version=4)
    new = reseal(payload, header, LEARNER)
    opened = open_snapshot(new, RING, model="m", version=4)
    assert opened.state == {"w": 5} and opened.header["n_learned"] == 7
    assert opened.header["key_id"] == LEARNER.key_id
    # the wrong secret, the empty one, or a misplaced blob are refused, and nothing is unpickled
    evil = legacy_seal(Evil(str(marker)), {"model": "m", "version": 4}, b"attacker")
    with pytest.raises(SnapshotRejected, match="bad HMAC"):
        open_legacy(evil, b"old-secret-old-secret", model="m", version=4)
    with pytest.raises(SnapshotRejected, match="empty HMAC key"):
        open_legacy(legacy_seal({"w": 1}, {"model": "m", "version": 4}, b""), b"", model="m", version=4)
    with pytest.raises(SnapshotRejected, match="read as model 'm' version 5"):
        open_legacy(old, b"old-secret-old-secret", model="m", version=5)
    assert not marker.exists()
