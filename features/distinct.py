"""Distinct counts in bounded memory: an exact set of hashes while small, then a HyperLogLog sketch.

A distinct-count accumulator is a one-element list:

- ``[[h1, h2, ...]]``: the sorted, unique signed int64 hashes (:func:`hash_value`) of the values seen, at
  most ``DISTINCT_EXACT`` (64) of them; its value is their number (exact);
- ``["<base64>"]``: beyond 64 distinct values, the base64 of the compact serialization of an Apache
  DataSketches ``hll_sketch(lg_k=10, HLL_8)`` updated with the same hashes (at most 1,064 bytes, 1,420
  characters whatever the cardinality); its value is the sketch's estimate rounded to an int (relative
  standard error about 3.25%, so within 10% 99.8% of the time).

Merging two accumulators is the union of their sets (it stays exact while the union holds at most 64
hashes), or of their sketches. The value depends only on the set of hashes added, not on the order, the
split or the merges: the estimate is taken from the sketch's registers alone (see :func:`value`).

The hash of a value: None is skipped; equal Python values hash equal (``1 == 1.0 == True``); a string
never equals a number (``"1" != 1``). Booleans become ints, a float that is an integer within int64 an int,
then the hash is blake2b (8 bytes) of ``b"n" + repr(number)`` or ``b"s" + utf-8 of the string``
(surrogates passed through), read as a little-endian signed int64.

Where the optional extension ``features._distinct`` is built (setup.py), ``hash_value``, ``add``, ``merge``,
``copy`` and ``value`` are its compiled twins of the exact-set path, with the same results to the bit; the
Python functions stay as ``python_hash_value`` etc., the reference and the fallback.

>>> acc = empty()
>>> for v in (1, 1.0, True, "1", None, 2.5):
...     add(acc, v)
>>> value(acc), len(acc[0])
(3, 3)
>>> other = empty()
>>> for i in range(100):
...     add(other, i)
>>> type(other[0]) is str, len(other[0]) <= 1420, valid(other)
(True, True, True)
>>> merge(acc, other)
>>> 95 <= value(acc) <= 108, 93 <= value(other) <= 107
(True, True)
>>> valid([["not a hash"]]), valid(["bm90IGEgc2tldGNo"]), valid([[2, 1]])
(False, False, False)
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from bisect import bisect_left
from hashlib import blake2b
from itertools import pairwise
from typing import Any

from datasketches import hll_sketch, hll_union, tgt_hll_type

from features.numeric import INT64_MAX, INT64_MIN

__all__ = ["DISTINCT_EXACT", "LG_K", "add", "copy", "empty", "hash_value", "merge", "valid", "value"]

DISTINCT_EXACT = 64
LG_K = 10
HLL_TYPE = tgt_hll_type.HLL_8
# A compact HLL_8 sketch of lg_k 10 takes at most 40 + 1024 bytes: 1,420 base64 characters. A stored string
# longer than this is refused before it is decoded (a hostile state must not make a large allocation).
MAX_SKETCH_CHARS = 1420
# Decoded sketches by their base64 text: an in-order event adds to the same tile's sketch again and again,
# and decoding costs more than the update and the encoding together. Bounded; a miss only decodes again.
_CACHE: dict[str, Any] = {}
_VALUES: dict[str, int] = {}  # and their values (a sketch that did not change is read again)
_CACHE_SIZE = 256


def hash_value(v: Any) -> int | None:
    """The signed int64 hash of a value, or None for None (and for anything not a str, bool or number).

    >>> hash_value(1) == hash_value(1.0) == hash_value(True), hash_value("1") == hash_value(1)
    (True, False)
    >>> hash_value(None), hash_value(2.5) == hash_value(2.5), -(2**63) <= hash_value("x") < 2**63
    (None, True, True)
    """
    if isinstance(v, str):
        data = b"s" + v.encode("utf-8", "surrogatepass")
    elif isinstance(v, bool | int):
        data = b"n" + repr(int(v)).encode()
    elif isinstance(v, float):
        if v.is_integer() and INT64_MIN <= v <= INT64_MAX:
            data = b"n" + repr(int(v)).encode()
        else:
            data = b"n" + repr(float(v)).encode()
    else:
        return None
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little", signed=True)


def empty() -> list[Any]:
    return [[]]


def copy(acc: list[Any]) -> list[Any]:
    x = acc[0]
    return [list(x) if type(x) is list else x]


def add(acc: list[Any], v: Any) -> None:
    """Add a value (None skipped) to ``acc`` in place."""
    h = python_hash_value(v)  # the reference's own (the public name may be the compiled one)
    if h is not None:
        _insert(acc, h)


def _insert(acc: list[Any], h: int) -> None:
    """Add a hash to ``acc`` in place (the compiled ``add`` hands over here what is not a plain list)."""
    x = acc[0]
    if type(x) is list:
        i = bisect_left(x, h)
        if i == len(x) or x[i] != h:
            x.insert(i, h)
            if len(x) > DISTINCT_EXACT:
                acc[0] = _store(_sketch_of(x))
        return
    sketch = _take(x)
    sketch.update(h)
    acc[0] = _store(sketch)


def merge(acc: list[Any], other: list[Any]) -> None:
    """Add ``other``'s values into ``acc`` in place (``other`` unchanged)."""
    x, y = acc[0], other[0]
    if type(y) is list:
        if not y:
            return
        if not x:
            acc[0] = list(y)
        elif type(x) is list:
            union = sorted(set(x).union(y))
            acc[0] = union if len(union) <= DISTINCT_EXACT else _store(_sketch_of(union))
        else:
            sketch = _take(x)
            for h in y:
                sketch.update(h)
            acc[0] = _store(sketch)
        return
    u = hll_union(LG_K)
    if type(x) is list:
        for h in x:
            u.update(h)
    else:
        u.update(_peek(x))
    u.update(_peek(y))
    acc[0] = _store(u.get_result(HLL_TYPE))


