"""The API's Kafka producer (its predictions, and the events and labels it ingests), replaced when it can no
longer deliver.

aiokafka's idempotent producer numbers each partition's batches. A batch that fails once numbered leaves a
gap the broker never accepts: Kafka stopped for longer than the request timeout (the partition without a
leader meanwhile, the batch expired) or a batch the broker refused, and every later batch of the partition
fails with ``OutOfOrderSequenceNumber``. aiokafka neither bumps its epoch nor takes a new producer id, as
the Java client does (aiokafka issue 1017). Before, after every Kafka restart that took longer than the
request timeout, the API published no prediction and ingested no event (503) on such a partition until it
was restarted itself. :class:`ProducerSlot` replaces that producer with a new one (a new producer id, its
sequences from 0), as it does one whose sender task ended. It also goes on starting the first producer in
the background when Kafka does not answer at start-up: before, the API never published then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import OutOfOrderSequenceNumber

from streaming.logs import get_logger

__all__ = ["ProducerSlot", "WatchedProducer"]

log = get_logger("rivulet.serving")
STOP_S = 5.0  # longest wait, as a producer stops, for Kafka to take what it holds
Broken = Callable[["WatchedProducer"], None]


class WatchedProducer(AIOKafkaProducer):
    """aiokafka's producer, which calls ``broken(self)`` when a delivery fails out of sequence or its sender
    task has ended (every later send then raises the sender's error)."""

    def __init__(self, broken: Broken, **config: Any) -> None:
        super().__init__(**config)
        self._broken = broken

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        return self._watched(await self._checked(super().send(*args, **kwargs)))

    async def send_batch(self, *args: Any, **kwargs: Any) -> Any:
        return self._watched(await self._checked(super().send_batch(*args, **kwargs)))

    async def _checked(self, sending: Any) -> Any:
        try:
            return await sending
        except Exception as exc:
            sender = self._sender.sender_task
            if isinstance(exc, OutOfOrderSequenceNumber) or (sender is not None and sender.done()):
                self._broken(self)
            raise

    def _watched(self, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        future.add_done_callback(self._delivered)
        return future

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and isinstance(future.exception(), OutOfOrderSequenceNumber):
            self._broken(self)


class ProducerSlot:
    """The API's producer of the moment, :attr:`current`: None while there is none that can deliver (Kafka
    away at start-up, a broken producer being replaced), when predictions are counted unpublished and ingest
    answers 503. ``make(broken)`` makes a producer (not started) that calls ``broken`` as
    :class:`WatchedProducer` does."""

    def __init__(self, make: Callable[[Broken], AIOKafkaProducer], retry_s: float = 1.0) -> None:
        self.current: AIOKafkaProducer | None = None
        self._make = make
        self._retry_s = retry_s
        self._starting: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start a producer; Kafka away: go on starting one in the background, every ``retry_s``."""
        if not await self._start_one():
            self._starting = asyncio.get_running_loop().create_task(self._until_started())

    async def stop(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self.current is not None:
            await _stop(self.current)
            self.current = None
        if self._retiring:
            await asyncio.wait(self._retiring)

    def _broken(self, producer: WatchedProducer) -> None:
        if producer is not self.current:  # another of its deliveries told already
            return
        log.error("kafka producer out of sequence with the broker: replacing it with a new producer")
        self.current = None
        loop = asyncio.get_running_loop()
        retiring = loop.create_task(_stop(producer))  # what it still holds fails or is delivered
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)
        self._starting = loop.create_task(self._until_started())

    async def _until_started(self) -> None:
        while not await self._start_one(quiet=True):
            await asyncio.sleep(self._retry_s)
        log.info("kafka producer started: predictions published again")

    async def _start_one(self, quiet: bool = False) -> bool:
        producer = self._make(self._broken)
        try:
            await producer.start()
        except Exception as exc:  # scoring works without Kafka; predictions are not published meanwhile
            if not quiet:
                log.error("kafka unavailable: predictions not published until it answers", error=str(exc))
            await _stop(producer)
            return False
        except asyncio.CancelledError:  # stopped while starting
            await _stop(producer)
            raise
        self.current = producer
        return True


async def _stop(producer: AIOKafkaProducer) -> None:
    """Stop ``producer``, waiting at most ``STOP_S`` for what it holds: an idempotent producer retries a batch
    until Kafka takes it, and its ``stop`` waits for all of them (with Kafka gone, ``rivulet serve`` ignored
    SIGTERM for as long as it was away)."""
    try:
        await asyncio.wait_for(producer.stop(), STOP_S)
    except TimeoutError:
        log.warning("kafka producer stopped without delivering what it held", waited_s=STOP_S)
        # its sender went on retrying, and delivered after the outbox had counted them unpublished: what
        # stop() does after the wait, aiokafka's sender cancelled and its connections closed
        with contextlib.suppress(Exception):
            await producer._sender.close()
            await producer.client.close()
    except Exception:  # stopping a producer that failed to start, or broken: nothing more to do
        pass
