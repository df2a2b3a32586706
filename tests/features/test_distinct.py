"""Distinct counts (features.distinct): the hash rule, exact up to 64, the sketch's error and size, merges
equal to the sketch of the union, and stored accumulators checked without ever crashing."""

from __future__ import annotations

import base64
import random
import struct
from collections.abc import Iterable
from hashlib import blake2b
from itertools import pairwise
from typing import Any

import orjson
import pytest
from datasketches import hll_sketch, tgt_hll_type
from hypothesis import given, settings
from hypothesis import strategies as st

from features import distinct as D

pytestmark = pytest.mark.unit


def filled(values: Iterable[Any]) -> list[Any]:
    acc = D.empty()
    for v in values:
        D.add(acc, v)
    assert D.valid(acc)
    return acc


def test_the_hash_rule() -> None:
    def blake(data: bytes) -> int:
        return int.from_bytes(blake2b(data, digest_size=8).digest(), "little", signed=True)

    assert D.hash_value(1) == D.hash_value(1.0) == D.hash_value(True) == blake(b"n1")
    assert D.hash_value(False) == D.hash_value(0) == D.hash_value(-0.0) == blake(b"n0")
    assert D.hash_value("1") == blake(b"s1") != D.hash_value(1)
    assert D.hash_value(2.5) == blake(b"n2.5") and D.hash_value(-1e308) == blake(b"n-1e+308")
    # an integer float beyond int64 stays a float (repr 9.223372036854776e+18), an int at the edge an int
    assert D.hash_value(2.0**63) == blake(b"n9.223372036854776e+18") != D.hash_value(2**63)
    assert D.hash_value(-(2.0**63)) == D.hash_value(-(2**63)) == blake(b"n-9223372036854775808")
    assert D.hash_value("\ud800") == blake(b"s\xed\xa0\x80")  # a lone surrogate passes through
    assert D.hash_value(None) is None and D.hash_value([1]) is None


def test_equal_values_count_once_and_strings_apart_from_numbers() -> None:
    acc = filled([1, 1.0, True, "1", None, "", 0, False, -0.0, 0.0, "0"])
    assert D.value(acc) == 5  # 1, "1", "", 0, "0"
    assert acc[0] == sorted(acc[0]) and len(acc[0]) == 5


def test_exact_up_to_64_then_a_sketch() -> None:
    acc = filled(range(64))
    assert type(acc[0]) is list and D.value(acc) == 64
    D.add(acc, 63.0)  # already there: still exact
    assert type(acc[0]) is list
    D.add(acc, "64")
    assert type(acc[0]) is str and D.valid(acc)
    assert D.value(acc) == 65  # a set-mode sketch of 65 coupons counts them exactly
    two = filled(range(40))
    D.merge(two, filled(range(20, 64)))  # 64 in the union: stays exact
    assert type(two[0]) is list and D.value(two) == 64


@pytest.mark.parametrize("n", [1_000, 10_000, 100_000])
def test_the_estimate_is_within_10_percent(n: int) -> None:
    acc = filled(f"user-{i}" for i in range(n))
    assert abs(D.value(acc) - n) <= 0.1 * n
    floats = filled(i / 7 for i in range(n))
    assert abs(D.value(floats) - n) <= 0.1 * n


def test_the_state_is_bounded_whatever_the_cardinality() -> None:
    sizes = []
    for n in (64, 65, 100, 1_000, 100_000):
        acc = filled(range(n))
        sizes.append(len(orjson.dumps(acc)))
    assert max(sizes) <= 1500, sizes
    assert sizes[-1] == sizes[-2]  # an HLL_8 sketch: 1,064 bytes, however many values


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 3000),
    cuts=st.lists(st.integers(0, 3000), max_size=6),
    overlap=st.integers(0, 200),
    seed=st.integers(0, 2**32),
)
def test_merging_the_parts_equals_adding_everything(n: int, cuts: list[int], overlap: int, seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.randrange(10**12) for _ in range(n)]
    values += rng.sample(values, min(overlap, n))  # repeats, spread over the parts
    rng.shuffle(values)
    whole = filled(values)
    bounds = [0, *sorted(c for c in cuts if c <= len(values)), len(values)]
    parts = [filled(values[a:b]) for a, b in pairwise(bounds)]
    before = [D.copy(p) for p in parts]
    while len(parts) > 1:  # a random tree of merges, as tiles and caches are merged in any grouping
        i, j = rng.sample(range(len(parts)), 2)
        D.merge(parts[i], parts[j])
        parts.pop(j)
        before.pop(j)
    assert D.valid(parts[0])
    assert D.value(parts[0]) == D.value(whole)  # equal, not just close: the estimate is of the registers
    assert (type(parts[0][0]) is list) == (type(whole[0]) is list)
    if type(whole[0]) is list:
        assert parts[0] == whole


