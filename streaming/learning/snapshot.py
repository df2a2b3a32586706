"""Signed model snapshots: what a checkpoint stores, and the only way back from bytes to a model.

A snapshot is a JSON header (model name, version, the offsets it reflects, metrics, time, River and Python
versions, the feature-definition hash, the payload's SHA-256) and a pickled payload, signed together with
HMAC-SHA256 under a secret that is configured, never stored next to the snapshot. :func:`open_snapshot`
checks the signature (in constant time) and the hash *before* it unpickles anything: a snapshot that was
altered, signed with another key, or not signed at all is refused with :class:`SnapshotRejected`, and its
payload is never deserialised.

>>> snap = seal({"weights": [1, 2]}, {"model": "m", "version": 3}, b"secret")
>>> open_snapshot(snap, b"secret").state
{'weights': [1, 2]}
>>> open_snapshot(snap, b"other")
Traceback (most recent call last):
...
streaming.learning.snapshot.SnapshotRejected: snapshot of model 'm' version 3 refused: bad signature
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import platform
from dataclasses import dataclass
from typing import Any

import orjson
import river

__all__ = ["Opened", "SnapshotRejected", "open_snapshot", "read_header", "seal"]

_MAGIC = b"RVLT1\n"


class SnapshotRejected(Exception):
    """A snapshot failed verification and was not deserialised."""

    def __init__(self, header: dict[str, Any] | None, reason: str) -> None:
        self.header = header or {}
        self.reason = reason
        who = (
            f"model {self.header.get('model')!r} version {self.header.get('version')}"
            if header
            else "snapshot"
        )
        super().__init__(f"snapshot of {who} refused: {reason}" if header else f"snapshot refused: {reason}")


@dataclass(frozen=True)
class Opened:
    header: dict[str, Any]
    state: Any


def seal(state: Any, header: dict[str, Any], secret: bytes) -> bytes:
    """Pickle ``state``, sign it with ``header``: ``MAGIC | len(header) | header | signature | payload``."""
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    full = {
        **header,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
        "river": river.__version__,
        "python": platform.python_version(),
    }
    head = orjson.dumps(
        full, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    )
    signature = hmac.new(secret, head + payload, hashlib.sha256).digest()
    return _MAGIC + len(head).to_bytes(4, "big") + head + signature + payload


def _split(blob: bytes) -> tuple[dict[str, Any] | None, bytes, bytes, bytes]:
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 4 + 32:
        raise SnapshotRejected(None, "not a Rivulet snapshot (unsigned or truncated)")
    n = int.from_bytes(blob[len(_MAGIC) : len(_MAGIC) + 4], "big")
    start = len(_MAGIC) + 4
    head = blob[start : start + n]
    signature = blob[start + n : start + n + 32]
    payload = blob[start + n + 32 :]
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        header = None
    if len(signature) != 32 or not isinstance(header, dict):
        raise SnapshotRejected(None, "malformed header")
    return header, head, signature, payload


def read_header(blob: bytes) -> dict[str, Any]:
    """The header, unverified (for listings); never use it to decide what to load."""
    return _split(blob)[0] or {}


def open_snapshot(blob: bytes, secret: bytes) -> Opened:
    """Verify, then unpickle. Raises :class:`SnapshotRejected` without unpickling on any mismatch."""
    header, head, signature, payload = _split(blob)
    expected = hmac.new(secret, head + payload, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise SnapshotRejected(header, "bad signature")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):  # type: ignore[union-attr]
        raise SnapshotRejected(header, "payload hash mismatch")
    return Opened(header or {}, pickle.loads(payload))  # verified above: ours, unaltered
