"""The compiled distinct count (features._distinct) against the Python functions of features.distinct (the
reference, kept as ``python_*``): the same hashes, the same lists (the same int objects in them), the same
sketches, the same errors, for every kind of value and every shape of accumulator, odd ones included; and an
engine whose distinct counts run the Python functions leaves the same states as one running the compiled
ones. The extension must be built: a run without it fails (ImportError), never skips."""

from __future__ import annotations

import copy as copying
from dataclasses import dataclass
from typing import Any

import features._distinct as N
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import distinct as D
from features.aggregations import Count, DistinctCount
from features.definitions import FeatureView
from features.engine import EntityState, FeatureEngine
from features.errors import LateEvent
from features.windows import sliding
from tests.support.streams import stream

pytestmark = pytest.mark.unit

INT64 = 2**63


class Int(int):
    def __int__(self) -> int:  # int(v) in the Python hash: the subclass decides
        return 7


class Float(float):
    def is_integer(self) -> bool:
        return False


class Str(str):
    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return b"other"


class PosingAsStr:
    """isinstance(x, str) is True through ``__class__``: the Python hash encodes it (and fails)."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return str


ODD = [Int(5), Float(2.0), Float(2.5), Str("x"), PosingAsStr(), [1], (1,), b"1", object(), {}, 1j]

values = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([INT64 - 1, -INT64, INT64, -INT64 - 1, 2**64, 0, -1]),
    st.floats(),  # nan, inf, subnormals, -0.0, 1e300 ...
    st.integers(min_value=-(2**65), max_value=2**65).map(float),  # integral floats, within int64 or not
    st.sampled_from([-0.0, 0.0, 2.0**63, -(2.0**63), 2.0**63 - 1024, 1e300, -1e300, 5e-324, float("nan")]),
    st.booleans(),
    st.text(st.characters(exclude_categories=[])),  # lone surrogates included
    st.text(alphabet="0123456789", max_size=6),
    st.none(),
    st.sampled_from(ODD),
)


def outcome(fn: Any, *args: Any) -> Any:
    """What a call returns, or the error it raises (type and message)."""
    try:
        return ("returned", fn(*args))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def test_the_compiled_functions_take_the_public_names() -> None:
    assert (D.hash_value, D.add, D.merge, D.copy, D.value) == (N.hash_value, N.add, N.merge, N.copy, N.value)
    assert D.python_hash_value is not N.hash_value and D.python_add.__module__ == "features.distinct"
    assert N.EXACT == D.DISTINCT_EXACT


@settings(max_examples=3000, deadline=None)
@given(values)
def test_hash_value_is_the_python_one(v: Any) -> None:
    assert outcome(N.hash_value, v) == outcome(D.python_hash_value, v)


def test_hash_value_of_the_edges() -> None:
    edge = [1, 1.0, True, False, 0, -0.0, "", "1", "\ud800", "é", "\U0001f600", None, 2.5, 0.1, -1.5e-310]
    edge += [float("inf"), -float("inf"), float("nan"), 1e300, 2.0**63, -(2.0**63), 2.0**63 - 1024]
    edge += [INT64 - 1, -INT64, INT64, -INT64 - 1, 10**4299, *ODD]
    for v in edge:
        assert outcome(N.hash_value, v) == outcome(D.python_hash_value, v), repr(v)
    assert N.hash_value(1) == N.hash_value(1.0) == N.hash_value(True) != N.hash_value("1")
    # beyond Python's limit on the digits of an int's repr: the same ValueError
    assert outcome(N.hash_value, 10**5000)[:2] == ("raised", ValueError)
    assert outcome(N.hash_value, 10**5000) == outcome(D.python_hash_value, 10**5000)


def fresh(acc: Any) -> Any:
    """An equal accumulator of its own, its ints included."""
    return copying.deepcopy(acc)


def filled(vs: Any) -> list[Any]:
    """The accumulator of the values the Python hash takes (the others raise)."""
    acc = D.empty()
    for v in vs:
        if outcome(D.python_hash_value, v)[0] == "returned":
            D.python_add(acc, v)
    return acc


def same_state(a: Any, b: Any) -> None:
    assert a == b
    if type(a) is not list:
        return
    assert [type(x) for x in a] == [type(x) for x in b]
    if type(a) is list and a and type(a[0]) is list:
        assert [type(h) for h in a[0]] == [type(h) for h in b[0]]


def both(fn_native: Any, fn_python: Any, acc: Any, *args: Any) -> tuple[Any, Any]:
    """``fn`` of each implementation on its own copy of ``acc`` (the sketches' cache emptied before each:
    a sketch's bytes can depend on it); the two outcomes and accumulators must be equal."""
    a, b = fresh(acc), fresh(acc)
    D._CACHE.clear()
    got = outcome(fn_native, a, *args)
    D._CACHE.clear()
    want = outcome(fn_python, b, *args)
    assert got == want
    same_state(a, b)
    return a, b


@settings(max_examples=400, deadline=None)
@given(st.lists(values, max_size=90), st.lists(values, max_size=8))
def test_add_is_the_python_one(start: list[Any], more: list[Any]) -> None:
    acc = filled(start)
    for v in more:
        acc, _ = both(N.add, D.python_add, acc, v)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=200), min_size=60, max_size=200))
