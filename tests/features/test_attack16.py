"""Attacks on this round's changes (features/_native_exact.pxi, features/pipeline.py's batch applied entity
by entity), kept as regression tests.

- A batch's dead letters keep the batch's order: a re-keyed view's key error (a key field's value too long
  to be an entity) was dead-lettered while the records were keyed, ahead of the dead letters of the records
  before it (a late event, say); applied one at a time they come in the records' order.
- The compiled variance's division rounds as CPython's int / int on quotients built to be exact ties at 53
  bits (and one unit on either side of a tie), for any count up to 2**32 - 1 and any exponent; and sums
  whose partials spread over exactly the width the 64-bit limbs hold (and one bit past it) give the Python
  value. The oracle is aggregations.Var.value."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import _native
from features.aggregations import Var
from features.pipeline import FeaturePipeline, RawRecord
from features.store import MemoryStore
from tests.support.feature_defs import HOSTILE, HOSTILE_KEYED

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------- the pipeline: a key error's place


def _event(i: int, zipcode: str, ts: int) -> bytes:
    fields = {"zipcode": zipcode, "salary": float(i), "hvalue": 1.5, "device": f"d{i % 3}"}
    return orjson.dumps({"event_id": f"e{i}", "entity": f"c{i % 2}", "ts": ts, "fields": fields})


def _records(seed: int, n: int) -> list[RawRecord]:
    """Events of a few zipcodes, some late (10 minutes behind their zipcode, lateness 2m), some with a
    zipcode too long to be an entity (the re-keyed view dead-letters them when it keys them)."""
    rng = random.Random(seed)
    out: list[RawRecord] = []
    ts = 10_000_000
    for i in range(n):
        ts += rng.randrange(1, 20_000)
        roll = rng.random()
        zipcode = rng.choice(["z1", "z2", "z3"]) if roll >= 0.2 else "z" * 1_100
        when = ts - 600_000 if 0.2 <= roll < 0.4 else ts
        out.append(RawRecord(_event(i, zipcode, when), "events", 0, i, None, ts))
    return out


def _run(raws: list[RawRecord], size: int) -> list[Any]:
    store = MemoryStore()
    pipeline = FeaturePipeline([HOSTILE, HOSTILE_KEYED], store)

    async def go() -> list[Any]:
        out: list[Any] = []
        for i in range(0, len(raws), size):
            result = await pipeline.process(raws[i : i + size])
            await result.commit(store)
            for view in (HOSTILE.name, HOSTILE_KEYED.name):  # a batch gives its views one after the other
                dead = [(d.view, d.reason, d.record.offset) for d in result.dead_letters if d.view == view]
                out.append(dead)
                out.append([(r.view, r.entity, r.to_json()) for r in result.records if r.view == view])
        return out

    got = asyncio.run(go())
    # per view, everything in the order it came (the batches' lists joined)
    return [[x for part in got[k::4] for x in part] for k in range(4)]


def test_a_key_error_is_dead_lettered_in_its_records_place() -> None:
    late = _event(1, "z1", 1_000_000 - 600_000)
    raws = [
        RawRecord(_event(0, "z1", 1_000_000), "events", 0, 0),
        RawRecord(late, "events", 0, 1),  # late: its dead letter first
        RawRecord(_event(2, "z" * 1_100, 1_000_000), "events", 0, 2),  # then the key's
    ]
    whole = _run(raws, 3)
    assert whole == _run(raws, 1)
    assert whole[2] == [("hostile_keyed", "late", 1), ("hostile_keyed", "invalid", 2)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batch_with_key_errors_gives_what_its_records_give_one_at_a_time(seed: int) -> None:
    raws = _records(seed, 120)
    one = _run(raws, 1)
    reasons = {d[1] for d in one[0] + one[2]}
    assert {"late", "invalid"} <= reasons, reasons
    assert len(one[3]) > 30
    for size in (len(raws), 17):
        assert _run(raws, size) == one, size


# ---------------------------------------------------------------- the compiled variance: ties and spans

V = Var("x")


def _split(b: int, e: int) -> list[float]:
    """Exact float partials (smallest first) of ``b * 2**e``."""
    out: list[float] = []
    while b:
        hi = float(b)
        out.append(math.ldexp(hi, e))
        b -= int(hi)
    return out[::-1] or [0.0]


def _outcome(f: Any, acc: list[Any]) -> tuple[bool, str]:
    """``f``'s (compiled, value's repr) of a copy of ``acc``, or (False, its error): sums of squares beyond
    float64 (not valid states) make Python's division raise OverflowError."""
    try:
        compiled, value = f([acc[0], acc[1][:], acc[2][:]])
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return compiled, repr(value)


def _same(acc: list[Any]) -> bool:
    """The compiled value of ``acc`` is the Python one (repr: the bits, None, NaN, the error); and whether
    the compiled code took it."""
    _, want = _outcome(lambda a: (False, V.value(a, 0)), acc)
    compiled, got = _outcome(lambda a: _native._var_value_for_test(a, False), acc)
    assert got == want, acc
    return compiled


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=2**32 - 1) | st.sampled_from([2, 3, 6, 7, 65_537, 2**32 - 1]),
    mant=st.integers(min_value=2**53, max_value=2**54 - 1).map(lambda m: m | 1),  # 54 bits, odd: a tie
    e=st.integers(min_value=-900, max_value=900),
    a=st.integers(min_value=-(2**60), max_value=2**60) | st.just(0),
    ea=st.integers(min_value=-500, max_value=400),
    below=st.integers(min_value=0, max_value=5),
    off=st.sampled_from([0, 0, 1, -1]),
)
def test_the_variance_rounds_ties_as_python(
    n: int, mant: int, e: int, a: int, ea: int, below: int, off: int
) -> None:
    """(n * B - A**2) / (n * (n - 1)) made a tie at 53 bits (or a unit off one): B solved from it."""
    m = min(e, 2 * ea) - below
    num = (mant << (e - m)) * n * (n - 1) + off
    nb = num + ((a * a) << (2 * ea - m))
    b = nb // n
    try:
        acc = [n, _split(a, ea), _split(b, m)]
    except OverflowError:  # B beyond float64
        return
    _same(acc)


@pytest.mark.parametrize("span", range(318, 328))
def test_partials_spread_to_the_limbs_width(span: int) -> None:
    """Partials of full 53-bit mantissas spread over ``span`` bits (the compiled limit: 323), of every sign
    pattern and count, as a sum and as a sum of squares: the Python value, compiled up to the limit."""
    top = (1 << 53) - 1
    compiled = 0
    for base in (-1074, -600, 0, 971 - span):  # from the smallest normal: every mantissa exact
        for k in (2, 3, 64):
            es = [base + span * i // (k - 1) for i in range(k)]
            for signs in ((1, 1), (1, -1), (-1, 1)):
                parts = [math.ldexp(signs[i % 2] * top, x) for i, x in enumerate(es)]
                for n in (2, 3, 2**32 - 1):
                    for acc in ([n, parts, [1.0]], [n, [1.0], [abs(p) for p in parts]], [n, parts, parts]):
                        compiled += _same(acc)
    assert (compiled > 0) == (span <= 323)
