"""Benchmark the scaling of the feature workers (issue 15): events/s of 1, 2 and 3 workers in one consumer
group on a 6-partition events topic, against the bare loop run as 1, 2 and 3 members over the same events.

For each k in 1, 2, 3, in each of ``--rounds`` rounds (the k interleaved, so drift in the machine hits each
alike): a fresh namespace (Rivulet's topics with 6 partitions) holding ``--events`` events of 1,000
entities, then

1. ``rivulet features run`` (view ``customer``, as in ``bench_features.py --only worker``) started k times;
   events/s counted over the window from the moment the group is Stable with k members, each holding
   partitions, to the group's committed offsets covering every event (a record that a rebalance made a
   worker process again counts once), and the CPU seconds the k processes used in the window;
2. k bare members (the I/O of ``scripts/bench_worker_bare.py``: aiokafka, orjson, one Redis pipeline per
   batch, no Faust, no engine) in a group of their own over the same events, measured the same way (they
   join together and wait for the group to be Stable before taking records: they start in a second,
   where a Faust worker takes several and its window starts with part of the events done).

Printed per k: the medians over the rounds, worker/bare, events/s per worker and CPU per event.

**What it shows on this machine.** k workers share the machine's cores with the broker and Redis (two cores
here): events/s at k = 2 or 3 measures what more processes on the same cores give (a worker waits on
Kafka and Redis for part of each batch, another fills that time) or cost (rebalances, one Kafka client
and one Redis connection each), not the speed-up of k machines. Two per-worker figures carry over: the
events/s of one worker in a group of 3 (coordination included, cores shared: a floor), and 1 / (CPU per
event), what a worker would do with a core of its own and no waiting (a ceiling). The model prints N
times each for N machines, capped at the topic's 6 partitions (a 7th worker idles), assuming Kafka and
Redis sized to keep up (measure them apart).

    .venv/bin/python scripts/bench_scaling.py                    # 100,000 events, 3 rounds
    .venv/bin/python scripts/bench_scaling.py --events 60000 --rounds 1
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from multiprocessing.synchronize import Event as StopFlag
from pathlib import Path
from typing import Any

from streaming.clients import kafka_admin
from streaming.ingest.producer import Producer
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_worker_bare import STATE_BYTES, bare_batch, bare_clients  # noqa: E402
from benchkit import arguments, cpu_seconds, drop, fresh, log_tail, scratch_dir  # noqa: E402

from tests.support.oracle import stream  # noqa: E402
from tests.support.workers import Worker  # noqa: E402

PARTITIONS = 6
WORKERS = (1, 2, 3)


# ------------------------------------------------------------------ a window of a group at full strength


def group_stable(settings: Settings, group: str, k: int) -> bool:
    """The group is Stable with ``k`` members, each assigned partitions (no rebalance under way)."""
    admin = kafka_admin(settings, client_id="rivulet-bench")
    try:
        info = admin.describe_groups([group]).get(group) or {}
    except Exception:
        return False
    finally:
        admin.close()
    members = info.get("members") or []
    stable = info.get("group_state") == "Stable" and len(members) == k
    return stable and all(m.get("member_assignment") for m in members)


def committed(admin: Any, settings: Settings, group: str) -> int:
    """The events the group has committed (the sum of its committed offsets on the events topic): records
    done once, whatever a rebalance made a member process again."""
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except Exception:
        return 0
    return sum(o.offset for tp, o in offsets.items() if tp.topic == settings.topics.events and o.offset > 0)


def window(
    settings: Settings,
    group: str,
    k: int,
    n: int,
    pids: list[int],
    alive: Callable[[], bool],
    what: Callable[[], str],
    on_stable: Callable[[], None] = lambda: None,
    timeout_s: float = 300.0,
) -> tuple[float, float, int]:
    """(events/s, CPU seconds per event, events in the window) from the group's first Stable moment with
    ``k`` members to its committed offsets reaching ``n``."""
    deadline = time.monotonic() + timeout_s
    admin = kafka_admin(settings, client_id="rivulet-bench")
    try:
        while not group_stable(settings, group, k):
            if not alive() or time.monotonic() > deadline:
                raise AssertionError(what())
            time.sleep(0.05)
        on_stable()
        t1, c1, cpu1 = time.perf_counter(), committed(admin, settings, group), cpu_seconds(pids)
        while (c2 := committed(admin, settings, group)) < n:
            if not alive() or time.monotonic() > deadline:
                raise AssertionError(what())
            time.sleep(0.02)
        t2, cpu2 = time.perf_counter(), cpu_seconds(pids)
    finally:
        admin.close()
    done = c2 - c1
    if done < n // 4:
        print(f"  (k={k}: the group was Stable only for the last {done:,} of {n:,} events)")
    if not done:
        return float("nan"), float("nan"), 0
    return done / (t2 - t1), (cpu2 - cpu1) / done, done


# ------------------------------------------------------------------ the workers


def run_workers(settings: Settings, k: int, n: int, tmp: Path) -> tuple[float, float, int]:
    logs = [tmp / f"{settings.topic_prefix}w{i}" / "worker.log" for i in range(k)]
    for log in logs:
        log.parent.mkdir(parents=True)
    workers = [Worker(settings, "features.examples:customer", log) for log in logs]
    try:
        return window(
            settings,
            f"{settings.topic_prefix}features",
            k,
            n,
            [w.proc.pid for w in workers],
            lambda: all(w.alive() for w in workers),
            lambda: "workers:\n" + "\n".join(log_tail(w.log, 1500) for w in workers),
        )
    finally:
        for w in workers:
            w.stop()


# ------------------------------------------------------------------ the bare members


async def bare_member(
    settings: Settings, group: str, stop: StopFlag, batch: int, ready: Barrier, go: StopFlag
) -> None:
    """``bench_worker_bare.bare_loop``'s I/O as one member of ``group``, until ``stop``. The members join
    together (``ready``: all started, so one rebalance forms the group) and take their first records on
    ``go``, once the group is Stable: a fast member would otherwise do much of the work alone while the
    others join. Each counts its records in ``<prefix>bare:stats`` (one HINCRBY in each batch's pipeline,
    as the worker's stats)."""
    consumer, producer, redis = bare_clients(settings, group)
    state = b"x" * STATE_BYTES
    prefix, out = settings.redis_prefix, settings.topics.features
    await producer.start()
    partitions = sorted(await producer.partitions_for(out))
    ready.wait()
    await consumer.start()  # joins the group in the background
    while not go.is_set():
        await asyncio.sleep(0.01)
    try:
        aggregates: dict[str, dict[str, Any]] = {}
        done = 0
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=5, max_records=batch)
            records = [r for rs in got.values() for r in rs]
            if not records:
                continue
            pipe = await bare_batch(
                records, aggregates, producer, redis, prefix, out, partitions, state, done
            )
            pipe.hincrby(f"{prefix}bare:stats", "records", len(records))
            await pipe.execute()
            await consumer.commit()
            done += len(records)
    finally:
        await consumer.stop()
        await producer.stop()
        await redis.aclose()