def value(acc: list[Any]) -> int:
    """The number of distinct values: exact up to 64, else the sketch's estimate, rounded.

    The estimate is read from a union holding the sketch twice: merging a sketch into a union's sketch marks
    it out of order, so its estimate is computed from the registers alone (the composite estimator), where the
    sketch's own (HIP) estimate would depend on the order its values came in; so every split and merge of the
    same values gives the same value.
    """
    x = acc[0]
    if type(x) is list:
        return len(x)
    found = _VALUES.get(x)
    if found is None:
        if len(_VALUES) >= _CACHE_SIZE:
            del _VALUES[next(iter(_VALUES))]
        found = _VALUES[x] = round(_estimate(_peek(x)))
    return found


def _estimate(sketch: Any) -> float:
    u = hll_union(LG_K)
    u.update(sketch)
    u.update(sketch)
    return float(u.get_estimate())


def valid(acc: Any) -> bool:
    """True if ``acc`` is a distinct-count accumulator (checked thoroughly; never raises)."""
    if type(acc) is not list or len(acc) != 1:
        return False
    x = acc[0]
    if type(x) is list:
        if len(x) > DISTINCT_EXACT or not all(type(h) is int and INT64_MIN <= h <= INT64_MAX for h in x):
            return False
        return all(a < b for a, b in pairwise(x))
    if type(x) is not str or len(x) > MAX_SKETCH_CHARS:
        return False
    if x in _CACHE:  # made (or checked) here
        return True
    sketch = _decode(x)
    if sketch is None:
        return False
    estimate = _estimate(sketch)  # a sketch made by this module estimates far below 2**62
    if not (math.isfinite(estimate) and 0 <= estimate <= 2**62):
        return False
    _remember(x, sketch)  # the engine reads it next
    return True


def _sketch_of(hashes: list[int]) -> Any:
    sketch = hll_sketch(LG_K, HLL_TYPE)
    for h in hashes:
        sketch.update(h)
    return sketch


