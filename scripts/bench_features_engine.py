"""The pure engine measurements of ``scripts/bench_features.py`` (no Kafka, no Redis): ``occupancy`` (one
busy entity, 10 to 10,000 events in a 1 h sliding window) and ``engine`` (against a hand-written loop of
issue 13's tiles). Run them through ``bench_features.py --only occupancy`` and ``--only engine``."""

from __future__ import annotations

import gc
import math
import random
import statistics
import time
from collections import deque
from typing import Any

from benchkit import median_seconds

from features.aggregations import Count, Last, Max, Mean, SinceLast, Std, Sum
from features.definitions import FeatureView
from features.engine import EntityState, FeatureEngine
from features.events import Event
from features.examples import ACTIVITY
from features.windows import sliding
from tests.support.oracle import stream

__all__ = ["bench_engine", "bench_occupancy", "hand_loop"]

T0 = 1_704_067_200_000  # 2024-01-01, the time of the synthetic streams
HOUR = 3_600_000

# ------------------------------------------------------------------ occupancy

OCCUPANCY = FeatureView(
    name="occupancy",
    aggregations=[agg("x", window=sliding("1h")) for agg in (Sum, Mean, Max, Std)]
    + [Count(window=sliding("1h"))],
)
LEVELS = (10, 100, 1_000, 10_000)


def bench_occupancy(per_round: int, rounds: int) -> None:
    """Each level's entity is warmed up with an hour and a tenth of events (the window and the lateness
    full), then every round times ``per_round`` more events at each level in turn (drift hits all alike)."""
    engine, rng = FeatureEngine(OCCUPANCY), random.Random(11)
    streams, states = {}, {}
    for n in LEVELS:
        gap, warm = HOUR // n, n + n // 10
        streams[n] = [
            Event(
                event_id=f"o{n}-{i}",
                entity="busy",
                ts=T0 + i * gap,
                fields={"x": round(rng.uniform(0, 1e3), 2)},
            )
            for i in range(warm + rounds * per_round)
        ]
        states[n] = engine.new_state()
        for e in streams[n][:warm]:
            engine.apply(states[n], e)
    rates: dict[int, list[float]] = {n: [] for n in LEVELS}
    sizes: dict[int, list[int]] = {n: [] for n in LEVELS}
    for r in range(rounds):
        for n in LEVELS:
            warm, state, apply = n + n // 10, states[n], engine.apply
            chunk = streams[n][warm + r * per_round : warm + (r + 1) * per_round]
            t0 = time.perf_counter()
            for e in chunk:
                apply(state, e)
            rates[n].append(per_round / (time.perf_counter() - t0))
            sizes[n].append(len(state.to_json()))
    print(
        f"occupancy: one entity, {len(OCCUPANCY.aggregations)} aggregations over sliding('1h') (default "
        f"resolution), {per_round:,} events a round after an hour of warm-up, medians of {rounds} rounds"
    )
    rate = {n: statistics.median(v) for n, v in rates.items()}
    size = {n: statistics.median(v) for n, v in sizes.items()}
    for n in LEVELS:
        print(f"  {n:>6,} events in the window: {rate[n]:>10,.0f} events/s  state {size[n]:>9,.0f} B")
    print(f"  events/s at 10,000 / at 10: {rate[10_000] / rate[10]:.3f}x (goal >= 0.8x)")
    print(f"  state at 10,000 / at 100:   {size[10_000] / size[100]:.2f}x (goal <= 2x)")


# ------------------------------------------------------------------ engine against a hand-written loop

VIEW = FeatureView(name="bench", aggregations=[*ACTIVITY, Last("car"), SinceLast()], allowed_lateness=0)


