"""Benchmark: ``Producer.send_many`` against a bare kafka-python ``KafkaProducer.send`` loop.

Both sides use the same producer configuration (``producer_config``), the same events and a fresh topic
each, on the Kafka given by ``RIVULET_KAFKA_BOOTSTRAP``. The bare loop does the minimum the same
delivery needs: serialise each event with orjson, send it keyed by entity, flush. Rivulet's side
additionally validates every event (from dicts), checks its size and tracks every delivery.

    .venv/bin/python scripts/bench_produce.py --events 50000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import orjson

from features.events import Event
from streaming.clients import kafka_producer
from streaming.ingest.producer import Producer
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings


def make_events(n: int, entities: int) -> list[dict]:
    base = 1_704_067_200_000
    return [
        {
            "event_id": f"ev-{i:09d}",
            "entity": f"user-{i % entities}",
            "ts": base + i,
            "fields": {"amount": (i % 977) * 1.25, "country": "NL" if i % 3 else "DE", "clicks": i % 17},
        }
        for i in range(n)
    ]


def bare(settings: Settings, topic: str, events: list[dict]) -> float:
    client = kafka_producer(settings)
    dumps = orjson.dumps
    t0 = time.perf_counter()
    futures = [client.send(topic, value=dumps(e), key=e["entity"].encode()) for e in events]
    client.flush()
    elapsed = time.perf_counter() - t0
    assert all(f.succeeded() for f in futures)
    client.close()
    return elapsed


def rivulet(settings: Settings, topic: str, events: list) -> float:
    producer = Producer(settings, events_topic=topic)
    t0 = time.perf_counter()
    delivered = producer.send_many(events)
    elapsed = time.perf_counter() - t0
    assert delivered == len(events), delivered
    producer.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--entities", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    settings = Settings()
    events = make_events(args.events, args.entities)
    typed = [Event.parse(e) for e in events]
    run = uuid.uuid4().hex[:8]
    topics = [f"bench.produce.{run}.{i}" for i in range(args.rounds * 3)]
    with TopicAdmin(settings) as admin:
        admin.create(topics, partitions=settings.partitions)
        try:
            times: dict[str, list[float]] = {"bare": [], "rivulet(dicts)": [], "rivulet(Event)": []}
            for r in range(args.rounds):  # interleaved, so drift in the machine hits both sides alike
                times["bare"].append(bare(settings, topics[3 * r], events))
                times["rivulet(dicts)"].append(rivulet(settings, topics[3 * r + 1], events))
                times["rivulet(Event)"].append(rivulet(settings, topics[3 * r + 2], typed))
        finally:
            admin.delete(topics)

    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: args.events / v for k, v in med.items()}
    print(
        f"events={args.events} entities={args.entities} rounds={args.rounds} "
        f"partitions={settings.partitions} linger_ms={settings.producer_linger_ms}"
    )
    for k in times:
        print(
            f"{k:>16}: median {med[k] * 1000:8.1f} ms  {rate[k]:>10,.0f} events/s  "
            f"ratio vs bare {rate[k] / rate['bare']:.2f}x"
        )


if __name__ == "__main__":
    main()