def test_merge_leaves_the_other_unchanged_and_copies_are_independent() -> None:
    small, big = filled(range(10)), filled(range(1000))
    small_before, big_before = D.copy(small), D.copy(big)
    target = D.copy(small)
    D.merge(target, big)
    assert small == small_before and big == big_before
    D.add(target, "new")
    copy = D.copy(small)
    copy[0].append(99)
    assert small == small_before
    estimate = D.value(big)
    D._CACHE.clear()  # a decoded sketch (no cache) gives the same value
    D._VALUES.clear()
    assert D.value(big) == estimate and D.value(target) >= estimate


def hll_bytes(registers: bytes, zeros: int | None = None, hip: float = 1.0) -> str:
    head = bytes.fromhex("0a01070a0008000a") + struct.pack(
        "<dddii", hip, 1.0, 0.0, registers.count(0) if zeros is None else zeros, 0
    )
    return base64.b64encode(head + registers).decode()


def test_valid_refuses_anything_but_a_sketch_made_here() -> None:
    made = filled(range(500))[0]
    set_mode = filled(range(70))[0]
    raw, set_raw = base64.b64decode(made), base64.b64decode(set_mode)
    assert D.valid([made]) and D.valid([set_mode])
    assert D.valid([hll_bytes(bytes([1, 2, 55]) * 341 + b"\x00")])
    other_k = hll_sketch(12, tgt_hll_type.HLL_8)
    hll4 = hll_sketch(10, tgt_hll_type.HLL_4)
    for i in range(500):
        other_k.update(i)
        hll4.update(i)
    bad = [
        "",
        "not base64!",
        made + "\n",
        made[:-4],
        "A" * 10_000_000,  # refused by its length, before any decoding
        base64.b64encode(bytes(random.Random(1).randrange(256) for _ in range(1064))).decode(),
        base64.b64encode(other_k.serialize_compact()).decode(),
        base64.b64encode(hll4.serialize_compact()).decode(),
        base64.b64encode(raw[:40] + raw[41:]).decode(),
        hll_bytes(bytes([56]) + bytes(1023)),  # a register beyond 64 - 10 + 1
        hll_bytes(bytes(1024), zeros=3),  # the count of zero registers is wrong
        hll_bytes(bytes(1024), hip=float("nan")),
        base64.b64encode(set_raw[:12] + set_raw[12:16] * 2 + set_raw[20:]).decode(),  # a coupon twice
        base64.b64encode(set_raw[:8] + struct.pack("<i", 71) + set_raw[12:]).decode(),  # count != coupons
        base64.b64encode(set_raw[:12] + bytes(4) + set_raw[16:]).decode(),  # a coupon of value 0
        "é" * 100,
    ]
    for acc in [*([x] for x in bad), [made, made], [b"x"], [None], [[1.0]], [[True]], [[2**63]], "x", None]:
        assert not D.valid(acc), str(acc)[:80]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_hostile_stored_sketch_never_crashes(data: st.DataObject) -> None:
    """Bytes of real sketches changed at random: valid() answers, and what it accepts can be used."""
    source = data.draw(st.sampled_from([70, 90, 500, 5000]))
    raw = bytearray(base64.b64decode(filled(range(source))[0]))
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw) - 1) | st.integers(0, min(47, len(raw) - 1)))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(raw) - 8, len(raw)))
    acc = [base64.b64encode(bytes(raw[:cut])).decode()]
    if D.valid(acc):
        assert D.value(acc) >= 0
        for other in (filled(range(10)), filled(range(100, 3000))):
            target = D.copy(other)
            D.merge(target, acc)
            D.merge(acc, other)
            assert D.valid(target) and D.valid(acc) and D.value(target) >= 0
        D.add(acc, "one more")
        assert D.valid(acc)