def test_add_crossing_64_is_the_python_one(vs: list[int]) -> None:
    native, python = D.empty(), D.empty()
    for v in vs:
        D._CACHE.clear()
        N.add(native, v)
        D._CACHE.clear()
        D.python_add(python, v)
        same_state(native, python)
    assert type(native[0]) is (list if len(set(vs)) <= 64 else str)


def test_add_keeps_the_list_it_adds_to() -> None:
    acc = filled([1, 2])
    held = acc[0]
    N.add(acc, "new")
    assert acc[0] is held and len(held) == 3
    N.add(acc, None)
    N.add(acc, 1.0)
    assert acc == filled([1, 2, "new"])


accumulators = st.one_of(
    st.lists(values, max_size=40).map(filled),
    st.lists(st.integers(min_value=0, max_value=120), max_size=120).map(filled),  # lists and sketches
    st.just(D.empty()),
)


@settings(max_examples=600, deadline=None)
@given(accumulators, accumulators)
def test_merge_is_the_python_one(acc: list[Any], other: list[Any]) -> None:
    before = fresh(other)
    a, b = D.python_copy(acc), D.python_copy(acc)  # two lists of the same int objects
    D._CACHE.clear()
    N.merge(a, other)
    D._CACHE.clear()
    D.python_merge(b, other)
    same_state(a, b)
    assert other == before  # other unchanged
    if type(a[0]) is list:  # the same int objects (acc's where both hold a hash, else other's)
        assert [id(h) for h in a[0]] == [id(h) for h in b[0]]


def test_merge_keeps_accs_ints_and_takes_others() -> None:
    acc, other = [[1000, int("3000")]], [[2000, int("3000")]]  # two int objects of one value
    x3, y2, y3 = acc[0][1], other[0][0], other[0][1]
    assert x3 is not y3
    for fn in (N.merge, D.python_merge):
        a = [list(acc[0])]
        fn(a, other)
        assert a == [[1000, 2000, 3000]] and a[0][1] is y2 and a[0][2] is x3


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=70, unique=True),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=70, unique=True),
)
def test_merge_of_lists_of_every_size(xs: list[int], ys: list[int]) -> None:
    """Sorted unique lists up to 70 long (a union over 64 becomes a sketch): the edges of int64 included."""
    acc, other = [sorted(xs)], [sorted(ys)]
    a, _ = both(N.merge, D.python_merge, acc, other)
    if len(set(xs) | set(ys)) <= 64 and len(xs) <= 64 and len(ys) <= 64 and xs:
        assert a == [sorted(set(xs) | set(ys))]


def test_merge_shapes() -> None:
    small, other_small = filled(range(10)), filled(range(5, 30))
    big, other_big = filled(range(100)), filled(range(50, 300))
    edge = filled(range(40)), filled(range(40, 64)), filled(range(40, 65))
    shapes = [D.empty(), small, other_small, big, other_big, *edge]
    for acc in shapes:
        for other in shapes:
            a, _ = both(N.merge, D.python_merge, acc, other)
    a, _ = both(N.merge, D.python_merge, edge[0], edge[1])
    assert type(a[0]) is list and len(a[0]) == 64
    a, _ = both(N.merge, D.python_merge, edge[0], edge[2])
    assert type(a[0]) is str  # 65: a sketch