def _bare_process(settings: Settings, group: str, stop: StopFlag, ready: Barrier, go: StopFlag) -> None:
    asyncio.run(bare_member(settings, group, stop, settings.features_batch_size, ready, go))


def run_bare(settings: Settings, k: int, n: int) -> tuple[float, float, int]:
    ctx = multiprocessing.get_context("spawn")
    stop, ready, go = ctx.Event(), ctx.Barrier(k), ctx.Event()
    group = f"{settings.topic_prefix}bare{k}"
    members = [ctx.Process(target=_bare_process, args=(settings, group, stop, ready, go)) for _ in range(k)]
    for m in members:
        m.start()
    try:
        return window(
            settings,
            group,
            k,
            n,
            [m.pid for m in members if m.pid is not None],
            lambda: all(m.is_alive() for m in members),
            lambda: f"bare members exited: {[m.exitcode for m in members]}",
            go.set,
        )
    finally:
        stop.set()
        for m in members:
            m.join(30)
            if m.is_alive():
                m.kill()


# ------------------------------------------------------------------ the run


def one_round(base: Settings, k: int, n: int, tmp: Path) -> tuple[tuple[float, float, int], ...]:
    settings = fresh(base, partitions=PARTITIONS)
    with TopicAdmin(settings) as admin:
        admin.create()
    try:
        with Producer(settings) as producer:
            producer.send_many(stream(n, entities=1000, seed=8, step_ms=100))
        return run_workers(settings, k, n, tmp), run_bare(settings, k, n)
    finally:
        drop(settings)


def main() -> None:
    args = arguments(__doc__ or "", [], events=100_000, rounds=3)
    tmp = scratch_dir()
    base = Settings()
    got: dict[int, list[tuple[tuple[float, float, int], ...]]] = {k: [] for k in WORKERS}
    for r in range(args.rounds):
        for k in WORKERS:
            (w, wc, wn), (b, bc, bn) = result = one_round(base, k, args.events, tmp)
            got[k].append(result)
            print(
                f"round {r + 1}, {k} worker(s): {w:,.0f} events/s ({wc * 1e6:,.0f} us CPU an event, "
                f"{wn:,} events in the window); bare {b:,.0f} events/s ({bc * 1e6:,.0f} us, {bn:,}); "
                f"worker/bare {w / b:.2f}x",
                flush=True,
            )

    def median(k: int, side: int, field: int) -> float:
        return statistics.median(res[side][field] for res in got[k])

    print(f"\nmedians over {args.rounds} round(s), {args.events:,} events, {PARTITIONS} partitions:")
    one = median(1, 0, 0)
    for k in WORKERS:
        w, b = median(k, 0, 0), median(k, 1, 0)
        print(
            f"  {k} worker(s): {w:,.0f} events/s ({w / k:,.0f} a worker; {w / one:.2f}x one worker), "
            f"CPU {median(k, 0, 1) * 1e6:,.0f} us an event; bare {b:,.0f} events/s "
            f"({b / median(1, 1, 0):.2f}x one bare member), CPU {median(k, 1, 1) * 1e6:,.0f} us; "
            f"worker/bare {w / b:.2f}x"
        )
    per_worker, per_core = median(3, 0, 0) / 3, 1 / median(3, 0, 1)
    print(
        f"\nmodel, N machines with a worker each, Kafka and Redis sized to keep up (measure them apart), "
        "up to "
        f"N = {PARTITIONS} (the partitions; a worker more idles): at least N x {per_worker:,.0f} events/s "
        f"(events/s a worker with 3 in the group, on shared cores), at most N x {per_core:,.0f} (1 / CPU per "
        "event with 3 workers: a worker that had its core to itself and never waited): "
        + ", ".join(f"N={n}: {n * per_worker:,.0f}-{n * per_core:,.0f}" for n in (1, 2, 3, 6))
        + f". On this {multiprocessing.cpu_count()}-core machine the k workers share the cores with the "
        "broker, Redis and anything else running: the ratio of k workers to one shows what more processes "
        "on the same cores give or cost, not the speed-up of k machines."
    )


if __name__ == "__main__":
    main()
