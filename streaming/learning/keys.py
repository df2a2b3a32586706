"""Ed25519 keys that sign and verify model snapshots, and the keyring of accepted signers.

The learner holds a :class:`SigningKey` (``RIVULET_SIGNING_KEY``: base64 of its 32-byte seed); every
reader (the API, replay, verify, the CLI) holds only public keys (``RIVULET_VERIFY_KEYS``: base64 of 32
raw bytes each, comma separated), gathered in a :class:`Keyring`. Each snapshot names the key that signed
it by its :func:`key_id` (a short digest of the public key), so keys rotate without losing history: a ring
that holds the old and the new key accepts versions signed by either.

>>> signer = generate()
>>> ring = Keyring.of(signer.public)
>>> sig = signer.sign(b"header")
>>> ring.get(signer.public.key_id).verify(sig, b"header")
True
>>> parse_verify_key(signer.public.encoded) == signer.public
True
>>> parse_verify_key("not base64!")
Traceback (most recent call last):
...
streaming.errors.InvalidKey: verify key is not valid base64 (expected the base64 of 32 raw bytes)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from streaming.errors import InvalidKey

__all__ = [
    "Keyring",
    "SigningKey",
    "VerifyKey",
    "generate",
    "key_id",
    "parse_keyring",
    "parse_signing_key",
    "parse_verify_key",
]

_RAW = 32  # bytes of an Ed25519 public key and of a private key's seed
SIGNATURE_BYTES = 64


def key_id(raw_public: bytes) -> str:
    """The id a snapshot names its signer by: the first 16 hex digits of SHA-256 of the raw public key.

    >>> key_id(bytes(32))
    '66687aadf862bd77'
    """
    return hashlib.sha256(raw_public).hexdigest()[:16]


def _decode(text: str, what: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        raw = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        try:  # the URL-safe alphabet is accepted too
            raw = base64.b64decode(cleaned, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidKey(what, "is not valid base64 (expected the base64 of 32 raw bytes)") from None
    if len(raw) != _RAW:
        raise InvalidKey(what, f"is {len(raw)} bytes once decoded; an Ed25519 key is {_RAW}")
    return raw


def _set_key(
    key: VerifyKey | SigningKey, raw: bytes, what: str, noun: str, load: Callable[[bytes], Any]
) -> None:
    """Set the frozen ``key``'s ``_key`` to ``load(raw)``, once ``raw`` is checked to be the 32 bytes of an
    Ed25519 key (or ``noun``: seed)."""
    if len(raw) != _RAW:
        raise InvalidKey(what, f"is {len(raw)} bytes; an Ed25519 {noun} is {_RAW}")
    object.__setattr__(key, "_key", load(raw))


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key: checks signatures, cannot make them."""

    raw: bytes
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set_key(self, self.raw, "verify key", "key", Ed25519PublicKey.from_public_bytes)

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    @property
    def encoded(self) -> str:
        """The form ``RIVULET_VERIFY_KEYS`` takes (standard base64)."""
        return base64.b64encode(self.raw).decode()

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"VerifyKey(key_id={self.key_id!r})"


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key (from its 32-byte seed): the learner's, and only the learner's."""

    seed: bytes = field(repr=False)
    _key: Ed25519PrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set_key(self, self.seed, "signing key", "seed", Ed25519PrivateKey.from_private_bytes)

    @property
    def public(self) -> VerifyKey:
        return VerifyKey(self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @property
    def key_id(self) -> str:
        return self.public.key_id

    @property
    def encoded(self) -> str:
        """The form ``RIVULET_SIGNING_KEY`` takes (standard base64 of the seed)."""
        return base64.b64encode(self.seed).decode()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"


def generate() -> SigningKey:
    """A new key pair (from the operating system's randomness)."""
    seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return SigningKey(seed)


def parse_signing_key(text: str, what: str = "RIVULET_SIGNING_KEY") -> SigningKey:
    return SigningKey(_decode(text, what))


def parse_verify_key(text: str, what: str = "verify key") -> VerifyKey:
    return VerifyKey(_decode(text, what))


class Keyring:
    """The public keys whose snapshots are accepted, by key id. Immutable; :meth:`with_key` makes a new one.

    >>> a, b = generate(), generate()
    >>> ring = Keyring.of(a.public)
    >>> b.key_id in ring, a.key_id in ring.with_key(b.public)
    (False, True)
    """

    def __init__(self, keys: Iterable[VerifyKey] = ()) -> None:
        self._keys = {k.key_id: k for k in keys}

    @classmethod
    def of(cls, *keys: VerifyKey) -> Keyring:
        return cls(keys)

    def with_key(self, key: VerifyKey) -> Keyring:
        return Keyring([*self._keys.values(), key])

    def get(self, kid: str) -> VerifyKey | None:
        return self._keys.get(kid)

    @property
    def ids(self) -> list[str]:
        return sorted(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[VerifyKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring({self.ids})"


def parse_keyring(texts: Iterable[str], what: str = "RIVULET_VERIFY_KEYS") -> Keyring:
    """The keyring of ``RIVULET_VERIFY_KEYS`` (already split on commas); names the bad entry if any."""
    keys = []
    for i, text in enumerate(texts, 1):
        keys.append(parse_verify_key(text, f"{what} entry {i}"))
    return Keyring(keys)
