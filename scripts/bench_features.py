"""Benchmark the feature processor (issue 13). Four measurements, each printed with its goal and its figure:

1. ``occupancy``: ``FeatureEngine.apply`` on ONE entity with five aggregations (count, sum, mean, max, std
   of a number) over a 1 h sliding window at its default resolution, at 10, 100, 1,000 and 10,000 events
   inside the window (spread evenly over the hour), measured in steady state (the window full, events
   still arriving): events/s and the serialised state per entity (``len(state.to_json())``). Goals: events/s
   at 10,000 >= 0.8x events/s at 10; state at 10,000 <= 2x state at 100.
2. ``engine``: events/s of ``FeatureEngine.apply`` against a hand-written loop computing the same tiled
   aggregates (issue 13's design: tiles of each window's resolution, evicted when they leave the range) on
   the same in-order events; the loop's output is checked equal to the engine's first. Goal >= 0.8x.
3. ``worker``: events/s through one feature worker on real Kafka and Redis (``rivulet features run``, view
   ``customer``), from its first record to its last. Goal >= 10,000 per worker.
4. ``freshness``: events produced at ``--rate`` per second; time from the producer's send to the entity's
   vector in Redis reflecting the event (Redis keyspace notifications), p50/p99. Goals: p99 <= 100 ms at
   2,000/s, p99 <= 250 ms at 5,000/s, every event seen.

    .venv/bin/python scripts/bench_features.py --only occupancy
    .venv/bin/python scripts/bench_features.py --only engine --engine-events 60000
    .venv/bin/python scripts/bench_features.py --only worker --worker-events 60000
    .venv/bin/python scripts/bench_features.py --only freshness --rate 2000 --seconds 20
    .venv/bin/python scripts/bench_features.py --only freshness --rate 5000 --seconds 20
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from features.aggregations import Count, Last, Max, Mean, SinceLast, Std, Sum
from features.definitions import FeatureView
from features.engine import EntityState, FeatureEngine
from features.events import Event
from features.examples import ACTIVITY
from features.redis_store import entity_tag
from features.windows import sliding
from streaming.clients import redis_client
from streaming.ingest.producer import Producer
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchkit import (  # noqa: E402
    Latencies,
    arguments,
    drop,
    fresh,
    log_tail,
    median_seconds,
    percentiles,
    scratch_dir,
    send_paced,
    wait_until,
)

from tests.support.oracle import stream  # noqa: E402
from tests.support.workers import Worker  # noqa: E402

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
    med = median_seconds(rounds, {"loop": lambda: hand_loop(events), "rivulet": lambda: rivulet(events)})
    print(
        f"engine: {n:,} in-order events, 200 entities, view {[a.name for a in VIEW.aggregations]} "
        f"(ACTIVITY + Last + SinceLast), checked equal on {len(checked):,}; medians of {rounds} rounds"
    )
    for k in ("loop", "rivulet"):
        print(f"  {k:>8}: median {med[k] * 1000:8.1f} ms  {n / med[k]:>10,.0f} events/s")
    print(f"  ratio rivulet/loop: {med['loop'] / med['rivulet']:.2f}x (goal >= 0.8x)")


# ------------------------------------------------------------------ the worker on Kafka and Redis


def bench_worker(base: Settings, n: int, tmp: Path) -> None:
    settings = fresh(base)
    client = redis_client(settings)
    stats = f"{settings.redis_prefix}stats:features"
    log = tmp / "worker.log"
    with TopicAdmin(settings) as admin:
        admin.create()
        try:
            events = stream(n, entities=1000, seed=8, step_ms=100)
            with Producer(settings) as producer:
                producer.send_many(events)
            worker = Worker(settings, "features.examples:customer", log)
            try:
                seen: list[tuple[float, int]] = []  # (when, records done) at the first and last poll

                def done() -> bool:
                    count = int(client.hget(stats, "records:customer") or 0)
                    if count:
                        seen[min(len(seen), 1) :] = [(time.monotonic(), count)]
                    return count >= n

                def failed() -> str:
                    got = seen[-1][1] if seen else 0
                    return f"worker: {got} of {n} events seen; worker log tail:\n{log_tail(log)}"

                wait_until(done, worker.alive, 600, failed, poll_s=0.01)
                (t1, c1), (t2, c2) = seen[0], seen[-1]
                rate = (c2 - c1) / (t2 - t1) if t2 > t1 else float("nan")
                print(
                    f"worker: {c2:,} of {n:,} events seen (1,000 entities, view 'customer', one worker): "
                    f"{rate:,.0f} events/s (goal >= 10,000)"
                )
            finally:
                worker.stop()
        finally:
            client.close()
            drop(settings)


class Freshness:
    """Watches a view's Redis rows (keyspace notifications) and times each sent event from its send to the
    first write of its entity's row that reflects it (the row's ``_ts`` at or past the event's time). A
    burst of notifications is read in one pipeline; each row is timed at its last notification of the burst
    (an event is never reported earlier than the write that showed it)."""

    def __init__(self, settings: Settings, view: str) -> None:
        self.latencies = Latencies()
        self.sent = 0
        self.error: BaseException | None = None
        self._client = redis_client(settings)
        self._client.config_set("notify-keyspace-events", "Kh")
        self.reader = redis_client(settings)
        self._channel = "__keyspace@0__:"
        self._rows = f"{settings.redis_prefix}fv:{view}:"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def on_send(self, event: Event, at: float) -> None:
        self.latencies.sent(entity_tag(event.entity), event.ts, at)
        self.sent += 1

    @property
    def seen(self) -> int:
        return len(self.latencies.values)

    def _watch(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(f"{self._channel}{self._rows}*")
        try:
            while not self._stopping.is_set():
                msg = pubsub.get_message(timeout=0.1)
                burst: dict[str, float] = {}
                while msg:
                    if msg["data"] == b"hset":
                        burst[msg["channel"].decode()[len(self._channel) :]] = time.time()
                    msg = pubsub.get_message(timeout=0.0)
                if burst:
                    pipe = self.reader.pipeline(transaction=False)
                    for key in burst:
                        pipe.hget(key, "_ts")
                    for (key, at), wm in zip(burst.items(), pipe.execute(), strict=True):
                        self.latencies.seen(key[len(self._rows) :], int(wm or 0), at)
        except BaseException as exc:  # reported by the bench, not lost in a thread
            self.error = exc
        finally:
            pubsub.close()

    def __enter__(self) -> Freshness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)
        self._client.close()
        self.reader.close()


def goal_ms(rate: float) -> float | None:
    """The issue's p99 goal at a rate: 100 ms up to 2,000 events/s, 250 ms up to 5,000, none beyond."""
    return 100.0 if rate <= 2_000 else 250.0 if rate <= 5_000 else None


