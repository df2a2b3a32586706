"""The learner's compiled hot path (setup.py): built from its own .py, refused when stale, and exactly the
Python it is built from where it writes River's calls out (rolling windows, ADWIN)."""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.machinery
import itertools
import math
import pickle
import random
import types
from pathlib import Path
from typing import Any

import pytest
from river import drift, metrics, utils

import streaming.learning as learning
from streaming.learning import drifts, state

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", learning.COMPILED)
def test_the_hot_path_runs_compiled_from_the_source_beside_it(name: str) -> None:
    """CI builds with a C compiler: each module of the hot path is the extension built from its .py now
    (an install that silently fell back to Python would run at 0.6x of bare River)."""
    module = importlib.import_module(f"streaming.learning.{name}")
    assert module.__file__ is not None
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), module.__file__
    source = Path(module.__file__).parent / f"{name}.py"
    pxd = source.with_suffix(".pxd")  # its C types, where it declares some
    declared = pxd.read_bytes() if pxd.is_file() else b""
    assert hashlib.sha256(source.read_bytes() + declared).hexdigest() == module._COMPILED_FROM


def test_a_build_of_another_source_is_stale(tmp_path: Path) -> None:
    source = tmp_path / "core.py"
    source.write_bytes(b"x = 1\n")
    built = types.ModuleType("core")
    built._COMPILED_FROM = hashlib.sha256(b"x = 1\n").hexdigest()  # type: ignore[attr-defined]
    assert not learning.stale(built, source)
    source.write_bytes(b"x = 2\n")  # edited after the build
    assert learning.stale(built, source)
    assert not learning.stale(types.ModuleType("core"), source)  # the .py itself runs: nothing to check
    assert not learning.stale(built, tmp_path / "absent.py")  # an install without the sources
    source.write_bytes(b"x = 1\n")
    (tmp_path / "core.pxd").write_bytes(b"cdef class C:\n    pass\n")  # its C types changed after the build
    assert learning.stale(built, source)
    built._COMPILED_FROM = hashlib.sha256(source.read_bytes() + b"cdef class C:\n    pass\n").hexdigest()  # type: ignore[attr-defined]
    assert not learning.stale(built, source)


def _cells(cm: Any) -> Any:
    """A confusion matrix as River keeps it, down to the order of its cells and the types of its counts."""
    data = [(k, [(p, v, type(v)) for p, v in row.items()]) for k, row in cm.data.items()]
    return (
        data,
        list(cm.sum_row.items()),
        list(cm.sum_col.items()),
        cm.n_samples,
        (cm.total_weight, type(cm.total_weight)),
        cm._total_true_positives,
    )


LABELS = [True, False, 0, 1, 2, "a", "b", 1.0, 2.5, -0.0, 0.0]


def _entries(window: Any) -> list[Any]:
    """A window's entries with the exact types of their labels (True == 1 == 1.0, 0.0 == -0.0)."""
    return [(args, [(type(v), repr(v)) for v in args], kwargs) for args, kwargs in window]


@pytest.mark.parametrize("seed", range(12))
def test_a_deferred_rolling_window_is_rivers_rolling_window(seed: int) -> None:
    """Oracle: River's own ``Rolling.update``, record by record, beside the deferred window of ``score``;
    read (settled) and pickled at random points; labels of several types (True == 1 == 1.0 share a
    cell), classes appearing late, windows shorter and longer than the backlog. Equal after every read:
    every cell in the same order with the same count and type, and the metrics' values."""
    rng = random.Random(seed)
    window = rng.choice([1, 2, 7, 50, 1_000, 1_500])
    kinds = (metrics.Accuracy, metrics.MacroF1, metrics.MicroPrecision, metrics.WeightedRecall)
    eager = [utils.Rolling(k, window_size=window) for k in kinds]
    lazy = [utils.Rolling(k, window_size=window) for k in kinds]
    state.defer(lazy)
    assert all(state.deferred(r) for r in lazy)
    labels = LABELS[: rng.randint(2, len(LABELS))]
    for i in range(rng.randint(1, 4_000)):
        y, p = rng.choice(labels), rng.choice(labels)
        for r in eager:
            r.update(y, p)
        state.score([(r, False) for r in lazy], y, p, None)
        if rng.random() < 0.003 or i == 0:
            if rng.random() < 0.5:
                lazy = pickle.loads(pickle.dumps(lazy))  # settles (ModelState settles first; so does read)
            for a, b in zip(eager, lazy, strict=True):
                state.settle(b)
                assert _cells(b.obj.cm) == _cells(a.obj.cm), (seed, i)
                assert b.get() == a.get() or (math.isnan(a.get()) and math.isnan(b.get()))
                assert _entries(b.window) == _entries(a.window)
    for a, b in zip(eager, lazy, strict=True):
        state.settle(b)
        assert _cells(b.obj.cm) == _cells(a.obj.cm)
        assert pickle.dumps(b.obj) == pickle.dumps(a.obj)  # the metric itself, byte for byte


