"""Predictions on their way to the predictions topic, off the response path.

``await producer.send()`` returns once the record is queued, but first waits for the topic's metadata: with
the topic missing or Kafka's metadata unavailable, up to the request timeout (15 s by default) per call, on
the scoring path (a batch of 17 waited 17 times). The outbox sends each prediction in its own task and the
response never waits; at most ``limit`` sends are pending (beyond, a prediction is counted as unpublished,
not queued without bound). On shutdown the app drains it (:meth:`Outbox.drain`, bounded) before the
producer stops: the predictions answered just before are published, not dropped with their tasks.
"""

from __future__ import annotations

import asyncio

from serving.metrics import UNPUBLISHED
from serving.services import Producer

__all__ = ["Outbox"]


class Outbox:
    """Send records in the background; failures and overflows count in ``UNPUBLISHED`` per model."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.pending: set[asyncio.Task[None]] = set()

    def send(self, producer: Producer, topic: str, value: bytes, key: bytes, model: str) -> None:
        if len(self.pending) >= self.limit:
            UNPUBLISHED.labels(model).inc()
            return
        task = asyncio.get_running_loop().create_task(_send(producer, topic, value, key, model))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the pending sends (the app's shutdown, before the producer
        stops); those still pending then are cancelled and counted unpublished. Returns how many."""
        if not self.pending:
            return 0
        _, left = await asyncio.wait(set(self.pending), timeout=timeout)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)  # each counts itself unpublished as it is cancelled
        return len(left)


async def _send(producer: Producer, topic: str, value: bytes, key: bytes, model: str) -> None:
    try:
        future = await producer.send(topic, value, key=key)
        await future
    except Exception:  # Kafka away, the topic missing, a record refused: counted, never raised
        UNPUBLISHED.labels(model).inc()
    except asyncio.CancelledError:  # still pending when the shutdown's drain ran out of time
        UNPUBLISHED.labels(model).inc()
        raise