def hand_loop(events: list[Event]) -> list[dict[str, Any]]:
    """``VIEW`` by hand, for in-order events, with the tiles of issue 13: ``sliding("10m")`` over 10 s tiles
    (the 60 ending with t's), ``sliding("30m")`` over 30 s tiles, ``tumbling("1h")`` as one tile; running
    count and sum of the 10-minute tiles, a monotonic deque of the 30-minute tiles' maxima."""
    state: dict[str, dict[str, Any]] = {}
    out = []
    for e in events:
        t, f = e.ts, e.fields
        s = state.get(e.entity)
        if s is None:
            s = state[e.entity] = {"n": 0, "w10": deque(), "n10": 0, "sum10": 0.0, "w30": deque(),
                                   "hour": None, "hsum": 0.0, "car": None, "last": None}  # fmt: skip
        k10, k30, hour = t // 10_000, t // 30_000, t // HOUR
        w10, w30 = s["w10"], s["w30"]
        while w10 and w10[0][0] <= k10 - 60:  # [k, count, salary sum] tiles leaving the 10 minutes
            _, c, x = w10.popleft()
            s["n10"] -= c
            s["sum10"] -= x
        while w30 and w30[0][0] <= k30 - 60:  # [k, loan max] tiles leaving the 30 minutes
            w30.popleft()
        if s["hour"] != hour:
            s["hour"], s["hsum"] = hour, 0.0
        vec = dict(f)
        vec["count_lifetime"] = s["n"]
        vec["count_10m"] = s["n10"]
        vec["salary_mean_10m"] = s["sum10"] / s["n10"] if s["n10"] else None
        vec["loan_sum_1h_tumbling"] = s["hsum"]
        vec["loan_max_30m"] = w30[0][1] if w30 else None
        vec["car_last_lifetime"] = s["car"]
        vec["since_last_ms"] = max(0, t - s["last"]) if s["last"] is not None else None
        out.append(vec)
        salary, loan = f["salary"], f["loan"]
        s["n"] += 1
        s["n10"] += 1
        s["sum10"] += salary
        if w10 and w10[-1][0] == k10:
            w10[-1][1] += 1
            w10[-1][2] += salary
        else:
            w10.append([k10, 1, salary])
        while w30 and w30[-1][1] <= loan:
            w30.pop()
        if not w30 or w30[-1][0] != k30:
            w30.append([k30, loan])
        s["hsum"] += loan
        s["car"], s["last"] = f["car"], t
    return out


def rivulet(events: list[Event]) -> list[dict[str, Any]]:
    engine = FeatureEngine(VIEW)
    states: dict[str, EntityState] = {}
    out = []
    for e in events:
        state = states.get(e.entity)
        if state is None:
            state = states[e.entity] = engine.new_state()
        out.append(engine.apply(state, e))
    return out


def same(a: Any, b: Any) -> bool:
    """Equal, floats within rounding (the loop's running sums subtract; the engine's sums are exact)."""
    if type(a) is float or type(b) is float:
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return type(a) is type(b) and bool(a == b)


def bench_engine(n: int, rounds: int) -> None:
    events = sorted(stream(n, entities=200, seed=7, step_ms=500), key=lambda e: e.ts)  # in order
    checked = events[:20_000]
    for i, (a, b) in enumerate(zip(hand_loop(checked), rivulet(checked), strict=True)):
        if a.keys() != b.keys() or not all(same(a[k], b[k]) for k in a):
            wrong = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if not same(a.get(k), b.get(k))}
            raise SystemExit(f"engine: event {i} ({checked[i].ts}): loop and engine differ: {wrong}")
    # the 60,000 events and the check's vectors belong to neither side: frozen, no full collection walks
    # them (one did in every round, ~150-200 ms, and the ratio measured which timed call it landed in;
    # the feature worker freezes what it starts with too, streaming.runtime.feature_worker.tune_gc)
    gc.collect()
    gc.freeze()
    med = median_seconds(rounds, {"loop": lambda: hand_loop(events), "rivulet": lambda: rivulet(events)})
    print(
        f"engine: {n:,} in-order events, 200 entities, view {[a.name for a in VIEW.aggregations]} "
        f"(ACTIVITY + Last + SinceLast), checked equal on {len(checked):,}; medians of {rounds} rounds"
    )
    for k in ("loop", "rivulet"):
        print(f"  {k:>8}: median {med[k] * 1000:8.1f} ms  {n / med[k]:>10,.0f} events/s")
    print(f"  ratio rivulet/loop: {med['loop'] / med['rivulet']:.2f}x (goal >= 0.8x)")
