"""The compiled path's pieces held to the Python ones they were written from (features._native; the whole
step is compared with the generated and the generic paths in test_fused.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features import _native
from features.examples import customer, site
from features.pipeline import FeaturePipeline
from features.store import MemoryStore
from features.summaries import grow
from streaming.settings import Settings

pytestmark = pytest.mark.unit

# within what the overflow rule lets a sum see (features.engine: no partial can overflow)
FLOATS = st.floats(-1e300, 1e300, allow_nan=False, width=64)
EDGES = st.sampled_from([1e16, -1e16, 1.0, 0.1, -0.0, 5e-324, 1e300, -1e300])


@settings(max_examples=400, deadline=None, derandomize=True)
@given(xs=st.lists(FLOATS | EDGES, max_size=40), start=st.integers(0, 2))
@example(xs=[1e16, 1.0, -1e16, 1e-16, 3.0, 1e300, -1e300], start=1)
def test_the_compiled_grow_keeps_the_same_partials(xs: list[float], start: int) -> None:
    """The same partials, bit for bit (the stored state is them), after every addition; their total the
    exact sum (math.fsum of the values) whenever it is finite."""
    head = [7] * start  # a mean's count, or nothing
    py, c = [*head, 0.0], [*head, 0.0]
    for x in xs:
        grow(py, x, start)
        _native.grow(c, start, x)
        assert [repr(v) for v in c] == [repr(v) for v in py]
    assert math.fsum(c[start:]) == math.fsum(xs)


def test_the_workers_path_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """RIVULET_FEATURES_NATIVE=false: the generated Python path (an operator's switch for a suspected fault
    in the compiled one); unset: compiled, where built (the tests require it built)."""
    monkeypatch.setenv("RIVULET_FEATURES_NATIVE", "false")
    off = Settings().features_native
    assert off is False
    assert [e.path for e in FeaturePipeline([customer, site], MemoryStore(), native=off).engines] == [
        "fused",
        "fused",
    ]
    monkeypatch.delenv("RIVULET_FEATURES_NATIVE")
    default = Settings().features_native
    assert default is None
    assert FeaturePipeline([customer], MemoryStore(), native=default).engines[0].path == "native"
