"""The hostile snapshots of test_typed_state_attack.py stored in the real Redis registry (scripts/services):
refused when opened, the version before them restored (an integration module: a module has one marker)."""

from __future__ import annotations

from typing import Any

import pytest

from streaming.learning.registry import RedisRegistry
from streaming.learning.state import ModelState, new_state
from tests.streaming.learning.test_typed_state_attack import HOSTILE, SPEC, _Crafted
from tests.support.learning import SIGNER

pytestmark = pytest.mark.integration


def test_hostile_snapshots_in_redis_are_refused_and_the_version_before_loads(
    settings: Any, redis_client: Any
) -> None:
    """Compiled, opening these raised TypeError (or loaded a state no Rivulet writes, as Python)."""
    registry = RedisRegistry(redis_client, settings.redis_prefix, signer=SIGNER)
    good = new_state(SPEC, "m")
    good.counters["learned"] = 7
    assert registry.save("m", good, {"n_learned": 7}) == 1
    for version, case in enumerate(HOSTILE, start=2):
        assert registry.save("m", _Crafted(ModelState, HOSTILE[case]), {"n_learned": 0}, keep=100) == version
        opened, refused = registry.load_latest("m")
        assert opened.header["version"] == 1 and opened.state.n_learned == 7, case
        assert len(refused) == version - 1 and all("does not load" in r for r in refused), case