def test_weighted_pairs_river_added_are_undone_by_river() -> None:
    """A window restored with pairs River's own update added with a weight: each is reverted with it."""
    eager = utils.Rolling(metrics.Accuracy, window_size=5)
    lazy = utils.Rolling(metrics.Accuracy, window_size=5)
    for y, p, w in [(True, True, 2.0), (True, False, 3.0), (False, False, 0.5)]:
        eager.update(y, p, w=w)
        lazy.update(y, p, w=w)
    state.defer([lazy])
    for y, p in itertools.islice(itertools.cycle([(True, True), (False, True), (False, False)]), 11):
        eager.update(y, p)
        state.score([(lazy, False)], y, p, None)
    state.settle(lazy)
    assert _cells(lazy.obj.cm) == _cells(eager.obj.cm)


def test_unhashable_or_odd_labels_take_the_eager_path_and_raise_there() -> None:
    """Only hashable scalars are deferred: anything else is scored at once, so a label that breaks the
    metric raises inside ``score`` (the core quarantines the model there), never later in a read."""
    lazy = utils.Rolling(metrics.Accuracy, window_size=3)
    state.defer([lazy])
    state.score([(lazy, False)], True, True, None)
    with pytest.raises(TypeError):
        state.score([(lazy, False)], ["unhashable"], True, None)
    assert lazy._added == []  # the earlier pair was settled before the eager one


