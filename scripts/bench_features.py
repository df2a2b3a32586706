"""Benchmark the feature processor. Three measurements, each printed with its baseline or goal:

1. ``engine``: events/s of ``FeatureEngine.apply`` against a hand-written dict-and-deque loop computing the
   same aggregates on the same in-order events (the loop's output is checked equal first). Goal >= 0.5x.
2. ``worker``: events/s through one Faust feature worker on real Kafka and Redis (``rivulet features run``,
   one view), from its first record to having committed the last. Goal >= 10,000 per worker.
3. ``freshness``: events produced at a fixed rate (default 2,000/s); time from the producer's send to the
   entity's vector in Redis reflecting the event (Redis keyspace notifications), p50/p99. Goal p99 <= 100 ms.

    .venv/bin/python scripts/bench_features.py --engine-events 60000 --worker-events 60000 --rate 2000
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import threading
import time
import uuid
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from features.aggregations import Last, SinceLast
from features.definitions import FeatureView
from features.engine import FeatureEngine
from features.events import Event
from features.examples import ACTIVITY
from streaming.clients import redis_client
from streaming.ingest.producer import Producer
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchkit import drop, fresh  # noqa: E402

from tests.support.oracle import stream  # noqa: E402
from tests.support.workers import Worker  # noqa: E402

VIEW = FeatureView(
    name="bench",
    aggregations=[
        *ACTIVITY,
        Last("car"),
        SinceLast(),
    ],
    allowed_lateness=0,
)


def baseline(events: list[Event]) -> list[dict[str, Any]]:
    """The same aggregates by hand: running counts and sums, deques for the sliding windows."""
    state: dict[str, dict[str, Any]] = {}
    out = []
    for e in events:
        t, f = e.ts, e.fields
        s = state.get(e.entity)
        if s is None:
            s = state[e.entity] = {
                "n": 0,
                "w10": deque(),
                "sum10": 0.0,
                "w30": deque(),
                "tstart": None,
                "tsum": 0.0,
                "car": None,
                "last": None,
            }
        w10, w30 = s["w10"], s["w30"]
        while w10 and w10[0][0] <= t - 600_000:
            s["sum10"] -= w10.popleft()[1]
        while w30 and w30[0][0] <= t - 1_800_000:
            w30.popleft()
        start = t - t % 3_600_000
        if s["tstart"] != start:
            s["tstart"], s["tsum"] = start, 0.0
        vec = dict(f)
        vec["count_lifetime"] = s["n"]
        vec["count_10m"] = len(w10)
        vec["salary_mean_10m"] = s["sum10"] / len(w10) if w10 else None
        vec["loan_sum_1h_tumbling"] = s["tsum"]
        vec["loan_max_30m"] = max(v for _, v in w30) if w30 else None
        vec["car_last_lifetime"] = s["car"]
        vec["since_last_ms"] = t - s["last"] if s["last"] is not None else None
        out.append(vec)
        s["n"] += 1
        w10.append((t, f["salary"]))
        s["sum10"] += f["salary"]
        w30.append((t, f["loan"]))
        s["tsum"] += f["loan"]
        s["car"], s["last"] = f["car"], t
    return out


def rivulet(events: list[Event]) -> list[dict[str, Any]]:
    engine = FeatureEngine(VIEW)
    states: dict[str, Any] = {}
    out = []
    for e in events:
        state = states.get(e.entity)
        if state is None:
            state = states[e.entity] = engine.new_state()
        out.append(engine.apply(state, e))
    return out


def close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    return bool(a == b)


def bench_engine(n: int, rounds: int) -> None:
    events = sorted(stream(n, entities=200, seed=7, step_ms=500), key=lambda e: e.ts)  # in order
    check_a, check_b = baseline(events[:5000]), rivulet(events[:5000])
    for a, b in zip(check_a, check_b, strict=True):
        assert a.keys() == b.keys() and all(close(a[k], b[k]) for k in a), (a, b)
    times: dict[str, list[float]] = {"baseline": [], "rivulet": []}
    for _ in range(rounds):
        for name, fn in (("baseline", baseline), ("rivulet", rivulet)):
            t0 = time.perf_counter()
            fn(events)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"engine: {n} events, 200 entities, {len(VIEW.aggregations)} aggregations, {rounds} rounds")
    for k in ("baseline", "rivulet"):
        print(f"  {k:>9}: median {med[k] * 1000:8.1f} ms  {n / med[k]:>10,.0f} events/s")
    print(f"  ratio rivulet/baseline: {med['baseline'] / med['rivulet']:.2f}x (goal >= 0.5x)")


def bench_worker(base: Settings, n: int, tmp: Path) -> None:
    settings = fresh(base)
    client = redis_client(settings)
    stats = f"{settings.redis_prefix}stats:features"
    with TopicAdmin(settings) as admin:
        admin.create()
        try:
            events = stream(n, entities=1000, seed=8, step_ms=100)
            with Producer(settings) as producer:
                producer.send_many(events)
            worker = Worker(settings, "features.examples:customer", tmp / "worker.log")
            try:
                first = None
                deadline = time.monotonic() + 600
                while True:
                    done = int(client.hget(stats, "records:customer") or 0)
                    now = time.monotonic()
                    if done and first is None:
                        first = (now, done)
                    if done >= n:
                        break
                    assert worker.alive() and now < deadline, (tmp / "worker.log").read_text()[-2000:]
                    time.sleep(0.01)
                assert first is not None
                rate = (n - first[1]) / (now - first[0])
                print(
                    f"worker: {n} events (1,000 entities, view 'customer', {len(events[0].fields)} fields), "
                    f"one worker: {rate:,.0f} events/s (goal >= 10,000)"
                )
            finally:
                worker.stop()
        finally:
            drop(settings)


class Freshness:
    """Watches the customer view's Redis rows (keyspace notifications) and times each sent event from its
    send to the first write of its entity's row that reflects it (the row's ``_ts`` at or past it)."""

    def __init__(self, settings: Settings) -> None:
        self.client = redis_client(settings)
        self.client.config_set("notify-keyspace-events", "Kh")
        self.reader = redis_client(settings)
        self.pending: dict[str, deque[tuple[int, float]]] = defaultdict(deque)
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.prefix = f"__keyspace@0__:{settings.redis_prefix}fv:customer:"
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def sent(self, entity: str, ts: int, at: float) -> None:
        with self.lock:
            self.pending[entity].append((ts, at))

    def _watch(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(self.prefix + "*")
        while not self.stopping.is_set():
            msg = pubsub.get_message(timeout=0.1)
            if not msg or msg["data"] != b"hset":
                continue
            seen_at = time.time()
            key = msg["channel"].decode()[len("__keyspace@0__:") :]
            entity = key[key.index("{") + 1 : -1]
            wm = int(self.reader.hget(key, "_ts") or 0)
            with self.lock:
                queue = self.pending[entity]
                while queue and queue[0][0] <= wm:
                    self.latencies.append(seen_at - queue.popleft()[1])
        pubsub.close()

    def __enter__(self) -> Freshness:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join()


def _send_paced(producer: Producer, watch: Freshness, rate: float, seconds: float) -> None:
    """Send ``rate * seconds`` events at ``rate`` per second, each stamped with the time it is sent."""
    start = time.monotonic()
    for i, e in enumerate(stream(int(rate * seconds), entities=1000, seed=10, step_ms=1)):
        if (ahead := start + i / rate - time.monotonic()) > 0:
            time.sleep(ahead)
        now = time.time()
        ev = e.model_copy(update={"ts": int(now * 1000)})
        watch.sent(ev.entity, ev.ts, now)
        producer.send(ev)
    producer.flush()


def bench_freshness(base: Settings, rate: float, seconds: float, tmp: Path) -> None:
    settings = fresh(base)
    with TopicAdmin(settings) as admin, Freshness(settings) as watch:
        admin.create()
        worker = Worker(settings, "features.examples:customer", tmp / "fresh.log")
        try:
            with Producer(settings) as producer:  # warm up: the worker joins its group and sees records
                producer.send_many(stream(200, entities=100, seed=9, step_ms=1))
                stats, deadline = f"{settings.redis_prefix}stats:features", time.monotonic() + 120
                while int(watch.reader.hget(stats, "records:customer") or 0) < 200:
                    assert worker.alive() and time.monotonic() < deadline, "worker did not start"
                    time.sleep(0.1)
                time.sleep(1)
                _send_paced(producer, watch, rate, seconds)
            time.sleep(2)
        finally:
            worker.stop()
            drop(settings)
    lat = sorted(watch.latencies)
    p50, p99 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000
    print(
        f"freshness: {len(lat)} of {int(rate * seconds)} events seen in Redis at {rate:,.0f} events/s: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (goal p99 <= 100 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine-events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker-events", type=int, default=60_000)
    parser.add_argument("--rate", type=float, default=2_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--only", choices=["engine", "worker", "freshness"])
    args = parser.parse_args()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"rivulet-bench-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    settings = Settings()
    if args.only in (None, "engine"):
        bench_engine(args.engine_events, args.rounds)
    if args.only in (None, "worker"):
        bench_worker(settings, args.worker_events, tmp)
    if args.only in (None, "freshness"):
        bench_freshness(settings, args.rate, args.seconds, tmp)


if __name__ == "__main__":
    main()
