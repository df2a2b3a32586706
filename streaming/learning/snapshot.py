"""Signed model snapshots: what a checkpoint stores, and the only way back from bytes to a model.

A snapshot (format 2) is ``MAGIC | len(header) | header | signature | payload``: a JSON header (model name,
version, the id of the key that signed it, the offsets it reflects, metrics, time, River and Python
versions, the feature-definition hash, the payload's SHA-256 and length) and a pickled payload. The
signature is Ed25519 by the learner's private key over ``MAGIC | len(header) | header``; since the header
carries the payload's SHA-256, it covers the payload too, and the signed header (everything before the
payload, :func:`header_part`) can be stored and verified on its own, so listings need not read payloads.

:func:`open_snapshot` checks, *before* it unpickles anything, that the signer's key id is in the reader's
:class:`~streaming.learning.keys.Keyring`, the signature, that the header names the model and version the
snapshot was read for (a version's bytes copied under another version, or another model's, are refused),
and the payload's hash. Anything else is refused with :class:`SnapshotRejected` and never deserialised.

Snapshots of format 1 (``RVLT1``, HMAC-SHA256 under a shared secret) are refused with the way to migrate
them: ``rivulet models resign`` checks each one with the old secret and signs it again (:func:`open_legacy`,
:func:`reseal`), without unpickling it.

>>> from streaming.learning.keys import Keyring, generate
>>> learner, stranger = generate(), generate()
>>> snap = seal({"weights": [1, 2]}, {"model": "m", "version": 3}, learner)
>>> open_snapshot(snap, Keyring.of(learner.public), model="m", version=3).state
{'weights': [1, 2]}
>>> open_snapshot(snap, Keyring.of(learner.public), model="m", version=4)
Traceback (most recent call last):
...
streaming.learning.snapshot.SnapshotRejected: snapshot of model 'm' version 3 refused: its header names model 'm' version 3, but it was read as model 'm' version 4 (copied under another key?)
>>> open_snapshot(snap, Keyring.of(stranger.public), model="m", version=3)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streaming.learning.snapshot.SnapshotRejected: snapshot of model 'm' version 3 refused: signed by key ..., not in the keyring (accepted: ...)
"""  # noqa: E501

from __future__ import annotations

import hashlib
import hmac
import pickle
import platform
import reprlib
from dataclasses import dataclass
from typing import Any

import orjson
import river

from streaming.learning.errors import LearningError
from streaming.learning.keys import SIGNATURE_BYTES, Keyring, SigningKey

__all__ = [
    "LEGACY_MIGRATION",
    "Opened",
    "SnapshotRejected",
    "header_part",
    "is_legacy",
    "open_header",
    "open_legacy",
    "open_snapshot",
    "read_header",
    "reseal",
    "seal",
]

_MAGIC = b"RVLT2\n"
_LEGACY_MAGIC = b"RVLT1\n"
_LEN = 4
_HMAC_BYTES = 32
LEGACY_MIGRATION = (
    "a format-1 snapshot (RVLT1, HMAC under a shared secret), which readers no longer trust: re-sign the "
    "registry's snapshots with `rivulet models resign` (RIVULET_SIGNING_SECRET=<the old secret> and "
    "RIVULET_SIGNING_KEY set), or delete the model's keys and let the learner start afresh"
)


class SnapshotRejected(LearningError):
    """A snapshot failed verification and was not deserialised; ``reason`` says why."""

    def __init__(self, header: dict[str, Any] | None, reason: str) -> None:
        self.header = header or {}  # unverified when the check failed: for diagnostics only
        self.reason = reason
        if header:
            who = f"model {_short(self.header.get('model'))} version {_short(self.header.get('version'))}"
            super().__init__(f"snapshot of {who} refused: {reason}")
        else:
            super().__init__(f"snapshot refused: {reason}")


def _short(value: Any) -> str:
    """A value from an unverified header, as it goes into a message: repr'd and bounded.

    >>> _short("m"), _short(3), len(_short("x" * 10_000)) < 50
    ("'m'", '3', True)
    """
    return reprlib.repr(value)[:48]


@dataclass(frozen=True)
class Opened:
    header: dict[str, Any]
    state: Any


def _dumps_header(header: dict[str, Any]) -> bytes:
    return orjson.dumps(
        header, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    )


def reseal(payload: bytes, header: dict[str, Any], signer: SigningKey) -> bytes:
    """Sign already pickled ``payload`` bytes with ``header`` (which must name ``model`` and ``version``)."""
    if not isinstance(header.get("model"), str) or not isinstance(header.get("version"), int):
        raise ValueError("a snapshot header must name its model (str) and version (int)")
    full = {
        **header,
        "key_id": signer.key_id,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
        "river": header.get("river", river.__version__),
        "python": header.get("python", platform.python_version()),
    }
    head = _dumps_header(full)
    signed = _MAGIC + len(head).to_bytes(_LEN, "big") + head
    return signed + signer.sign(signed) + payload


def seal(state: Any, header: dict[str, Any], signer: SigningKey) -> bytes:
    """Pickle ``state`` and sign it with ``header`` (which must name ``model`` and ``version``)."""
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    versions = {"river": river.__version__, "python": platform.python_version()}
    return reseal(payload, {**header, **versions}, signer)


def is_legacy(blob: bytes) -> bool:
    return blob.startswith(_LEGACY_MAGIC)


