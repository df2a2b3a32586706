"""Benchmark ``rivulet replay`` against a bare kafka-python consume plus River loop over the same range.

A scratch features topic (3 partitions) gets N features records of River's Agrawal stream with their labels
inline. Both sides read the whole topic and run ``StandardScaler | LogisticRegression`` with LogLoss:

- bare: a ``KafkaConsumer`` (the replay reader's configuration) assigned every partition,
  ``orjson.loads``, ``predict_proba_one``, ``metric.update``, ``learn_one``, in poll order;
- bare+: the same, plus what a replay reports besides the final metric, with River's own primitives: a
  rolling window of the metric (``utils.Rolling``, 1,000) and an ADWIN detector on the 0/1 loss;
- Rivulet: the replay path (range resolution, manual assignment, the deterministic event-time merge of
  partitions, the router and the learner core with its rolling metric and drift detector, curve samples),
  as ``rivulet replay topic features`` runs it, without writing the report.

Rounds alternate; medians are reported with the ratio (goal >= 0.8x), and the median of the ratios
within each round (the sides of a round run back to back, so it is less sensitive to a noisy machine).
Rivulet runs the replay with fewer garbage collections (``streaming.replay.collect``); ``--bare-gc`` gives the
bare loops the same setting, to see what is left when that is taken out. Both sides must give the same
LogLoss when the topic has one partition (same order); with 3 partitions only the order differs.

    .venv/bin/python scripts/bench_replay.py --records 50000 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from kafka import TopicPartition
from river import compose, drift, linear_model, metrics, preprocessing, utils
from river.datasets import synth

from streaming.clients import kafka_consumer, kafka_producer
from streaming.ingest.topics import TopicAdmin
from streaming.learning.spec import ModelSpec
from streaming.logs import configure_logging
from streaming.replay.collect import fewer_collections
from streaming.replay.kafka import Bound, RangeReader
from streaming.replay.runner import FEATURES, Replay
from streaming.replay.sources import kafka_records, plan_kafka
from streaming.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import drop, fresh


def scaled_lr() -> compose.Pipeline:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


SPEC = ModelSpec("lr", "binary", "agrawal", scaled_lr, metrics=(metrics.LogLoss,))


def fill(settings: Settings, n: int) -> None:
    producer = kafka_producer(settings, linger_ms=20, batch_size=256_000)
    t0 = 1_767_225_600_000
    for i, (x, y) in enumerate(itertools.islice(synth.Agrawal(seed=7), n)):
        record = {
            "view": "agrawal",
            "entity": f"c{i % 500}",
            "event": {"event_id": f"e{i}", "ts": t0 + i * 100, "label": y},
            "features": x,
        }
        producer.send(settings.topics.features, orjson.dumps(record), key=f"c{i % 500}".encode())
    producer.flush()
    producer.close()


def bare(settings: Settings, same_outputs: bool = False) -> tuple[int, float]:
    consumer = kafka_consumer(settings, client_id="bench-bare")  # the same reader settings as replay
    topic = settings.topics.features
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    end = consumer.end_offsets(tps)
    model, metric = scaled_lr(), metrics.LogLoss()
    rolling, detector = utils.Rolling(metrics.LogLoss, window_size=1_000), drift.ADWIN()
    n = 0
    while any(consumer.position(tp) < end[tp] for tp in tps):
        for records in consumer.poll(timeout_ms=200).values():
            for r in records:
                data = orjson.loads(r.value)
                x, y = data["features"], data["event"]["label"]
                proba = model.predict_proba_one(x)
                metric.update(y, proba)
                if same_outputs:  # what the replay's report shows: a rolling metric and drift points
                    rolling.update(y, proba)
                    detector.update(0.0 if (max(proba, key=proba.get) if proba else None) == y else 1.0)
                model.learn_one(x, y)
                n += 1
    consumer.close()
    return n, float(metric.get())


def gc_(context: Any, fn: Any, *args: Any, **kwargs: Any) -> tuple[int, float]:
    with context():
        return fn(*args, **kwargs)  # type: ignore[no-any-return]


def rivulet(settings: Settings) -> tuple[int, float]:
    replay = Replay([SPEC], sample_every=250)
    with RangeReader(settings) as reader:
        plan = plan_kafka(
            reader, settings, settings.topics.features, FEATURES, Bound("beginning"), Bound("end")
        )
        replay.run(kafka_records(reader, plan, replay))
    result = replay.finish("features", plan.describe(), "event-time")
    return result.records, result.models["lr"].metrics["LogLoss"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument(
        "--bare-gc", action="store_true", help="run the bare loops with Rivulet's garbage-collector setting"
    )
    args = parser.parse_args()
    base = Settings()
    configure_logging(base)
    s = fresh(base, partitions=args.partitions)
    try:
        with TopicAdmin(s) as admin:
            admin.create()
        fill(s, args.records)
        gc = fewer_collections if args.bare_gc else contextlib.nullcontext
        sides = {
            "bare": lambda: gc_(gc, bare, s),
            "bare+": lambda: gc_(gc, bare, s, same_outputs=True),
            "rivulet": lambda: rivulet(s),
        }
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.rounds):
            for name, fn in sides.items():
                t0 = time.perf_counter()
                n, value = fn()
                times[name].append(time.perf_counter() - t0)
                assert n == args.records, (name, n)
                print(f"  {name:8s} {n:,} records in {times[name][-1]:.2f} s, LogLoss {value:.6f}")
        med = {k: statistics.median(v) for k, v in times.items()}
        rate = {k: args.records / m for k, m in med.items()}
        print(
            f"replay of {args.records:,} features records ({args.partitions} partitions)"
            + (", bare loops with fewer collections:" if args.bare_gc else ":")
        )
        for name in sides:
            print(f"  {name:8s} {rate[name]:>9,.0f} records/s (median {med[name]:.2f} s)")
        print(
            f"ratio of medians vs bare (metric only): {rate['rivulet'] / rate['bare']:.2f}x; "
            f"vs bare+ (metric, rolling metric, ADWIN): {rate['rivulet'] / rate['bare+']:.2f}x (goal >= 0.8x)"
        )
        # the sides of one round run back to back: their ratio cancels the machine's slow and fast spells
        per_round = {
            k: statistics.median(b / r for b, r in zip(times[k], times["rivulet"], strict=True))
            for k in ("bare", "bare+")
        }
        print(
            f"median of per-round ratios vs bare: {per_round['bare']:.2f}x; "
            f"vs bare+: {per_round['bare+']:.2f}x"
        )
    finally:
        drop(s)


if __name__ == "__main__":
    main()
