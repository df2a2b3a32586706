"""The feature worker's lag per partition of what it reads (issue 18), on its ``--metrics-port``:

- ``rivulet_features_lag_records``: the partition's high watermark (as the worker's consumer last fetched
  it) minus the position after the last record committed;
- ``rivulet_features_lag_seconds``: now minus the event time of the last event committed from it (the
  source event's ``ts``, as the learner's lag is measured).

Set after each batch is committed (:func:`observe`): a worker stuck in a batch shows its last values, one
stopped none (``up == 0``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from faust.types import TP
from prometheus_client import Gauge

from features.pipeline import BatchResult

__all__ = ["LAG_RECORDS", "LAG_SECONDS", "observe"]

LAG_RECORDS = Gauge(
    "rivulet_features_lag_records",
    "High watermark minus the position after the last record committed, per partition",
    ["topic", "partition"],
)
LAG_SECONDS = Gauge(
    "rivulet_features_lag_seconds",
    "Now minus the event time of the last event committed, per partition",
    ["topic", "partition"],
)


def observe(
    consumer: Any, batch: Sequence[Any], result: BatchResult, clock: Callable[[], float] = time.time
) -> None:
    """A committed batch (Faust messages) and its result into the gauges."""
    last: dict[tuple[str, int], int] = {}
    for m in batch:
        topic, partition, offset = (
            getattr(m, "topic", None),
            getattr(m, "partition", None),
            getattr(m, "offset", None),
        )
        if not isinstance(topic, str) or not isinstance(partition, int) or not isinstance(offset, int):
            continue  # not a Kafka message (nothing to measure): never the worker's problem
        key = (topic, partition)
        last[key] = max(last.get(key, -1), offset)
    newest: dict[tuple[str, int], tuple[int, int]] = {}  # (offset, event ts) of the newest record
    for r in result.records:
        src = r.source
        if src is None:
            continue
        key = (src.topic, src.partition)
        if src.offset >= newest.get(key, (-1, 0))[0]:
            newest[key] = (src.offset, r.event.ts)
    now = clock()
    for (topic, partition), offset in last.items():
        labels = (topic, str(partition))
        try:
            high = consumer.highwater(TP(topic, partition))
        except Exception:  # not assigned any more (a rebalance): the next batch says
            high = None
        if isinstance(high, int):
            LAG_RECORDS.labels(*labels).set(max(0, high - offset - 1))
        if (topic, partition) in newest:
            LAG_SECONDS.labels(*labels).set(now - newest[(topic, partition)][1] / 1000)
