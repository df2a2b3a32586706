"""``rivulet watch [TOPIC]``: see records arrive on a topic, live, without joining any consumer group."""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated

import orjson
import typer
from kafka import KafkaConsumer, TopicPartition
from rich.live import Live
from rich.table import Table

from streaming.cli.common import console, err_console, fail, load_settings, user_errors


def _view(
    topic: str, count: int, rate: float, per_partition: Counter[int], entities: int, last: str
) -> Table:
    table = Table(title=f"watching {topic}", show_header=False, min_width=60)
    table.add_row("records", f"{count:,}")
    table.add_row("records/s", f"{rate:,.0f}")
    table.add_row("entities", f"{entities:,}")
    table.add_row("per partition", "  ".join(f"p{p}={n:,}" for p, n in sorted(per_partition.items())))
    table.add_row("last", last[:120])
    return table


def watch(
    topic: Annotated[str, typer.Argument(help="Topic name, or a short name such as 'events'.")] = "events",
    from_beginning: Annotated[bool, typer.Option(help="Start at the earliest offset, not the end.")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without records.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="Print only the summary.")] = False,
) -> None:
    """Count records arriving on a topic (manual assignment, no consumer group, nothing committed)."""
    settings = load_settings()
    short = {t.removeprefix(settings.topic_prefix): t for t in settings.topics.all()}
    name = short.get(topic, topic)
    with user_errors():
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
            request_timeout_ms=settings.kafka_request_timeout_ms,
        )
    try:
        with user_errors():  # Kafka unreachable
            partitions = consumer.partitions_for_topic(name)
        if not partitions:
            fail(f"topic {name} does not exist (rivulet topics create)")
        tps = [TopicPartition(name, p) for p in sorted(partitions)]
        consumer.assign(tps)
        (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*tps)
        for tp in tps:
            consumer.position(tp)  # resolve now, so records produced from here on are seen
        if not quiet:
            err_console.print(f"watching {name} ({len(tps)} partitions); Ctrl-C to stop", highlight=False)
        count, per_partition, entities, last = 0, Counter[int](), set[bytes](), ""
        start = last_seen = time.monotonic()
        with Live(console=err_console, refresh_per_second=4, transient=False, auto_refresh=not quiet) as live:
            while limit is None or count < limit:
                batch = consumer.poll(timeout_ms=250, max_records=5000)
                now = time.monotonic()
                for records in batch.values():
                    for record in records:
                        count += 1
                        per_partition[record.partition] += 1
                        if record.key is not None:
                            entities.add(record.key)
                        last = record.value.decode("utf-8", "replace") if record.value else ""
                    last_seen = now
                if idle_timeout is not None and now - last_seen > idle_timeout:
                    break
                if not quiet:
                    live.update(
                        _view(name, count, count / max(now - start, 1e-9), per_partition, len(entities), last)
                    )
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    elapsed = time.monotonic() - start
    console.print(
        orjson.dumps(
            {
                "topic": name,
                "records": count,
                "entities": len(entities),
                "partitions": dict(sorted(per_partition.items())),
                "seconds": round(elapsed, 2),
            },
            option=orjson.OPT_NON_STR_KEYS,
        ).decode()
    )
