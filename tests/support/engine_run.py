"""Events through the feature engine alone, as the worker applies them: the engine tests' common runner."""

from __future__ import annotations

from collections.abc import Callable
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


# One row of a hypothesis stream for :func:`run_rows`: how far the time moves on, how far back the event is
# (beyond the lateness of the views that use it, 300 ms: late), its value, and whether the state goes
# through its JSON first.
def row_lists(*extra: float) -> Any:
    """The strategy of :func:`run_rows`'s rows; ``extra`` values join the numbers an event may hold."""
    from hypothesis import strategies as st

    values = st.one_of(st.none(), st.integers(-50, 50), st.floats(-1e3, 1e3), *(st.just(x) for x in extra))
    row = st.tuples(st.integers(0, 400), st.integers(0, 350), values, st.booleans())
    return st.lists(row, min_size=1, max_size=60)


def run_rows(
    engine: FeatureEngine, rows: list[Any], after: Callable[[EntityState], None] | None = None
) -> tuple[EntityState, list[Event], dict[str, Any], set[str]]:
    """The rows' events of one entity ``u`` through ``engine`` (``after(state)`` after each), its state
    through checked JSON where a row says so; the last state, the events, the vectors and the late ones."""
    state = engine.new_state()
    events: list[Event] = []
    got: dict[str, Any] = {}
    late: set[str] = set()
    now = 10_000
    for i, (step, back, x, trip) in enumerate(rows):
        now += step
        e = Event(event_id=f"e{i}", entity="u", ts=now - back, fields={"x": x})
        events.append(e)
        if trip:
            state = EntityState.from_json(state.to_json())
            assert engine.check_state(state) is None
        try:
            got[e.event_id] = engine.apply(state, e)
        except LateEvent:
            late.add(e.event_id)
        if after is not None:
            after(state)
    return state, events, got, late
