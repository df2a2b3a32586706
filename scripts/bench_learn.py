"""Benchmark the learner. Four measurements:

1. ``core``: records/s of ``LearnerCore`` (predict, metrics overall and rolling, drift detector, learn) vs
   a bare River loop (``predict_one``, ``metric.update``, ``learn_one``) on the same data and model.
   Goal >= 0.8x.
1b. ``lifecycle``: the same with a champion and two challengers, paired evidence on every record, against
   a bare loop running the three models. Goal >= 0.8x (issue 14).
2. ``e2e``: on real Kafka and Redis, an event produced at a fixed rate until a servable checkpoint contains
   it (the registry's notification of a version whose ``last_learned_ts`` covers the event), with the
   feature worker in between and a 250 ms checkpoint interval; p50/p99. Goal p99 <= 1 s.
3. ``checkpoint``: save (pickle, sign, one Redis transaction) and load (fetch, verify, unpickle) times for a
   LogisticRegression pipeline and a 10-tree adaptive random forest.

    .venv/bin/python scripts/bench_learn.py --records 20000 --rate 500 --seconds 20
"""

from __future__ import annotations

import itertools
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr
from river import compose, forest, linear_model, metrics, preprocessing
from river.datasets import synth

from streaming.clients import redis_client, registry_writer
from streaming.ingest.producer import Producer
from streaming.ingest.topics import TopicAdmin
from streaming.learning.core import LearnerCore
from streaming.learning.evidence import PromotionPolicy
from streaming.learning.keys import generate
from streaming.learning.snapshot import read_header
from streaming.learning.spec import CheckpointPolicy, DriftPolicy, ModelSpec
from streaming.logs import configure_logging
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchkit import (  # noqa: E402
    Latencies,
    arguments,
    drop,
    fresh,
    median_seconds,
    percentiles,
    scratch_dir,
    send_paced,
    wait_until,
)

from tests.support.oracle import stream  # noqa: E402
from tests.support.workers import Worker  # noqa: E402

SIGNER = generate()  # signs this run's snapshots


def scaled_lr() -> compose.Pipeline:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


LIFECYCLE_SPEC = ModelSpec(
    "lr",
    "binary",
    "v",
    scaled_lr,
    metrics=(metrics.Accuracy,),
    drift=DriftPolicy(reaction="challenger", max_challengers=2),
    promotion=PromotionPolicy(),
)


def bare_lifecycle(data: list[tuple[dict[str, Any], Any]]) -> list[float]:
    """The bare River loop running the lifecycle's three models (scripts/bench_learn_instructions.py too)."""
    models = [(scaled_lr(), metrics.Accuracy()) for _ in range(3)]
    for x, y in data:
        for model, metric in models:
            metric.update(y, model.predict_one(x))
            model.learn_one(x, y)
    return [float(m.get()) for _, m in models]


def rivulet_lifecycle(data: list[tuple[dict[str, Any], Any]]) -> list[float]:
    """The learner core with a champion and two challengers on the same records."""
    core = LearnerCore([LIFECYCLE_SPEC])
    core.challenge("lr", -2)
    core.challenge("lr", -1)
    for i, (x, y) in enumerate(data):
        core.on_record(str(i), i, x, label=y, predictions=False)  # as the router calls it
    assert len(core.models) == 3 and len(core.decisions) == 2, core.decisions  # no promotion, no drift
    return [float(st.metrics[0].get()) for st in core.models.values()]


def bench_lifecycle(n: int, rounds: int) -> None:
    """One champion and two challengers (a spec with a promotion policy: paired evidence on every record)
    against a bare River loop running the three models on the same records (issue 14)."""
    data = list(itertools.islice(synth.Agrawal(seed=1), n))

    def bare() -> list[float]:
        return bare_lifecycle(data)

    def rivulet() -> list[float]:
        return rivulet_lifecycle(data)

    assert bare() == rivulet()  # the same predictions, the same metrics, three times
    med = median_seconds(rounds, {"bare": bare, "rivulet": rivulet})
    print(f"lifecycle: {n} Agrawal records, a champion and 2 challengers (each a scaled LogisticRegression)")
    for k in ("bare", "rivulet"):
        print(f"  {k:>8}: median {med[k] * 1000:8.1f} ms  {n / med[k]:>9,.0f} records/s")
    print(f"  ratio rivulet/bare: {med['bare'] / med['rivulet']:.2f}x (goal >= 0.8x)")


def bench_core(n: int, rounds: int) -> None:
    data = list(itertools.islice(synth.Agrawal(seed=1), n))
    spec = ModelSpec("lr", "binary", "v", scaled_lr, metrics=(metrics.Accuracy,))

    def bare() -> float:
        model, metric = scaled_lr(), metrics.Accuracy()
        for x, y in data:
            metric.update(y, model.predict_one(x))
            model.learn_one(x, y)
        return float(metric.get())

    def rivulet() -> float:
        core = LearnerCore([spec])
        for i, (x, y) in enumerate(data):
            core.on_record(str(i), i, x, label=y, predictions=False)  # as the router calls it
        return float(core.models["lr"].metrics[0].get())

    assert bare() == rivulet()  # the same predictions, the same metric
    med = median_seconds(rounds, {"bare": bare, "rivulet": rivulet})
    print(f"core: {n} Agrawal records, StandardScaler | LogisticRegression, Accuracy, {rounds} rounds")
    for k in ("bare", "rivulet"):
        print(f"  {k:>8}: median {med[k] * 1000:8.1f} ms  {n / med[k]:>9,.0f} records/s")
    print(f"  ratio rivulet/bare: {med['bare'] / med['rivulet']:.2f}x (goal >= 0.8x)")