def test_model_state_values_and_snapshots_are_settled() -> None:
    from river import linear_model

    from streaming.learning.core import LearnerCore
    from streaming.learning.spec import ModelSpec

    spec = ModelSpec("m", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
    core = LearnerCore([spec])
    oracle = utils.Rolling(metrics.Accuracy, window_size=spec.rolling_window)
    rng = random.Random(3)
    for i in range(2_500):
        x, y = {"a": rng.random()}, rng.random() < 0.3
        (pred,) = core.on_record(str(i), i, x, label=y)
        oracle.update(y, pred.label)
    st = core.models["m"]
    restored = pickle.loads(pickle.dumps(st))
    assert restored.rolling[0]._added == []  # a snapshot holds the metric as River keeps it
    assert _cells(restored.rolling[0].obj.cm) == _cells(oracle.obj.cm)
    assert st.metric_values()["rolling_Accuracy"] == oracle.get()
    assert _cells(st.rolling[0].obj.cm) == _cells(oracle.obj.cm)


def test_a_state_pickled_before_windows_were_deferred_is_deferred_when_restored() -> None:
    from river import linear_model

    from streaming.learning.spec import ModelSpec

    spec = ModelSpec("m", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
    st = state.new_state(spec, "m")
    for r in st.rolling:  # as an older Rivulet wrote it: River's own Rolling, nothing held back
        del r.__dict__["_added"]
        r.__class__ = utils.Rolling
    restored = pickle.loads(pickle.dumps(st))
    assert all(type(r) is state.DeferredRolling and r._added == [] for r in restored.rolling)
    assert all(state.deferred(r) for r in restored.rolling)


def test_the_written_out_adwin_is_rivers_adwin(monkeypatch: pytest.MonkeyPatch) -> None:
    """``loss_drifted`` writes ADWIN's update out: the same drifts at the same records as River's calls,
    on a stream whose error rate jumps twice."""
    from river import linear_model

    from streaming.learning.spec import ModelSpec

    assert drifts._ADWIN_PLAIN
    spec = ModelSpec("m", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
    rng = random.Random(5)
    stream = [rng.random() < (0.1 if i < 3_000 else 0.6 if i < 6_000 else 0.05) for i in range(9_000)]

    def run() -> list[int]:
        st = state.new_state(spec, "m")
        assert type(st.loss_detector) is drift.ADWIN
        return [i for i, wrong in enumerate(stream) if drifts.loss_drifted(st, True, not wrong)]

    written_out = run()
    monkeypatch.setattr(drifts, "_ADWIN_PLAIN", False)
    assert written_out == run() and written_out  # the drifts themselves: the test can fail


def test_a_deferred_window_holds_one_entry_per_distinct_pair() -> None:
    """The entries of a deferred window are shared, one per distinct pair of exact types: a record adds no
    object that lives a window's length (thousands of them a second reached the garbage collector's oldest
    generation and set off collections of the whole process, 80 ms each)."""
    lazy = utils.Rolling(metrics.Accuracy, window_size=500)
    state.defer([lazy])
    pairs = [(True, True), (True, False), (1, True), (0, False), (float("nan"), False)]
    for i in range(3_000):
        state.score([(lazy, False)], *pairs[i % len(pairs)], None)
    state.settle(lazy)
    distinct = {id(entry) for entry in lazy.window if type(entry[0][0]) is not float}  # floats: not shared
    assert len(distinct) == 4
    assert [type(a[0]) for a, _ in list(lazy.window)[:5]] == [bool, bool, int, int, float]
    before = len(state._ENTRIES)
    for i in range(state.MAX_ENTRIES + 10):  # distinct pairs past the bound: entries made, not kept
        state.score([(lazy, False)], f"class {i}", "x", None)
    state.settle(lazy)
    assert len(state._ENTRIES) <= state.MAX_ENTRIES and len(state._ENTRIES) >= before


def _lifecycle_states() -> dict[str, Any]:
    """A champion and a challenger after 300 records, labels inline, late and pending, a watched input."""
    from river import linear_model, preprocessing
    from river.datasets import synth

    from streaming.learning.core import LearnerCore
    from streaming.learning.evidence import PromotionPolicy
    from streaming.learning.spec import DriftPolicy, ModelSpec

    spec = ModelSpec(
        "lr",
        "binary",
        "v",
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics=(metrics.Accuracy, metrics.F1),
        drift=DriftPolicy(reaction="challenger", max_challengers=2, features=("age",)),
        promotion=PromotionPolicy(),
    )
    core = LearnerCore([spec])
    core.challenge("lr", -1)
    data = list(itertools.islice(synth.Agrawal(seed=1), 300))
    for i, (x, y) in enumerate(data):
        core.on_record(str(i), i, x, label=y if i % 3 else None)
        if i % 3 == 0 and i > 10:
            core.on_label(str(i - 9), data[i - 9][1], i)
    return dict(core.models)


def test_a_state_pickles_to_the_bytes_the_dataclass_it_was_wrote() -> None:
    """ModelState and Recent are C types where compiled (state.pxd); their pickles are byte for byte those
    of the dataclasses they replaced (digests taken with the code before, a92b984), so versions stored
    before verify as rebuilt, and a compiled and a Python learner write the same snapshots."""
    digests = {
        n: hashlib.sha256(pickle.dumps(st, protocol=5)).hexdigest() for n, st in _lifecycle_states().items()
    }
    assert digests == {
        "lr": "7dc975364fc63914dc99b63c0da5e4889d4bb85dcc5bdc0c14d1292b0e454509",
        "lr~-1": "484f8d4dc944994370fe1360ae52fb9c71e259d74b1a8a1776fd37c7c80fed14",
    }


def test_a_state_keeps_the_dataclass_behaviour_it_had() -> None:
    states = _lifecycle_states()
    st = states["lr"]
    # equal fields, as a dataclass compares (River's models compare by identity: a copy, not a pickle)
    assert copy.copy(st) == st and st != states["lr~-1"] and pickle.loads(pickle.dumps(st.seen)) == st.seen
    assert repr(st).startswith("ModelState(name='lr', spec='lr', task='binary', model=")
    with pytest.raises(TypeError):
        hash(st)
    st.note = "an attribute no field holds"  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(st)).note == "an attribute no field holds"
