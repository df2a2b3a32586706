"""Windows and durations against a brute-force oracle: which event times count at reference time ``t``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.errors import DefinitionError
from features.windows import Window, duration_ms, hopping, lifetime, sliding, tumbling

pytestmark = pytest.mark.unit


def oldest_start(size: int, step: int, t: int) -> int:
    """Brute force: the start of the oldest window [k*step, k*step + size) that holds t."""
    k = t // step
    while (k - 1) * step + size > t:  # window k-1 still holds t
        k -= 1
    assert k * step <= t < k * step + size
    return k * step


@given(
    size=st.integers(1, 50),
    step=st.integers(1, 50),
    t=st.integers(-1_000, 1_000),
)
def test_hopping_lower_is_the_oldest_window_holding_t(size: int, step: int, t: int) -> None:
    if step > size:
        return
    assert hopping(size, step).lower(t) == oldest_start(size, step, t)


def test_hopping_with_a_step_that_does_not_divide_the_size() -> None:
    # windows of 10 every 3 holding t=20 start at 12, 15 and 18: the oldest starts at 12 (the formula
    # used before issue 12 gave 11, an event time no window holding 20 covers)
    assert hopping(10, 3).lower(20) == 12


@given(size=st.integers(1, 10**6), t=st.integers(-(10**9), 10**9))
def test_sliding_and_tumbling_lower_bounds(size: int, t: int) -> None:
    exact = sliding(size, resolution=1)  # 1 ms tiles: the exact window t - size < ts <= t
    assert exact.lower(t) == t - size + 1
    tiled = sliding(size)  # the size // R tiles ending with t's: never older than size, up to R shorter
    r = tiled.resolution_ms
    lo = tiled.lower(t)
    assert lo is not None and lo % r == 0 and t - size < lo <= t - size + r
    lo = tumbling(size).lower(t)
    assert lo is not None and lo % size == 0 and lo <= t < lo + size
    assert hopping(size, size).lower(t) == lo  # a hopping window whose step is its size tumbles


def brute_default(size: int) -> int:
    return max(d for d in range(1, max(1, size // 60) + 1) if size % d == 0)


@given(size=st.integers(1, 200_000))
def test_the_default_resolution_is_the_largest_divisor_within_a_sixtieth(size: int) -> None:
    assert sliding(size).resolution_ms == brute_default(size)


def test_resolutions_of_each_kind_and_their_refusals() -> None:
    assert [sliding(x).resolution_ms for x in ("1h", "30m", "10m", "90s", "1m", "1s")] == [
        60_000,
        30_000,
        10_000,
        1_500,
        1_000,
        10,
    ]
    assert (
        sliding("1h", resolution="5m").resolution_ms == 300_000 and sliding("1h", 1).lower(7) == 7 - 3_599_999
    )
    assert tumbling("1h").resolution_ms == 3_600_000 and hopping("10m", "3m").resolution_ms == 180_000
    assert lifetime().resolution_ms == 0  # from the view's lateness (features.tiles)
    assert sliding("1h").key == "1h@60000" and sliding("1h", resolution="1s").key == "1h@1000"
    assert sliding("1h").label == sliding("1h", resolution="1s").label == "1h"  # feature names unchanged
    assert sliding("1h") != sliding("1h", resolution="1s")  # but two windows: their tiles differ
    for bad in ("7s", "2h", 0):
        with pytest.raises(DefinitionError, match="must be positive and divide the size"):
            sliding("1h", resolution=bad)
    with pytest.raises(DefinitionError, match="does not tile it"):
        Window("hopping", 10, 3, 2)
    with pytest.raises(DefinitionError, match="does not tile it"):
        Window("sliding", 10, 0, 3)


def test_tile_ranges_at_their_edges() -> None:
    w = sliding(60, resolution=10)  # six tiles of 10 ms
    assert [w.first_tile(t) for t in (0, 9, 10, 59, 60, 69, -1)] == [-5, -5, -4, 0, 1, 1, -6]
    assert [w.lower(t) for t in (59, 60, 69)] == [0, 10, 10]  # at 69: 10..69 (60 ms), at 60: 10..60
    h = hopping(10, 3)  # windows [3j, 3j + 10): at 20 the oldest holding it starts at 12 (tile 4)
    assert [h.first_tile(t) for t in (20, 21, 22, 23)] == [4, 4, 5, 5]
    assert tumbling(10).first_tile(-1) == -1 and tumbling(10).first_tile(0) == 0


def test_lifetime_has_no_bound_and_no_extent() -> None:
    assert lifetime().lower(123) is None
    assert lifetime().extent_ms == 0
    assert sliding("1m").extent_ms == 60_000 and hopping("3m", "1m").extent_ms == 180_000


def test_hopping_refuses_a_zero_step_at_definition_time() -> None:
    # accepted, it divided by zero at the first event
    with pytest.raises(DefinitionError, match=r"0 < step <= size, got size '1h' and step 0"):
        hopping("1h", 0)
    with pytest.raises(DefinitionError, match="0 < step <= size"):
        hopping("1h", "0s")
    with pytest.raises(DefinitionError, match="0 < step <= size"):
        hopping("1m", "2m")
    assert hopping("1m", "1m") == Window("hopping", 60_000, 60_000)


@pytest.mark.parametrize("make", [sliding, tumbling])
def test_sized_windows_refuse_zero_and_accept_one_millisecond(make: object) -> None:
    assert callable(make)
    kind = make.__name__
    with pytest.raises(DefinitionError, match=f"^a {kind} window needs a positive size$"):
        make(0)
    with pytest.raises(DefinitionError, match=f"^a {kind} window needs a positive size$"):
        make("0m")
    assert make(1) == Window(kind, 1, 0, 1)  # type: ignore[arg-type]


def test_durations() -> None:
    assert duration_ms(0) == 0
    assert duration_ms(" 5 m ") == 300_000
    assert [duration_ms(f"2{u}") for u in ("ms", "s", "m", "h", "d", "w")] == [
        2,
        2_000,
        120_000,
        7_200_000,
        172_800_000,
        1_209_600_000,
    ]
    with pytest.raises(DefinitionError, match="duration -1 must not be negative"):
        duration_ms(-1)
    for bad in (True, 1.5, "1.5s", "5 minutes", "-5s", ""):
        with pytest.raises(DefinitionError, match="expected milliseconds or a string"):
            duration_ms(bad)  # type: ignore[arg-type]


def test_labels_use_the_largest_unit_that_divides() -> None:
    assert sliding(1_500).label == "1500ms"
    assert sliding(90_000).label == "90s"
    assert sliding("120m").label == "2h"
    assert sliding("14d").label == "2w"
    assert tumbling("1h").label == "1h_tumbling"
    assert hopping("1d", "90m").label == "1d_every_90m"
    assert lifetime().label == "lifetime"