# The compact serialization of the sketches this module makes (lg_k 10, HLL_8), checked byte by byte before
# DataSketches reads it: it trusts what it reads (a set-mode sketch with a few coupons changed deserialised
# without complaint, then aborted the process with "double free or corruption" when merged). Set mode (more
# than 64 but at most 96 coupons, 12 bytes of header then 4 per coupon): unique coupons, each a register
# value of 1 to 63 above 26 bits of slot. HLL mode: 40 bytes of header (the ``_ORDERED`` flag set or not, the
# HIP and kxq estimates finite and non-negative, the count of zero registers right, no auxiliary
# exceptions) then 1,024 one-byte registers of at most 64 - 10 + 1 = 55.
_SET_HEAD = bytes.fromhex("0301070a07080009")
_HLL_HEADS = (bytes.fromhex("0a01070a0008000a"), bytes.fromhex("0a01070a0018000a"))
_SET_MAX = 96
_REGISTERS = 1 << LG_K
_HLL_BYTES = 40 + _REGISTERS
_REGISTER_VALUES = bytes(range(64 - LG_K + 2))  # 0 to 55


def _wellformed(raw: bytes) -> bool:
    head = raw[:8]
    if head == _SET_HEAD:
        n = (len(raw) - 12) // 4
        if not 1 <= n <= _SET_MAX or len(raw) != 12 + 4 * n or struct.unpack_from("<i", raw, 8)[0] != n:
            return False
        coupons = struct.unpack_from(f"<{n}I", raw, 12)
        return len(set(coupons)) == n and all(1 <= c >> 26 <= 63 for c in coupons)
    if head not in _HLL_HEADS or len(raw) != _HLL_BYTES:
        return False
    hip, kxq0, kxq1, zeros, aux = struct.unpack_from("<dddii", raw, 8)
    registers = raw[40:]
    if not all(math.isfinite(x) and x >= 0 for x in (hip, kxq0, kxq1)) or aux != 0:
        return False
    return zeros == registers.count(0) and not registers.translate(None, _REGISTER_VALUES)


def _decode(text: str) -> Any:
    """The sketch a base64 text holds, or None if it holds none of lg_k 10 and type HLL_8 as made here."""
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (ValueError, binascii.Error):
        return None
    if not _wellformed(raw):
        return None
    try:
        sketch = hll_sketch.deserialize(raw)
    except (ValueError, IndexError, RuntimeError):
        return None
    if sketch.lg_config_k != LG_K or sketch.tgt_type != HLL_TYPE:
        return None
    return sketch


def _peek(text: str) -> Any:
    """The sketch of ``text``, not to be changed (it may be the cache's)."""
    sketch = _CACHE.get(text)
    if sketch is None:
        sketch = _decoded(text)
        _remember(text, sketch)
    return sketch


def _take(text: str) -> Any:
    """The sketch of ``text``, to change: out of the cache (another holder of ``text`` decodes it again)."""
    sketch = _CACHE.pop(text, None)
    return sketch if sketch is not None else _decoded(text)


def _decoded(text: str) -> Any:
    sketch = _decode(text)
    if sketch is None:
        raise ValueError("not a distinct-count sketch (check the accumulator with valid())")
    return sketch


def _store(sketch: Any) -> str:
    text = base64.b64encode(sketch.serialize_compact()).decode("ascii")
    _remember(text, sketch)
    return text


def _remember(text: str, sketch: Any) -> None:
    if len(_CACHE) >= _CACHE_SIZE:
        del _CACHE[next(iter(_CACHE))]
    _CACHE[text] = sketch


# The Python functions above are the reference. Where the compiled module is built (features._distinct:
# the exact-set path, which hands sketches and anything odd back to these), its functions take the public
# names; they give the same results bit for bit (tests/features/test_native_distinct.py runs both).
python_hash_value, python_add, python_merge, python_copy, python_value = hash_value, add, merge, copy, value
try:
    import features._distinct as _compiled
except ImportError:  # not built (no C compiler at install): the Python functions
    _compiled = None
if _compiled is not None and _compiled.EXACT == DISTINCT_EXACT:
    hash_value, add, merge, copy, value = (
        _compiled.hash_value,
        _compiled.add,
        _compiled.merge,
        _compiled.copy,
        _compiled.value,
    )
