"""Events through the feature engine alone, as the worker applies them: the engine tests' common runner."""

from __future__ import annotations

from typing import Any

from features.definitions import FeatureView
from features.engine import EntityState, FeatureEngine
from features.errors import LateEvent
from features.events import Event


def run_engine(
    view: FeatureView, events: list[Event], every: int = 5
) -> tuple[dict[str, Any], set[str], dict[str, Any]]:
    """Every event through the engine in order, each entity's state through its JSON (checked) at every
    ``every``-th event, as the worker keeps it in Redis; the vectors, the late events and the online
    aggregates (entity -> (watermark, aggregates))."""
    engine = FeatureEngine(view)
    states: dict[str, EntityState] = {}
    vectors: dict[str, Any] = {}
    late: set[str] = set()
    for i, e in enumerate(events):
        key = engine.key(e)
        if key is None:
            continue
        state = states.setdefault(key, engine.new_state())
        if i % every == 0:
            state = states[key] = EntityState.from_json(state.to_json())
            assert engine.check_state(state) is None
        try:
            vectors[e.event_id] = engine.apply(state, e)
        except LateEvent:
            late.add(e.event_id)
    online = {k: (s.watermark, engine.online(s)) for k, s in states.items()}
    return vectors, late, online