def bench_freshness(base: Settings, rate: float, seconds: float, tmp: Path) -> None:
    settings = fresh(base)
    log, total = tmp / "fresh.log", int(rate * seconds)
    with TopicAdmin(settings) as admin, Freshness(settings, "customer") as watch:
        admin.create()
        worker = Worker(settings, "features.examples:customer", log)
        try:

            def died(what: str) -> str:
                return f"freshness: {what}; {watch.seen} of {watch.sent} seen; worker log:\n{log_tail(log)}"

            with Producer(settings) as producer:  # warm up: the worker joins its group and writes rows
                producer.send_many(stream(200, entities=100, seed=9, step_ms=1))
                stats = f"{settings.redis_prefix}stats:features"

                def warmed() -> bool:
                    return int(watch.reader.hget(stats, "records:customer") or 0) >= 200

                wait_until(warmed, worker.alive, 120, lambda: died("the worker did not start"))
                start = time.monotonic()
                events = stream(total, entities=1000, seed=10, step_ms=1)
                send_paced(producer, events, rate, watch.on_send)
                send_rate = total / (time.monotonic() - start)
            # every event seen, or 60 s passed: a bench reports what it saw rather than fail
            deadline = time.monotonic() + 60
            while watch.seen < total and time.monotonic() < deadline and watch.error is None:
                if not worker.alive():
                    raise AssertionError(died("the worker died"))
                time.sleep(0.05)
        finally:
            worker.stop()
            drop(settings)
    if watch.error is not None:
        raise watch.error
    if not watch.seen:
        raise SystemExit(f"freshness: no event seen in Redis of {total}; worker log:\n{log_tail(log)}")
    p50, p99 = percentiles(watch.latencies.values, 1000)
    goal = goal_ms(rate)
    print(
        f"freshness at {rate:,.0f} events/s (sent at {send_rate:,.0f}/s): {watch.seen:,} of {total:,} events "
        f"seen in Redis: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        + (f"(goal p99 <= {goal:.0f} ms, every event seen)" if goal else "(no goal at this rate)")
    )


def main() -> None:
    args = arguments(
        __doc__,
        ["occupancy", "engine", "worker", "freshness"],
        occupancy_events=10_000,
        engine_events=60_000,
        rounds=3,
        worker_events=60_000,
        rate=2_000.0,
        seconds=20.0,
    )
    tmp = scratch_dir()
    settings = Settings()
    if args.only in (None, "occupancy"):
        bench_occupancy(args.occupancy_events, args.rounds)
    if args.only in (None, "engine"):
        bench_engine(args.engine_events, args.rounds)
    if args.only in (None, "worker"):
        bench_worker(settings, args.worker_events, tmp)
    if args.only in (None, "freshness"):
        bench_freshness(settings, args.rate, args.seconds, tmp)


if __name__ == "__main__":
    main()