E2E_SPEC = ModelSpec(
    "lr",
    "binary",
    "all",
    scaled_lr,
    metrics=(metrics.LogLoss,),
    checkpoint=CheckpointPolicy(every_records=10**9, every_seconds=0.25, keep=5),
)


def watch_versions(settings: Settings, channel: str, latencies: Latencies, stop: threading.Event) -> None:
    """Each version the registry announces makes servable the events up to its ``last_learned_ts``."""
    client = redis_client(settings)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    while not stop.is_set():
        msg = pubsub.get_message(timeout=0.1)
        if not msg:
            continue
        seen = time.time()
        note = orjson.loads(msg["data"])
        blob = client.get(f"{settings.redis_prefix}model:{{{note['model']}}}:v:{note['version']}")
        last = read_header(blob).get("last_learned_ts") if blob else None
        if last is not None:
            latencies.seen(None, last, seen)
    pubsub.close()


def bench_e2e(base: Settings, rate: float, seconds: float, tmp: Path) -> None:
    defs = "tests.support.feature_defs"
    settings = fresh(base, signing_key=SecretStr(SIGNER.encoded), features_module=defs)
    registry = registry_writer(settings)
    latencies, stop = Latencies(), threading.Event()
    watcher = threading.Thread(
        target=watch_versions, args=(settings, registry.channel, latencies, stop), daemon=True
    )
    with TopicAdmin(settings) as admin:
        admin.create()
        features = Worker(settings, "tests.support.feature_defs:DIRECT", tmp / "features.log")
        learner = LearnerWorker(settings, [E2E_SPEC], registry=registry)
        learner_thread = threading.Thread(target=lambda: learner.run(install_signals=False), daemon=True)
        try:
            with Producer(settings) as producer:
                producer.send_many(stream(100, entities=50, seed=5, step_ms=1))  # warm up both workers
                learner_thread.start()
                wait_until(
                    lambda: bool(registry.versions("lr")), features.alive, 120, "pipeline did not start"
                )
                watcher.start()
                events = stream(int(rate * seconds), entities=200, seed=6, step_ms=1)
                send_paced(producer, events, rate, lambda e, at: latencies.sent(None, e.ts, at))
            time.sleep(3)  # the last events' checkpoint
        finally:
            stop.set()
            learner.stop()
            learner_thread.join(30)
            features.stop()
            drop(settings)
    p50, p99 = percentiles(latencies.values, 1000)
    print(
        f"e2e: {len(latencies.values)} of {int(rate * seconds)} events in a servable checkpoint at "
        f"{rate:,.0f} events/s, 250 ms checkpoints: p50 {p50:.0f} ms, p99 {p99:.0f} ms (goal p99 <= 1000 ms)"
    )


def bench_checkpoint(base: Settings, rounds: int) -> None:
    settings = fresh(base, signing_key=SecretStr(SIGNER.encoded))
    prefix = settings.redis_prefix
    client = redis_client(settings)
    registry = registry_writer(settings, client)
    data = list(itertools.islice(synth.Agrawal(seed=2), 5_000))
    cases: dict[str, Any] = {
        "LogisticRegression": (scaled_lr, (metrics.Accuracy,)),
        "ARF (10 trees)": (lambda: forest.ARFClassifier(n_models=10, seed=1), (metrics.Accuracy,)),
    }
    try:
        for label, (factory, ms) in cases.items():
            core = LearnerCore([ModelSpec("m", "binary", "v", factory, metrics=ms)])
            for i, (x, y) in enumerate(data):
                core.on_record(str(i), i, x, label=y, predictions=False)  # as the router calls it
            state = core.models["m"]
            saves, loads = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                version = registry.save(label.replace(" ", "_"), state, {"offsets": {}}, keep=2)
                t1 = time.perf_counter()
                registry.load(label.replace(" ", "_"), version)
                t2 = time.perf_counter()
                saves.append(t1 - t0)
                loads.append(t2 - t1)
            blob = client.get(f"{prefix}model:{{{label.replace(' ', '_')}}}:v:{version}")
            print(
                f"checkpoint {label:>18}: {len(blob or b''):>9,} bytes, save median "
                f"{statistics.median(saves) * 1000:7.2f} ms, "
                f"load median {statistics.median(loads) * 1000:7.2f} ms"
            )
    finally:
        drop(settings)


def main() -> None:
    only = ["core", "lifecycle", "e2e", "checkpoint"]
    args = arguments(__doc__, only, records=20_000, rounds=3, rate=500.0, seconds=20.0)
    settings = Settings()
    configure_logging(settings)
    tmp = scratch_dir()
    compiled = not str(sys.modules[LearnerCore.__module__].__file__).endswith(".py")
    print(f"learner core: {'compiled (setup.py)' if compiled else 'Python (not compiled)'}")
    if args.only in (None, "core"):
        bench_core(args.records, args.rounds)
    if args.only in (None, "lifecycle"):
        bench_lifecycle(args.records, args.rounds)
    if args.only in (None, "checkpoint"):
        bench_checkpoint(settings, 5)
    if args.only in (None, "e2e"):
        bench_e2e(settings, args.rate, args.seconds, tmp)


if __name__ == "__main__":
    main()