def _split(blob: bytes) -> tuple[dict[str, Any], bytes, bytes, int]:
    """(header, signed bytes, signature, where the payload starts); no verification."""
    if is_legacy(blob):
        header = _legacy_header(blob)
        raise SnapshotRejected(header, LEGACY_MIGRATION)
    start = len(_MAGIC) + _LEN
    if not blob.startswith(_MAGIC) or len(blob) < start + SIGNATURE_BYTES:
        raise SnapshotRejected(None, "not a Rivulet snapshot (unsigned or truncated)")
    n = int.from_bytes(blob[len(_MAGIC) : start], "big")
    if len(blob) < start + n + SIGNATURE_BYTES:
        raise SnapshotRejected(None, "truncated header or signature")
    signed = blob[: start + n]
    signature = blob[start + n : start + n + SIGNATURE_BYTES]
    try:
        header = orjson.loads(blob[start : start + n])
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict):
        raise SnapshotRejected(None, "malformed header")
    return header, signed, signature, start + n + SIGNATURE_BYTES


def header_part(blob: bytes) -> bytes:
    """The signed header of a snapshot (everything before the payload), verifiable by :func:`open_header`."""
    return blob[: _split(blob)[3]]


def read_header(blob: bytes) -> dict[str, Any]:
    """The header, unverified (for diagnostics); never use it to decide what to load."""
    if is_legacy(blob):
        return _legacy_header(blob) or {}
    return _split(blob)[0]


def _verified(blob: bytes, keyring: Keyring, model: str, version: int) -> tuple[dict[str, Any], int]:
    header, signed, signature, payload_at = _split(blob)
    kid = header.get("key_id")
    key = keyring.get(kid) if isinstance(kid, str) else None
    if key is None:
        accepted = ", ".join(keyring.ids) or "none"
        shown = kid if isinstance(kid, str) and len(kid) <= 16 else _short(kid)
        raise SnapshotRejected(header, f"signed by key {shown}, not in the keyring (accepted: {accepted})")
    if not key.verify(signature, signed):
        raise SnapshotRejected(header, f"bad signature (key {kid})")
    _names(header, model, version, " (copied under another key?)")
    return header, payload_at


def _names(header: dict[str, Any], model: str, version: int, hint: str = "") -> None:
    """Refuse a header that names another model or version than the key it was read under."""
    if header.get("model") != model or header.get("version") != version:
        raise SnapshotRejected(
            header,
            f"its header names model {_short(header.get('model'))} version {_short(header.get('version'))}, "
            f"but it was read as model {model!r} version {version}{hint}",
        )


def open_header(blob: bytes, keyring: Keyring, *, model: str, version: int) -> dict[str, Any]:
    """The verified header of a snapshot or of its :func:`header_part`: signed by a key of ``keyring``,
    naming ``model`` and ``version``. The payload, if any, is not checked (see :func:`open_snapshot`)."""
    return _verified(blob, keyring, model, version)[0]


def open_snapshot(blob: bytes, keyring: Keyring, *, model: str, version: int) -> Opened:
    """Verify (:func:`open_header`, then the payload's length and hash), then unpickle. Raises
    :class:`SnapshotRejected` without unpickling on any mismatch."""
    header, payload_at = _verified(blob, keyring, model, version)
    payload = blob[payload_at:]
    if len(payload) != header.get("payload_bytes") or (
        hashlib.sha256(payload).hexdigest() != header.get("payload_sha256")
    ):
        raise SnapshotRejected(header, "payload hash mismatch")
    try:
        state = pickle.loads(payload)  # verified above: signed by a trusted key, unaltered
    except Exception as exc:  # signed, yet not a state this code loads (its classes refuse its fields...)
        why = f"its payload does not load: {type(exc).__name__}: {exc}"
        raise SnapshotRejected(header, why[:500]) from exc
    return Opened(header, state)


# ---------------------------------------------------------------- format 1, for the migration only


def _legacy_header(blob: bytes) -> dict[str, Any] | None:
    start = len(_LEGACY_MAGIC) + _LEN
    n = int.from_bytes(blob[len(_LEGACY_MAGIC) : start], "big")
    try:
        header = orjson.loads(blob[start : start + n])
    except orjson.JSONDecodeError:
        return None
    return header if isinstance(header, dict) else None


def open_legacy(blob: bytes, secret: bytes, *, model: str, version: int) -> tuple[dict[str, Any], bytes]:
    """A format-1 snapshot's header and pickled payload, after checking its HMAC under the old ``secret``,
    its payload hash and its model and version. Never unpickles: :func:`reseal` signs the same bytes."""
    if not is_legacy(blob):
        raise SnapshotRejected(None, "not a format-1 snapshot")
    if not secret:
        raise SnapshotRejected(None, "no legacy secret given: an empty HMAC key proves nothing")
    header = _legacy_header(blob)
    start = len(_LEGACY_MAGIC) + _LEN
    n = int.from_bytes(blob[len(_LEGACY_MAGIC) : start], "big")
    head = blob[start : start + n]
    signature = blob[start + n : start + n + _HMAC_BYTES]
    payload = blob[start + n + _HMAC_BYTES :]
    if header is None or len(signature) != _HMAC_BYTES:
        raise SnapshotRejected(None, "malformed format-1 snapshot")
    expected = hmac.new(secret, head + payload, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise SnapshotRejected(header, "bad HMAC signature under the given legacy secret")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise SnapshotRejected(header, "payload hash mismatch")
    _names(header, model, version)
    return header, payload
