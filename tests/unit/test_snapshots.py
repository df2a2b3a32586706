"""Signed snapshots: tampered, foreign or unsigned bytes are refused and never unpickled."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from streaming.learning.snapshot import SnapshotRejected, open_snapshot, read_header, seal

SECRET = b"the-right-secret"


class Evil:
    """Unpickling this creates a file: the proof that a snapshot was deserialised."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_round_trip_keeps_state_and_header() -> None:
    blob = seal({"w": [1.5, 2.0]}, {"model": "m", "version": 7, "offsets": {"t": {"0": 5}}}, SECRET)
    opened = open_snapshot(blob, SECRET)
    assert opened.state == {"w": [1.5, 2.0]}
    assert opened.header["offsets"] == {"t": {"0": 5}} and opened.header["version"] == 7
    assert {"river", "python", "payload_sha256"} <= set(read_header(blob))


@pytest.mark.parametrize("where", ["payload", "header", "signature"])
def test_a_flipped_bit_is_refused(where: str) -> None:
    blob = bytearray(seal({"w": 1}, {"model": "m", "version": 1}, SECRET))
    index = {"payload": len(blob) - 3, "header": 12, "signature": blob.index(b"}") + 5}[where]
    blob[index] ^= 0x01
    with pytest.raises(SnapshotRejected):
        open_snapshot(bytes(blob), SECRET)


def test_malicious_pickles_are_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = Evil(str(marker))
    # signed with another key
    with pytest.raises(SnapshotRejected, match="bad signature"):
        open_snapshot(seal(evil, {"model": "m", "version": 1}, b"attacker"), SECRET)
    # a bare pickle, no signature at all
    with pytest.raises(SnapshotRejected, match="not a Rivulet snapshot"):
        open_snapshot(pickle.dumps(evil), SECRET)
    # a genuine header and signature with the payload swapped
    genuine = seal({"w": 1}, {"model": "m", "version": 1}, SECRET)
    payload = pickle.dumps({"w": 1}, protocol=pickle.HIGHEST_PROTOCOL)
    swapped = genuine[: -len(payload)] + pickle.dumps(evil, protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(SnapshotRejected):
        open_snapshot(swapped, SECRET)
    assert not marker.exists() and not os.path.exists(marker)


def test_the_malicious_pickle_does_act_when_trusted(tmp_path: Path) -> None:
    # the control for the test above: signed with the right key it is unpickled, and the file appears
    marker = tmp_path / "created"
    open_snapshot(seal(Evil(str(marker)), {"model": "m", "version": 1}, SECRET), SECRET).state.close()
    assert marker.exists()
