"""Predictions on their way to the predictions topic, off the response path.

``await producer.send()`` returns once the record is queued, but first waits for the topic's metadata: with
the topic missing or Kafka's metadata unavailable, up to the request timeout (15 s by default), which must
not be on the scoring path. The outbox queues each prediction and one sender task publishes them: it
lingers ``linger_s`` (``RIVULET_PRODUCER_LINGER_MS``) after the first, then hands everything queued to Kafka
in one batch per partition (:class:`~streaming.runtime.feature_publisher.PartitionedBatches`; a producer
that is not aiokafka's, such as the embedded log's, record by record). Before, each prediction had its own
task and ``send``: about a fifth of the API's event loop on misses at 3,000 predictions/s.

At most ``limit`` predictions are held (queued, or handed to Kafka and not yet acknowledged); beyond, a
prediction is counted in ``UNPUBLISHED``, as is every one whose batch Kafka refused or never took, and one
larger than ``max_bytes`` (the topic's ``max.message.bytes``), which is not sent: Kafka's refusal of its
batch made the producer fail every later batch of its partition. On
shutdown the app drains the outbox (:meth:`Outbox.drain`, bounded) before the producer stops: the
predictions answered just before are published, not dropped; once it has stopped (bounded too),
:meth:`Outbox.close` counts what Kafka never acknowledged.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from serving.metrics import UNPUBLISHED
from serving.services import Producer
from streaming.runtime.feature_publisher import Outgoing, PartitionedBatches

__all__ = ["Outbox"]

# (producer, topic, value, key, model): a prediction queued
_Queued = tuple[Producer, str, bytes, bytes, str]
# told of each batch (or record) the producer took: its delivery future, the indices of its records
_Took = Callable[[asyncio.Future[Any], list[int]], None]


class Outbox:
    """Send records in the background; failures and overflows count in ``UNPUBLISHED`` per model."""

    def __init__(self, limit: int = 10_000, linger_s: float = 0.005, max_bytes: int | None = None) -> None:
        self.limit = limit
        self.linger_s = linger_s
        self._queue: deque[_Queued] = deque()
        self._held = 0  # queued, being handed to Kafka, or handed and not yet acknowledged
        self._counted = 0  # counted unpublished, in all
        # handed: each batch's (or record's) delivery future and records per model, by the order handed (a
        # producer may give one future for several records)
        self._flights: dict[int, tuple[asyncio.Future[Any], Counter[str]]] = {}
        self._handed = itertools.count()
        self._sender: asyncio.Task[None] | None = None
        self._draining = False
        self._batches = PartitionedBatches(max_bytes)  # a larger prediction is counted, not sent

    @property
    def held(self) -> int:
        """Predictions not yet acknowledged by Kafka nor counted unpublished."""
        return self._held

    def send(self, producer: Producer, topic: str, value: bytes, key: bytes, model: str) -> None:
        if self._held >= self.limit:
            UNPUBLISHED.labels(model).inc()
            return
        self._held += 1
        self._queue.append((producer, topic, value, key, model))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        """Until the queue is empty: linger, then hand over what is queued (the next send starts another)."""
        while self._queue:
            await asyncio.sleep(0 if self._draining else self.linger_s)
            await self._flush()

    async def _flush(self) -> None:
        groups: dict[tuple[Producer, str], list[_Queued]] = {}
        while self._queue:
            one = self._queue.popleft()
            groups.setdefault((one[0], one[1]), []).append(one)
        pending = list(groups.items())
        while pending:
            (producer, topic), queued = pending.pop(0)
            handed: set[int] = set()

            def took(
                future: asyncio.Future[Any],
                indices: list[int],
                queued: list[_Queued] = queued,
                handed: set[int] = handed,
            ) -> None:
                n = next(self._handed)
                future.add_done_callback(functools.partial(self._landed, n))  # a done future: soon, not now
                self._flights[n] = (future, Counter(queued[i][4] for i in indices))
                handed.update(indices)

            try:
                not_sent = await self._submit(producer, topic, queued, took)
            # Kafka away, the topic missing, a batch refused; or cancelled at the drain's end
            except BaseException as exc:
                self._lost(Counter(q[4] for i, q in enumerate(queued) if i not in handed))
                if not isinstance(exc, Exception):  # cancelled: what this flush had not reached is lost too
                    self._lost(Counter(q[4] for _, rest in pending for q in rest))
                    raise
            else:
                self._lost(Counter(queued[i][4] for i in not_sent))

    async def _submit(self, producer: Producer, topic: str, queued: list[_Queued], took: _Took) -> list[int]:
        """Hand ``queued`` to ``producer``, telling ``took`` of what it takes; returns the indices of the
        records not sent (too large, or refused on their own)."""
        if isinstance(producer, AIOKafkaProducer):
            records: list[Outgoing] = [(key, value, None, None) for _, _, value, key, _ in queued]
            return await self._batches.submit(producer, topic, records, took)
        # the embedded log's producer, and the like, record by record: a record it refuses (or whose send
        # gives no future) is that record's failure, and the next ones are still sent, as with a send each
        refused = []
        for i, (_, _, value, key, _) in enumerate(queued):
            try:
                took(await producer.send(topic, value, key=key), [i])
            except Exception:
                refused.append(i)
        return refused

    def _landed(self, n: int, future: asyncio.Future[Any]) -> None:
        _, models = self._flights.pop(n, (None, None))
        if models is None:  # counted already, by close()
            return
        if future.cancelled() or future.exception() is not None:
            self._lost(models)
        else:
            self._held -= sum(models.values())

    def _lost(self, models: Counter[str]) -> None:
        for model, n in models.items():
            UNPUBLISHED.labels(model).inc(n)
            self._held -= n
            self._counted += n

    async def drain(self, timeout: float) -> int:
        """Hand over what is queued at once and wait up to ``timeout`` seconds for Kafka's acknowledgements
        (the app's shutdown, before the producer stops); what is not handed over by then is counted
        unpublished. What the producer holds is left to its stop, which delivers it or gives it up, and
        then to :meth:`close`: counted here, what the producer delivered next was published and counted.
        Returns how many were counted unpublished meanwhile."""
        counted = self._counted
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._queue and (self._sender is None or self._sender.done()):
            self._sender = loop.create_task(self._run())
        while (left := deadline - loop.time()) > 0:
            waiting: set[asyncio.Future[Any]] = {future for future, _ in self._flights.values()}
            if self._sender is not None and not self._sender.done():
                waiting.add(self._sender)
            if not waiting:
                break
            await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()  # its flush counts what it had not handed over
            await asyncio.wait({self._sender})
        self._lost(Counter(q[4] for q in self._queue))
        self._queue.clear()
        return self._counted - counted

    def close(self) -> int:
        """Once the producer has stopped (after :meth:`drain`): count unpublished every prediction still
        held, one whose delivery the producer gave up or never finished; one it delivered is published.
        Returns how many were counted."""
        counted = self._counted
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()  # a send after the drain: its flush counts what it holds as it ends
        for n, (future, models) in list(self._flights.items()):
            if future.done():
                self._landed(n, future)
            else:
                del self._flights[n]
                self._lost(models)
        self._lost(Counter(q[4] for q in self._queue))
        self._queue.clear()
        return self._counted - counted
