"""The feature worker's garbage collection (``tune_gc``): what exists at start is frozen, the youngest
generation is collected every 50,000 allocations, and the full collection runs only every
``RIVULET_FEATURES_GC_FULL_EVERY`` middle-generation ones. Run in a child
interpreter: freezing the test process would keep its objects forever."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROBE = """
import gc, json
from streaming.runtime.feature_worker import tune_gc
from streaming.settings import Settings
before = gc.get_threshold()
tune_gc(Settings())
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def probe(**env: str) -> dict[str, list[int] | int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, check=True, timeout=120
    )
    return json.loads(out.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_full_collection_runs_at_the_setting_and_the_start_up_objects_are_frozen() -> None:
    got = probe(RIVULET_FEATURES_GC_FULL_EVERY="1234")
    before, after = got["before"], got["after"]
    assert isinstance(before, list) and isinstance(after, list)
    assert before[0] == 700 and after == [50_000, before[1], 1234]  # the middle one as Python has it
    assert isinstance(got["frozen"], int) and got["frozen"] > 1_000  # the imports' objects, at least


def test_the_default_runs_the_full_collection_a_hundred_times_less_often_than_python() -> None:
    after = probe()["after"]
    assert isinstance(after, list) and after[2] == 1_000


def test_a_setting_out_of_range_is_refused() -> None:
    with pytest.raises(subprocess.CalledProcessError):
        probe(RIVULET_FEATURES_GC_FULL_EVERY="0")
