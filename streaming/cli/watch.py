"""``rivulet watch [TOPIC]``: see records arrive on a topic, live, without joining any consumer group."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
import typer
from kafka import KafkaConsumer, TopicPartition
from rich.live import Live
from rich.table import Table

from streaming.cli.common import console, err_console, fail, settings_of, user_errors
from streaming.clients import kafka_consumer


@dataclass
class Tally:
    """What has arrived on a topic so far.

    >>> t = Tally("t")
    >>> t.add(0, b"a", b"{}"); t.add(1, b"a", b"x"); t.add(1, None, None)
    >>> t.count, len(t.entities), dict(t.per_partition), t.last
    (3, 1, {0: 1, 1: 2}, '')
    """

    topic: str
    count: int = 0
    per_partition: Counter[int] = field(default_factory=Counter)
    entities: set[bytes] = field(default_factory=set)
    last: str = ""
    start: float = field(default_factory=time.monotonic)

    def add(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        self.count += 1
        self.per_partition[partition] += 1
        if key is not None:
            self.entities.add(key)
        self.last = value.decode("utf-8", "replace") if value else ""

    def view(self, now: float) -> Table:
        table = Table(title=f"watching {self.topic}", show_header=False, min_width=60)
        table.add_row("records", f"{self.count:,}")
        table.add_row("records/s", f"{self.count / max(now - self.start, 1e-9):,.0f}")
        table.add_row("entities", f"{len(self.entities):,}")
        table.add_row(
            "per partition", "  ".join(f"p{p}={n:,}" for p, n in sorted(self.per_partition.items()))
        )
        table.add_row("last", self.last[:120])
        return table

    def summary(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "records": self.count,
            "entities": len(self.entities),
            "partitions": dict(sorted(self.per_partition.items())),
            "seconds": round(time.monotonic() - self.start, 2),
        }


def watch(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic name, or a short name such as 'events'.")] = "events",
    from_beginning: Annotated[bool, typer.Option(help="Start at the earliest offset, not the end.")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without records.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="Print only the summary.")] = False,
) -> None:
    """Count records arriving on a topic (manual assignment, no consumer group, nothing committed)."""
    settings = settings_of(ctx)
    short = {t.removeprefix(settings.topic_prefix): t for t in settings.topics.all()}
    tally = Tally(short.get(topic, topic))
    with user_errors():
        consumer = kafka_consumer(settings, client_id="rivulet-watch")
    try:
        n = _assign(consumer, tally.topic, from_beginning)
        if not quiet:
            err_console.print(f"watching {tally.topic} ({n} partitions); Ctrl-C to stop", highlight=False)
        with Live(console=err_console, refresh_per_second=4, auto_refresh=not quiet) as live:
            _count(consumer, tally, limit, idle_timeout, None if quiet else live)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    console.print(orjson.dumps(tally.summary(), option=orjson.OPT_NON_STR_KEYS).decode())


def _assign(consumer: KafkaConsumer, topic: str, from_beginning: bool) -> int:
    """Every partition of ``topic`` (how many), at its start or its end (resolved now, so that records
    produced from here on are seen)."""
    with user_errors():  # Kafka unreachable
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        fail(f"topic {topic} does not exist (rivulet topics create)")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*tps)
    for tp in tps:
        consumer.position(tp)
    return len(tps)


def _count(
    consumer: KafkaConsumer, tally: Tally, limit: int | None, idle_timeout: float | None, live: Live | None
) -> None:
    """Poll until ``limit`` records or ``idle_timeout`` seconds without any."""
    last_seen = time.monotonic()
    while limit is None or tally.count < limit:
        batch = consumer.poll(timeout_ms=250, max_records=5000)
        now = time.monotonic()
        for records in batch.values():
            for record in records:
                tally.add(record.partition, record.key, record.value)
            last_seen = now
        if idle_timeout is not None and now - last_seen > idle_timeout:
            break
        if live is not None:
            live.update(tally.view(now))
