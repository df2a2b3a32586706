"""Serving follows a spec's champion pointer (issue 14) only to a model whose verified header names the
spec and the role ``champion``; anything else in the pointer (a retired model, another spec's model, a
name that is not the spec's challenger, a model not loaded yet) leaves the spec's own model scoring. The
registry's decisions: kept by id (recording one again replaces it), in event-time order, capped, and a
malformed one skipped. In-process registry: the Redis one is exercised by test_lifecycle_serving.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from river import linear_model, metrics

from serving.models import ModelCache, _announced
from streaming.learning.keys import generate
from streaming.learning.registry import MemoryRegistry
from streaming.learning.spec import ModelSpec
from streaming.learning.state import new_state

pytestmark = pytest.mark.unit

SIGNER = generate()
SPEC = ModelSpec("m", "binary", "zip", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))


def registry() -> MemoryRegistry:
    reg = MemoryRegistry(signer=SIGNER)
    reg.save("m", new_state(SPEC, "m"), {"offsets": {}, "spec": "m", "role": "probation"})
    reg.save("m~5", new_state(SPEC, "m~5"), {"offsets": {}, "spec": "m", "role": "champion"})
    reg.save("m~7", new_state(SPEC, "m~7"), {"offsets": {}, "spec": "m", "role": "retired"})
    reg.save("x~1", new_state(SPEC, "x~1"), {"offsets": {}, "spec": "x", "role": "champion"})
    reg.save("mm", new_state(SPEC, "mm"), {"offsets": {}, "spec": "m", "role": "champion"})
    return reg


def served(reg: MemoryRegistry, pointer: str | None) -> Any:
    if pointer is not None:
        reg.set_champion("m", pointer)
    cache = ModelCache(reg, {})
    asyncio.run(cache.refresh_all())
    loaded = cache.serving("m")
    return loaded.state.name if loaded is not None else None  # the API loads only model states


@pytest.mark.parametrize(
    ("pointer", "scores"),
    [
        (None, "m"),  # no lifecycle: the spec's own
        ("m~5", "m~5"),  # the champion
        ("m", "m"),  # rolled back
        ("m~7", "m"),  # retired: its header says so
        ("x~1", "m"),  # another spec's champion
        ("mm", "m"),  # a name that is not the spec's challenger, though its header names the spec
        ("m~404", "m"),  # nothing there
    ],
)
def test_serving_follows_the_pointer_only_to_the_specs_champion(pointer: str | None, scores: str) -> None:
    assert served(registry(), pointer) == scores


def test_announcements() -> None:
    assert _announced(b'{"model": "m", "champion": "m~5"}') == ("m", "m~5")
    assert _announced(b'{"model": "m", "version": 3}') == ("m", None)
    assert _announced(b'{"model": "m", "champion": 5}') == ("m", None)
    assert _announced(b"[1]") == (None, None) and _announced(b"{") == (None, None)


def test_decisions_are_kept_by_id_in_order_and_capped() -> None:
    reg = MemoryRegistry(signer=SIGNER)
    reg.DECISIONS = 3  # type: ignore[misc]
    for ts in (5, 1, 9, 7):
        reg.record_decision("m", {"id": f"challenger:m~{ts}:{ts}", "kind": "challenger", "ts": ts})
    reg.record_decision("m", {"id": "challenger:m~9:9", "kind": "challenger", "ts": 9, "again": True})
    kept = reg.decisions("m")
    assert [d["ts"] for d in kept] == [5, 7, 9] and kept[-1]["again"] is True  # the oldest dropped
    reg._decisions["m"]["bad"] = b"{not json"  # what anyone with Redis access could write
    reg._decisions["m"]["odd"] = b'{"id": "odd", "ts": "late"}'
    assert [d["ts"] for d in reg.decisions("m")] == [5, 7, 9]
    reg.record_decision("m", {"id": "p", "kind": "promotion", "ts": 8, "position": ("t", 0, 3)})
    kept = reg.decisions("m")  # the malformed ones dropped first, then the oldest
    assert [d["ts"] for d in kept] == [7, 8, 9] and kept[1]["position"] == ["t", 0, 3]
    assert set(reg._decisions["m"]) == {"challenger:m~7:7", "p", "challenger:m~9:9"}
    assert reg.decisions("other") == [] and reg.champion("other") is None


def test_the_champion_and_the_decisions_on_metrics() -> None:
    from prometheus_client import REGISTRY

    reg = registry()
    reg.set_champion("m", "m~5")
    reg.record_decision("m", {"id": "a", "kind": "challenger", "ts": 1})
    reg.record_decision("m", {"id": "b", "kind": "promotion", "ts": 2})
    cache = ModelCache(reg, {})
    asyncio.run(cache.refresh_all())
    value = REGISTRY.get_sample_value
    assert value("rivulet_champion", {"spec": "m", "model": "m~5"}) == 1
    assert value("rivulet_lifecycle_decisions", {"spec": "m", "kind": "promotion"}) == 1
    assert value("rivulet_lifecycle_decisions", {"spec": "m", "kind": "rollback"}) == 0
    reg.set_champion("m", "m")  # rolled back: the old label goes
    asyncio.run(cache.follow_champion("m"))
    assert value("rivulet_champion", {"spec": "m", "model": "m~5"}) is None
    assert value("rivulet_champion", {"spec": "m", "model": "m"}) == 1