ODD_ACCS = [
    [[3, 1]],  # not sorted
    [[1, 1, 2]],  # a duplicate
    [[1, True]],  # a bool
    [[1, 2.0]],  # a float
    [[1, INT64]],  # beyond int64
    [[1, "x"]],
    [list(range(70))],  # too long
    [[]],
    [[5]],
    [],
    [[1], [2]],
    ([1, 2],),
    [None],
    ["not base64"],
    [""],
    [123],
    "x",
    None,
]


@pytest.mark.parametrize("acc", ODD_ACCS, ids=repr)
@pytest.mark.parametrize("other", [*ODD_ACCS, [[0, 2, 4]], [[-(2**63), 2**63 - 1]]], ids=repr)
def test_odd_accumulators_give_the_python_outcome(acc: Any, other: Any) -> None:
    both(N.merge, D.python_merge, acc, other)
    for v in (0, 1, 2, 3, 4, "new", None, 2.0):
        both(N.add, D.python_add, acc, v)
    assert outcome(N.copy, fresh(acc)) == outcome(D.python_copy, fresh(acc))
    assert outcome(N.value, fresh(acc)) == outcome(D.python_value, fresh(acc))


@settings(max_examples=200, deadline=None)
@given(accumulators)
def test_copy_and_value_are_the_python_ones(acc: list[Any]) -> None:
    c, p = N.copy(acc), D.python_copy(acc)
    same_state(c, p)
    assert c is not acc and (type(acc[0]) is not list or c[0] is not acc[0])
    assert N.value(acc) == D.python_value(acc)


@dataclass(frozen=True)
class PythonDistinct(DistinctCount):
    """A distinct count that runs the Python functions (the reference) wherever the engine calls one."""

    def add(self, acc: list[Any], ts: int, seq: int, value: Any) -> None:
        D.python_add(acc, value)

    def merge(self, acc: list[Any], other: list[Any]) -> None:
        D.python_merge(acc, other)

    def copy(self, acc: list[Any]) -> list[Any]:
        return D.python_copy(acc)

    def value(self, acc: list[Any], t: int) -> Any:
        return D.python_value(acc)


def view(distinct: type[DistinctCount]) -> FeatureView:
    return FeatureView(
        name="d",
        aggregations=[
            Count(),
            distinct("zipcode"),
            distinct("device"),  # the busy entity: thousands of values, a sketch
            distinct("elevel", window=sliding("10m", resolution="1m")),
            distinct("car", window=sliding("2m")),
        ],
        allowed_lateness="5m",
    )


def strings(x: Any) -> list[str]:
    if type(x) is str:
        return [x]
    if type(x) is list:
        return [s for y in x for s in strings(y)]
    if type(x) is dict:
        return [s for y in x.values() for s in strings(y)]
    return []


def test_an_engine_leaves_the_states_the_python_functions_leave() -> None:
    events = stream(3_000, entities=10, seed=11, hostile=True, step_ms=2_000, lateness_ms=300_000)
    engines = [FeatureEngine(view(DistinctCount)), FeatureEngine(view(PythonDistinct))]
    states: dict[str, list[EntityState]] = {}
    sketches = 0
    for i, e in enumerate(events):
        held = states.setdefault(e.entity, [en.new_state() for en in engines])
        if i % 7 == 0:  # through the JSON, as the worker keeps states
            held[:] = [EntityState.from_json(s.to_json()) for s in held]
        out = []
        for en, s in zip(engines, held, strict=True):
            D._CACHE.clear()
            try:
                out.append(repr(en.apply(s, e)))
            except LateEvent as exc:
                out.append(str(exc))
        assert out[0] == out[1], f"event {i}"
        assert held[0].to_json() == held[1].to_json(), f"event {i}: states differ"
        assert repr(engines[0].online(held[0])) == repr(engines[1].online(held[1]))
        sketches += sum(len(x) > 50 for x in strings(orjson.loads(held[0].to_json())))
    assert sketches > 300  # sketches were compared, not only lists
