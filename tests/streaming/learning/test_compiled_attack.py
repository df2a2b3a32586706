"""Attacks on the compiled hot path and the deferred rolling window (setup.py; streaming.learning.state
``score`` / ``settle``): each test is a sequence on which the change behaved otherwise than River's own calls,
or than the tree run before it."""

from __future__ import annotations

import os
import pickle
import random
import sys
from typing import Any

import pytest
from river import linear_model, metrics, utils

from streaming.learning import state
from streaming.learning.core import LearnerCore
from streaming.learning.spec import ModelSpec
from tests.support.processes import pytest_child

pytestmark = pytest.mark.unit


def _cells(cm: Any) -> str:
    """A confusion matrix as River keeps it, down to the order of its cells (repr: NaN keys compare)."""
    return repr(
        (
            [(k, list(row.items())) for k, row in cm.data.items()],
            list(cm.sum_row.items()),
            list(cm.sum_col.items()),
            cm.n_samples,
            cm.total_weight,
            cm._total_true_positives,
        )
    )


def test_the_doctests_of_a_compiled_module_can_be_run_on_their_own() -> None:
    """``pytest streaming/learning/state.py`` ran its doctests before the module was compiled; the import
    mismatch was only silenced by tests/conftest.py, which pytest loads only when it collects tests/."""
    env = {k: v for k, v in os.environ.items() if k != "PY_IGNORE_IMPORTMISMATCH"}
    args = ["-q", "--collect-only", "-p", "no:cacheprovider", "streaming/learning/state.py"]
    done = pytest_child(*args, "streaming/learning/drifts.py", env=env)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "import file mismatch" not in done.stdout


def test_a_nan_label_evicted_after_a_restore_keeps_rivers_cell_order() -> None:
    """A float NaN is no key of the restored matrix (pickle writes floats by value: the window's NaN and
    the matrix's are other objects), so River's revert of its pair creates a cell, at the record that
    evicts it; settle() created every such cell after all the added ones: other cell order, other bytes."""
    nan = float("nan")
    eager: Any = utils.Rolling(metrics.Accuracy, window_size=3)
    lazy: Any = utils.Rolling(metrics.Accuracy, window_size=3)
    state.defer([lazy])
    first: list[tuple[Any, Any]] = [(nan, True), (True, True), (nan, False)]
    for y, p in first:
        eager.update(y, p)
        state.score([(lazy, False)], y, p, None)
    state.settle(lazy)  # as a snapshot of its ModelState does (__getstate__)
    eager, lazy = pickle.loads(pickle.dumps(eager)), pickle.loads(pickle.dumps(lazy))
    later: list[tuple[Any, Any]] = [(False, "x"), ("y", False), (True, "z")]
    for y, p in later:
        eager.update(y, p)
        state.score([(lazy, False)], y, p, None)
    state.settle(lazy)
    assert _cells(lazy.obj.cm) == _cells(eager.obj.cm)
    assert pickle.dumps(lazy.obj) == pickle.dumps(eager.obj)


_P1, _P2, _P5 = 11400714785074694791, 14029467366897019727, 2870177450012600261
_M = (1 << 64) - 1


def _after_first(lane: int) -> int:
    """CPython's tuple hash (xxHash) after the first item of hash ``lane``."""
    acc = (_P5 + lane * _P2) & _M
    return (((acc << 31) | (acc >> 33)) & _M) * _P1 & _M


def _signed(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


class Label:
    """A label that raises when compared with another such label (a hostile producer's type): River's
    confusion matrix never compares two labels whose hashes differ."""

    def __init__(self, h: int) -> None:
        self.h = h

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Label) and other is not self:
            raise TypeError("labels are not comparable")
        return NotImplemented


class Guess:
    """A prediction with a chosen hash and identity equality."""

    def __init__(self, h: int) -> None:
        self.h = h

    def __hash__(self) -> int:
        return self.h


def test_hostile_pairs_evicted_by_deferred_ones_raise_at_the_read_not_at_the_record() -> None:
    """Two pairs River takes (eagerly: they are not scalars) whose labels' hashes differ but whose pairs'
    tuple hashes are equal: River never compares them; settle() put the evicted pairs in a Counter, which
    compares the tuples, so the metric raised in ``metric_values`` or a snapshot's pickle, records later."""
    assert sys.hash_info.width == 64  # the collision is built for CPython's 64-bit tuple hash
    a, b, p = 1_000_003, 2_000_003, 5_000_011
    q = _signed((p + (_after_first(a) - _after_first(b)) * pow(_P2, -1, 1 << 64)) & _M)
    pairs = [(Label(a), Guess(p)), (Label(b), Guess(q))]
    assert hash(pairs[0]) == hash(pairs[1]) and hash(pairs[0][0]) != hash(pairs[1][0])
    eager = utils.Rolling(metrics.Accuracy, window_size=2)
    lazy = utils.Rolling(metrics.Accuracy, window_size=2)
    state.defer([lazy])
    for y, pred in [*pairs, (True, True), (True, False)]:
        eager.update(y, pred)  # River: fine
        state.score([(lazy, False)], y, pred, None)
    state.settle(lazy)  # raised TypeError: labels are not comparable
    assert _cells(lazy.obj.cm) == _cells(eager.obj.cm)


def test_a_rolling_metric_read_through_rivers_api_is_up_to_date() -> None:
    """``LearnerCore`` used directly: after ``on_record``, a state's rolling metric read as River's own
    ``Rolling`` (``get()``, its ``obj``, its repr, the Rolling pickled alone) lags the records by the
    deferred backlog (up to 1,000 records); only ``metric_values()`` and a state's own pickle settle."""
    spec = ModelSpec("m", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))
    core = LearnerCore([spec])
    oracle: Any = utils.Rolling(metrics.Accuracy, window_size=spec.rolling_window)
    rng = random.Random(3)
    for i in range(300):
        y = rng.random() < 0.3
        (pred,) = core.on_record(str(i), i, {"a": rng.random()}, label=y)
        oracle.update(y, pred.label)
    r: Any = core.models["m"].rolling[0]
    assert r.get() == oracle.get()
    assert repr(r) == repr(oracle)
    assert pickle.loads(pickle.dumps(r)).obj.get() == oracle.get()
