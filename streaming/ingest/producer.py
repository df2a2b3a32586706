"""The producer SDK: publish validated events and late labels to Kafka.

Idempotent, ``acks=all``, batched with a short linger. Events are keyed by entity, so one entity's
events keep their order on one partition. A record the broker does not acknowledge, after retries and
within ``kafka_delivery_timeout_ms``, raises :class:`~streaming.errors.DeliveryError` from ``flush`` (and
from ``send_many``, which flushes): failures reach the caller, never only a log line.

Usage::

    with Producer(Settings()) as producer:
        producer.send({"entity": "u1", "ts": "2024-01-01T00:00:00Z", "fields": {"amount": 3.5}})
        producer.send_label(event_id, True)
    # leaving the block flushes and raises if anything was not delivered

Labels can be checked against a model task before they are sent (``label_check=``, a
:class:`~streaming.learning.labels.LabelCheck` for a task or for the models' specs): a label the models
cannot learn from raises :class:`~streaming.learning.errors.InvalidLabel` and is not sent::

    Producer(settings, label_check=LabelCheck.for_task("binary")).send_label(event_id, "banana")  # raises
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from features.events import Event, Label
from streaming.clients import kafka_producer, producer_config  # producer_config: re-exported here
from streaming.errors import DeliveryError, DeliveryFailure, EventTooLarge
from streaming.learning.labels import LabelCheck
from streaming.settings import Settings

__all__ = ["Producer", "producer_config"]

_PRUNE_EVERY = 20_000


class Producer:
    """Publishes events to ``<prefix>events`` and labels to ``<prefix>labels``.

    ``client`` may be given (any object with kafka-python's ``send``/``flush``/``close``) instead of a new
    ``KafkaProducer``; topics default to the settings' topic names. ``label_check``: labels (inline on an
    event or sent alone) are checked with it first (see the module docstring).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: KafkaProducer | None = None,
        events_topic: str | None = None,
        labels_topic: str | None = None,
        label_check: LabelCheck | None = None,
    ) -> None:
        self._settings = settings
        self.label_check = label_check
        self._client = client if client is not None else kafka_producer(settings)
        self.events_topic = events_topic or settings.topics.events
        self.labels_topic = labels_topic or settings.topics.labels
        self._limit = settings.max_event_bytes
        # (topic, key, record id, future) of records sent since the last flush
        self._inflight: list[tuple[str, str, str, FutureRecordMetadata]] = []
        self._failed: list[DeliveryFailure] = []
        self._delivered = 0

    # ------------------------------------------------------------------ sending

    def send(self, event: Event | Mapping[str, Any]) -> FutureRecordMetadata:
        """Validate and enqueue one event; returns kafka-python's future for its record metadata.

        Raises :class:`~features.errors.InvalidEvent` or :class:`~streaming.errors.EventTooLarge` before
        anything is sent, and :class:`~streaming.errors.DeliveryError` when the record cannot even be
        enqueued (no metadata or a full buffer for ``kafka_max_block_ms``).
        """
        valid: Event = event if isinstance(event, Event) else Event.parse(event)
        if self.label_check is not None and valid.label is not None:
            self.label_check(valid.label)
        value = valid.to_json()
        if len(value) > self._limit:
            raise EventTooLarge(valid.event_id, len(value), self._limit)
        return self._send(self.events_topic, valid.entity, valid.event_id, value)

    def send_many(self, events: Iterable[Event | Mapping[str, Any]], *, flush: bool = True) -> int:
        """Send every event, then (by default) flush; returns how many were acknowledged.

        Invalid events raise before they are sent (the ones before them are still flushed). Any record
        not acknowledged raises :class:`~streaming.errors.DeliveryError` naming each failed event.
        """
        send = self.send
        try:
            for event in events:
                send(event)
        except DeliveryError:
            raise
        except BaseException:
            if flush:
                self.flush()
            raise
        return self.flush() if flush else 0

    def send_label(
        self,
        event_id: str | None,
        label: str | int | float | bool,
        ts: int | str | datetime | None = None,
        *,
        prediction_id: str | None = None,
    ) -> FutureRecordMetadata:
        """Publish a label for an earlier event (or for a scoring API ``prediction_id``) to the labels topic.

        ``ts`` is when the label became known (defaults to now). With a ``label_check``, a label the models
        cannot take raises :class:`~streaming.learning.errors.InvalidLabel` and is not sent.
        """
        ts = int(time.time() * 1000) if ts is None else ts
        record = Label.parse({"event_id": event_id, "prediction_id": prediction_id, "label": label, "ts": ts})
        if self.label_check is not None:
            self.label_check(record.label)
        return self._send(self.labels_topic, record.join_key, record.join_key, record.to_json())

    def send_record(
        self, topic: str, value: bytes, key: bytes | None = None, record_id: str = ""
    ) -> FutureRecordMetadata:
        """Enqueue an already serialised record (e.g. a dead letter); its delivery is checked by ``flush``
        like the others'."""
        return self._send(topic, key.decode("utf-8", "replace") if key else "", record_id, value, raw_key=key)

    def _send(
        self, topic: str, key: str, record_id: str, value: bytes, *, raw_key: bytes | bool | None = True
    ) -> FutureRecordMetadata:
        """``raw_key``: the record's key as bytes (None: no key); by default ``key`` encoded."""
        kafka_key = key.encode() if raw_key is True else raw_key or None
        try:
            future = self._client.send(topic, value=value, key=kafka_key)
        except KafkaError as exc:
            # Not even enqueued: settle what is in flight, then report this record with the rest.
            self._failed.append(DeliveryFailure(topic, key, record_id, f"{type(exc).__name__}: {exc}"))
            failures, delivered = self._settle(None)
            raise DeliveryError(failures, delivered) from exc
        inflight = self._inflight
        inflight.append((topic, key, record_id, future))
        if len(inflight) >= _PRUNE_EVERY:
            self._prune()
        return future

    # ------------------------------------------------------------------ delivery

    def _prune(self) -> None:
        """Settle finished records so the in-flight list stays bounded on long streams."""
        keep = []
        for item in self._inflight:
            future = item[3]
            if not future.is_done:
                keep.append(item)
            elif future.failed():
                self._failed.append(DeliveryFailure(item[0], item[1], item[2], _describe(future.exception)))
            else:
                self._delivered += 1
        self._inflight = keep

    def _collect(self) -> tuple[list[DeliveryFailure], int]:
        self._prune()
        for topic, key, record_id, _ in self._inflight:
            self._failed.append(DeliveryFailure(topic, key, record_id, "not acknowledged within the timeout"))
        failures, delivered = self._failed, self._delivered
        self._inflight, self._failed, self._delivered = [], [], 0
        return failures, delivered

    def _settle(self, timeout_s: float | None) -> tuple[list[DeliveryFailure], int]:
        if timeout_s is None:
            timeout_s = self._settings.kafka_delivery_timeout_ms / 1000 + 1.0
        deadline = time.monotonic() + timeout_s
        # Records still unacknowledged after the timeout are reported by _collect, each by id.
        with contextlib.suppress(KafkaError):
            self._client.flush(timeout=timeout_s)
        # A batch completes before its records' futures are resolved by its callbacks: wait for those too.
        for item in self._inflight:
            if not item[3].is_done:
                with contextlib.suppress(Exception):  # failed or still pending: _collect reports it
                    item[3].get(timeout=max(deadline - time.monotonic(), 0.001))
        return self._collect()

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for every record sent so far; returns how many were acknowledged since the last flush.

        Raises :class:`~streaming.errors.DeliveryError` if any record failed or is still unacknowledged
        after ``timeout_s`` (default: the delivery timeout plus a second).
        """
        failures, delivered = self._settle(timeout_s)
        if failures:
            raise DeliveryError(failures, delivered)
        return delivered

    # ------------------------------------------------------------------ lifecycle

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, then close the client. Raises :class:`DeliveryError` if records were lost."""
        try:
            self.flush(timeout_s)
        finally:
            self._close_client()

    def _close_client(self) -> None:
        try:
            self._client.close(timeout=5)
        except KafkaError:
            # Records still pending here were already reported by flush; kafka-python's close raises
            # instead of giving up on them, so stop its sender first (it aborts what is incomplete).
            sender = getattr(self._client, "_sender", None)
            if sender is not None:
                sender.force_close()
                sender.join(5)
            with contextlib.suppress(KafkaError):
                self._client.close(timeout=0)

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except DeliveryError:
                if not isinstance(exc, DeliveryError):
                    raise


def _describe(exc: BaseException | None) -> str:
    return f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"
