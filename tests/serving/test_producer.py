"""The API's producer (serving.producer) through the API's services (serving.app.RedisServices) on a Kafka
of its own that the tests stop and start: a restart that outlasts the request timeout, and Kafka away when
the API starts. Predictions go through the outbox as the scoring route sends them; every prediction is
published or counted unpublished, once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from localservices import KafkaNode

from serving.app import RedisServices
from serving.metrics import UNPUBLISHED
from serving.outbox import Outbox
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings
from tests.support.api_env import free_port
from tests.support.kafka_read import read_all
from tests.support.serving_env import serving_settings

pytestmark = pytest.mark.integration

MODEL = "producer-model"


@pytest.fixture(scope="module")
def kafka_node(tmp_path_factory: pytest.TempPathFactory, kafka_up: str) -> Iterator[KafkaNode]:
    """One private node for the module (a JVM's start-up each), killed at the end."""
    node = KafkaNode(
        tmp_path_factory.mktemp("kafka") / "kafka", port=free_port(), controller_port=free_port(), heap="256m"
    )
    yield node
    node.kill()


@pytest.fixture
def api_settings(kafka_node: KafkaNode, settings: Settings, redis_client: Any) -> Settings:
    """The API's settings on the private node (running, its predictions topic created), with a request
    timeout of 2 s: a batch without a leader for longer expires."""
    kafka_node.start()
    s = serving_settings(settings, kafka_bootstrap=kafka_node.bootstrap, kafka_request_timeout_ms=2_000)
    with TopicAdmin(s) as admin:
        admin.create([s.topics.predictions], partitions=2)
    return s


class Predictions:
    """Predictions sent as the scoring route does (``serving.routes.scoring._publish``): to the services'
    producer of the moment through the outbox, counted unpublished when there is none."""

    def __init__(self, svc: RedisServices) -> None:
        self.svc = svc
        self.outbox = Outbox(linger_s=0.002)
        self.sent: list[bytes] = []
        self.before = unpublished()

    def send(self, value: bytes) -> None:
        self.sent.append(value)
        producer = self.svc.producer
        if producer is None:
            UNPUBLISHED.labels(MODEL).inc()
        else:
            self.outbox.send(producer, self.svc.settings.topics.predictions, value, value[-2:], MODEL)

    async def published(self, values: list[bytes]) -> bool:
        """Are all of ``values`` on the topic, once the outbox holds none of them?"""
        for _ in range(200):
            if self.outbox.held == 0:
                break
            await asyncio.sleep(0.05)
        s = self.svc.settings
        got = await asyncio.to_thread(read_all, s.kafka_bootstrap, s.topics.predictions)
        return set(values) <= {r.value for r in got}

    async def accounted(self) -> tuple[int, int, int, float]:
        """(sent, published, distinct published, counted unpublished), the outbox drained."""
        assert await self.outbox.drain(30) == 0 and self.outbox.held == 0
        s = self.svc.settings
        got = [r.value for r in await asyncio.to_thread(read_all, s.kafka_bootstrap, s.topics.predictions)]
        return len(self.sent), len(got), len(set(got)), unpublished() - self.before


def unpublished() -> float:
    return float(UNPUBLISHED.labels(MODEL)._value.get())


async def _rounds(predictions: Predictions, name: str) -> int | None:
    """Rounds of 10 predictions, a second apart, until one is published whole (its round), at most 60."""
    for n in range(60):
        values = [b"%s-%d-%02d" % (name.encode(), n, i) for i in range(10)]
        for value in values:
            predictions.send(value)
        if await predictions.published(values):
            return n
        await asyncio.sleep(1)
    return None


def test_a_kafka_restart_longer_than_the_request_timeout_leaves_predictions_published(
    kafka_node: KafkaNode, api_settings: Settings
) -> None:
    """Before: Kafka stopped for longer than the request timeout (a restart, an upgrade) with predictions
    on their way, the batches of the partition without a leader expired after aiokafka had numbered them;
    the broker back, it refused every later batch of those partitions (``OutOfOrderSequenceNumber``) and the
    API published no prediction again until it was restarted (found with a real ``rivulet serve``: 20,263
    of 273,872 predictions published, none after the restart). Now the producer is replaced: predictions
    are published again once Kafka is back, and every one is published or counted unpublished, once."""

    async def go() -> tuple[int | None, tuple[int, int, int, float]]:
        svc = RedisServices(api_settings)
        await svc.start()
        predictions = Predictions(svc)
        try:
            assert await _rounds(predictions, "before") == 0

            async def sending() -> None:
                for i in range(100_000):
                    predictions.send(b"down-%d" % i)
                    await asyncio.sleep(0.01)

            during = asyncio.get_running_loop().create_task(sending())
            await asyncio.sleep(0.5)
            await asyncio.to_thread(kafka_node.stop)  # graceful: the partitions lose their leader
            await asyncio.sleep(5)  # more than the request timeout: the batches in flight expire
            await asyncio.to_thread(kafka_node.start)
            during.cancel()
            return await _rounds(predictions, "after"), await predictions.accounted()
        finally:
            await svc.stop()

    round_, (sent, published, distinct, lost) = asyncio.run(go())
    assert round_ is not None, "no prediction published once Kafka was back"
    assert published == distinct and published + lost == sent, (sent, published, distinct, lost)


def test_kafka_away_when_the_api_starts_then_back_predictions_are_published(
    kafka_node: KafkaNode, api_settings: Settings
) -> None:
    """Before: with Kafka away at start-up, the API logged that predictions would not be published, and
    never published one (nor ingested an event: 503) until it was restarted. Now it goes on starting its
    producer in the background: counted unpublished meanwhile, published once Kafka answers."""
    kafka_node.stop()

    async def go() -> tuple[bool, int | None, tuple[int, int, int, float]]:
        svc = RedisServices(api_settings)
        await svc.start()
        predictions = Predictions(svc)
        try:
            away = svc.producer is None
            predictions.send(b"away-0")  # counted unpublished
            await asyncio.to_thread(kafka_node.start)
            return away, await _rounds(predictions, "back"), await predictions.accounted()
        finally:
            await svc.stop()

    away, round_, (sent, published, distinct, lost) = asyncio.run(go())
    assert away and round_ is not None, (away, round_)
    assert published == distinct and published + lost == sent and lost >= 1, (sent, published, distinct, lost)


def test_the_api_stops_with_kafka_gone_and_predictions_on_their_way(
    kafka_node: KafkaNode, api_settings: Settings
) -> None:
    """Before: Kafka killed with predictions handed to the producer, the API's stop never returned: aiokafka's
    idempotent producer retries a batch until Kafka takes it and its ``stop`` waits for all of them (a real
    ``rivulet serve`` still running 120 s after SIGTERM). Now the producer's stop waits ``STOP_S`` at most;
    every prediction is published or counted unpublished, once."""

    async def go() -> tuple[bool, tuple[int, int, int, float]]:
        svc = RedisServices(api_settings)
        await svc.start()
        predictions = Predictions(svc)
        assert await _rounds(predictions, "before") == 0
        await asyncio.to_thread(kafka_node.kill)
        for i in range(50):
            predictions.send(b"gone-%d" % i)
        await predictions.outbox.drain(1)  # handed to the producer, which never hears back
        try:  # a bound on the wait, for the test to fail rather than hang: not a measurement
            await asyncio.wait_for(svc.stop(), 60)
            stopped = True
        except TimeoutError:
            stopped = False
        predictions.outbox.close()
        await asyncio.to_thread(kafka_node.start)
        return stopped, await predictions.accounted()

    stopped, (sent, published, distinct, lost) = asyncio.run(go())
    assert stopped, "the API's stop did not return with Kafka gone"
    assert published == distinct == 10 and published + lost == sent, (sent, published, distinct, lost)


def test_predictions_kafka_takes_while_the_api_stops_are_not_counted_unpublished(
    kafka_node: KafkaNode, api_settings: Settings
) -> None:
    """Before: the outbox's drain counted unpublished what Kafka had not acknowledged when it gave up, and
    then the producer's stop delivered it (Kafka slow, here paused): published and counted. Now the drain
    leaves what the producer holds to its stop, and :meth:`Outbox.close`, after it, counts what is still
    not acknowledged: every prediction published or counted unpublished, once."""

    async def go() -> tuple[int, tuple[int, int, int, float]]:
        svc = RedisServices(api_settings)
        await svc.start()
        predictions = Predictions(svc)
        assert await _rounds(predictions, "before") == 0
        pid = kafka_node.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # Kafka paused: what is handed waits for it
        try:
            for i in range(50):
                predictions.send(b"paused-%d" % i)
            await predictions.outbox.drain(1)
        finally:
            os.kill(pid, signal.SIGCONT)
        await svc.stop()  # the producer's stop: Kafka takes them now
        return predictions.outbox.close(), await predictions.accounted()

    left, (sent, published, distinct, lost) = asyncio.run(go())
    assert published == distinct == 60 and lost == 0 == left, (sent, published, distinct, lost, left)
