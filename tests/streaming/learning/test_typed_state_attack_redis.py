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


def test_a_signed_payload_that_is_no_model_state_is_refused_where_a_state_is_loaded(
    settings: Any, redis_client: Any
) -> None:
    """A signed version whose payload unpickles to another type (a dict, a list) passed ``load_latest`` and
    reached the learner's restore and the API as a model. With ``kind`` it is refused like a bad snapshot and
    the version before it loads; without, the registry still opens any payload (its doctests store dicts)."""
    registry = RedisRegistry(redis_client, settings.redis_prefix, signer=SIGNER)
    good = new_state(SPEC, "m")
    good.counters["learned"] = 7
    assert registry.save("m", good, {"n_learned": 7}) == 1
    assert registry.save("m", {"n_learned": 9}, {"n_learned": 9}) == 2
    assert registry.save("m", [good], {"n_learned": 7}) == 3

    opened, refused = registry.load_latest("m", kind=ModelState)
    assert opened.header["version"] == 1 and opened.state.n_learned == 7
    assert refused == [
        "m version 3: its payload is a list, not a ModelState",
        "m version 2: its payload is a dict, not a ModelState",
    ]
    current, _ = registry.load_latest("m", current=True, kind=ModelState)
    assert current.header["version"] == 1
    anything = registry.load_latest("m")[0].state
    assert isinstance(anything, list) and anything[0].n_learned == 7
