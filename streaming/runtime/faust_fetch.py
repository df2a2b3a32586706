"""Faust's consumer with a fetch wait of the app's choosing instead of its hardcoded 1.5 s.

Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting to change it. A worker's
consumer is also assigned Faust's ``<app>-__assignor-__leader`` partition, which never receives a record,
on the same broker as the events partitions, and aiokafka keeps at most one fetch request in flight per
broker, asking only for the partitions whose previous records were all handed out. When a response brings
records for every events partition (about 2,000 events/s and up on three partitions), the next request
asks for the leader partition alone: the broker holds it the full wait, since no record comes, and no
events partition is fetched meanwhile. The response after it brings the 1.5 s of events that piled up, for
every partition again, so the cycle repeats: measured at 2,000 events/s, fetches of the leader partition
alone taking 1,500 ms one after another and a standing delay of 1.0-1.6 s between an event's send and its
vector in Redis, with the worker half idle (notes: fresh-13b.md). With a short wait such a request returns
within it; an idle worker pays one empty fetch per wait.

:class:`App` is a ``faust.App`` whose consumer waits ``fetch_max_wait_ms`` (brokers ``kafka://`` only).

Its seek back to the committed offsets after a rebalance (Faust's recovery: "Seek stream partitions to
committed offsets") also rewinds a partition that has no committed offset, or 0, to where the consumer's
``auto_offset_reset`` starts it (:func:`rewind_to_committed`). aiokafka's ``seek_to_committed`` leaves such
a partition where it is, and records handed out after the assignment but before the flow resumed are dropped
(:mod:`streaming.runtime.faust_bulk`, the worker's batches taken before a rebalance): they were then never
read again in that generation. Issue 15, kill drill run d8: a worker newly assigned a repartition partition
with nothing committed read 0-3225 during the seek, dropped them, went on at 3226 and published feature
records of entities whose events 2234-3225 it had skipped (acknowledged offsets stopped at 2233, Faust's
commit stuck at 2234; a Redis commit of that batch would have lost those events for good).
"""

from __future__ import annotations

from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from streaming.errors import StreamingError
from streaming.runtime import kafka_records

__all__ = ["App", "Consumer", "Transport", "rewind_to_committed"]


async def rewind_to_committed(consumer: Any, reset: str) -> dict[Any, int | None]:
    """Seek each assigned partition of an aiokafka ``consumer`` to its committed offset, and one with none
    (or 0, which aiokafka does not seek to either) to where ``reset`` (its ``auto_offset_reset``: earliest
    or latest) starts it; returns the committed offsets, as aiokafka's ``seek_to_committed`` does."""
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    unset = [tp for tp, offset in committed.items() if not offset]
    if unset:
        if reset == "earliest":
            await consumer.seek_to_beginning(*unset)
        elif reset == "latest":
            await consumer.seek_to_end(*unset)
        else:
            raise StreamingError(f"no committed offset for {unset} and auto_offset_reset={reset!r}")
    return committed


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_consumer(self, loop: Any) -> Any:
        consumer = super()._create_consumer(loop)
        for name in ("_fetch_max_wait_ms", "_isolation_level"):  # aiokafka renamed it: fail, not silently
            if not hasattr(consumer, name):
                raise StreamingError(f"aiokafka's consumer has no {name}: update {__name__}")
        # read by its fetcher, which start() makes
        consumer._fetch_max_wait_ms = cast(App, self.app).fetch_max_wait_ms
        # committed records only, as every other consumer of Rivulet's (Faust reads uncommitted ones unless
        # exactly-once): the events of an aborted transaction are not events
        consumer._isolation_level = "read_committed"
        kafka_records.install()  # a record whose header name is not UTF-8 is read, not fatal
        return consumer

    async def seek_to_committed(self) -> Any:
        """Faust's, rewinding a partition without a committed offset too (module docstring). The consumer is
        looked up here, as Faust does: without one (not started) this raises instead of waiting on the
        thread (Faust's getmany seeks when it finds the flow stopped, and logs what it raised)."""
        consumer = self._ensure_consumer()
        reset = self.app.conf.consumer_auto_offset_reset
        return await self.call_thread(rewind_to_committed, consumer, reset)


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class App(faust.App):
    """A ``faust.App`` whose Kafka consumer waits at most
    ``fetch_max_wait_ms`` for a fetch (module docstring)."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)
