"""The learner worker: features and labels topics in, signed checkpoints tied to offsets out.

One process is the single writer of its models. It assigns itself every partition of the features,
labels and predictions topics (no consumer group: offsets live in the checkpoints, not in Kafka), merges
them in a deterministic order (:mod:`streaming.learning.merge`) and hands each record to the pure
:class:`~streaming.learning.core.LearnerCore`.

Exactly-once effect on the models: a checkpoint stores each model's state together with the position after
the last record it processed, for every partition. On start each model is restored from its newest valid
checkpoint and the consumer seeks to those positions; records after them are processed again from the
restored state, in the same order, so nothing is learned twice or skipped, and replaying a topic up to a
checkpoint's offsets rebuilds that version.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis
from kafka import KafkaConsumer, TopicPartition

from features.definitions import load_views
from features.errors import FeaturesError
from features.events import Label
from streaming.learning.core import LearnerCore, ModelState
from streaming.learning.merge import Merger, Positioned
from streaming.learning.registry import ModelRegistry, NoValidVersion
from streaming.learning.spec import ModelSpec, SpecError
from streaming.logs import get_logger
from streaming.settings import Settings

__all__ = ["LearnerWorker"]

log = get_logger("rivulet.learn")
Offsets = dict[str, dict[int, int]]  # topic -> partition -> next offset to process


class LearnerWorker:
    def __init__(
        self,
        settings: Settings,
        specs: Sequence[ModelSpec],
        *,
        registry: ModelRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.signing_secret is None:
            raise ValueError("RIVULET_SIGNING_SECRET is required to write and read model snapshots")
        self.settings = settings
        self.specs = list(specs)
        self.core = LearnerCore(self.specs)
        self.registry = registry or ModelRegistry(
            redis.Redis.from_url(
                settings.redis_url,
                socket_timeout=settings.redis_socket_timeout_s,
                socket_connect_timeout=settings.redis_connect_timeout_s,
            ),
            settings.redis_prefix,
            settings.signing_secret.get_secret_value().encode(),
        )
        self.clock = clock
        self.offsets: dict[str, Offsets] = {}  # model -> its positions
        self.fingerprints = _fingerprints(settings)
        self._since_checkpoint = 0
        self._last_checkpoint = clock()
        self._stop = False
        self.rejected: list[str] = []
        self._checked: set[str] = set()

    # ------------------------------------------------------------------ recovery

    def restore(self) -> None:
        """Each model from its newest valid checkpoint (refused ones are logged and skipped)."""
        names = {s.name for s in self.specs}
        challengers = [n for n in self.registry.names() if n.split("~")[0] in names and n not in names]
        for name in [*names, *challengers]:
            try:
                opened, rejected = self.registry.load_latest(name)
            except NoValidVersion as exc:
                if exc.rejected:
                    self.rejected += exc.rejected
                    log.error("no valid checkpoint", model=name, refused=exc.rejected)
                continue
            self.rejected += rejected
            for reason in rejected:
                log.error("checkpoint refused, using an older one", model=name, reason=reason)
            state: ModelState = opened.state
            self.core.models[name] = state
            self.offsets[name] = {
                t: {int(p): o for p, o in parts.items()} for t, parts in opened.header["offsets"].items()
            }

    def _start_offset(self, topic: str, partition: int) -> int:
        return min(
            (self.offsets.get(m, {}).get(topic, {}).get(partition, 0) for m in self.core.models), default=0
        )

    # ------------------------------------------------------------------ the loop

    def run(self, *, max_idle_s: float | None = None, install_signals: bool = True) -> None:
        """Consume until stopped (SIGTERM/SIGINT), or until ``max_idle_s`` passes without records."""
        s = self.settings
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self.restore()
        consumer = KafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_poll_records=5_000,
            request_timeout_ms=s.kafka_request_timeout_ms,
        )
        topics = [s.topics.features, s.topics.labels, s.topics.predictions]
        # at equal times a label goes first: as in River's simulate_qa, answers due by now are revealed
        # before the next question is asked
        merger = Merger({s.topics.labels: 0, s.topics.features: 1, s.topics.predictions: 2})
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, self._start_offset(tp.topic, tp.partition))
            merger.track(tp.topic, tp.partition)

        def exhausted(key: tuple[str, int]) -> bool:
            tp = TopicPartition(*key)
            high = consumer.highwater(tp)
            return high is not None and consumer.position(tp) >= high

        last_record = self.clock()
        try:
            while not self._stop:
                for records in consumer.poll(timeout_ms=100).values():
                    for r in records:
                        data = _decode(r.value)
                        merger.add(r.topic, r.partition, r.offset, _ts(data, r.timestamp), data)
                progressed = False
                for rec in merger.ready(exhausted):
                    self.process(rec)
                    progressed = True
                now = self.clock()
                if progressed:
                    last_record = now
                if self._due(now):
                    self.checkpoint()
                if max_idle_s is not None and now - last_record > max_idle_s and not merger.buffered():
                    break
        finally:
            self.checkpoint()
            consumer.close()

    def stop(self) -> None:
        self._stop = True

    def process(self, rec: Positioned) -> None:
        s = self.settings
        position = (rec.topic, rec.partition, rec.offset)
        data = rec.value
        self._since_checkpoint += 1
        if not isinstance(data, dict):
            log.warning(
                "undecodable record skipped", topic=rec.topic, partition=rec.partition, offset=rec.offset
            )
        elif rec.topic == s.topics.features:
            event = data["event"]
            models = [
                m
                for m, st in self.core.models.items()
                if self.core.specs[st.spec].view == data.get("view") and self._fresh(m, rec)
            ]
            for m in models:
                if m not in self._checked:
                    self._check_features(m, data["features"])
            if models:
                self.core.on_record(
                    event["event_id"],
                    event["ts"],
                    data["features"],
                    event.get("label"),
                    position,
                    only=models,
                )
        elif rec.topic == s.topics.predictions:
            # a score served by the API: the models of its view predict on the features *as served*, and
            # learn from them when a label arrives for its prediction_id
            models = [
                m
                for m, st in self.core.models.items()
                if self.core.specs[st.spec].view == data.get("view") and self._fresh(m, rec)
            ]
            if models and isinstance(data.get("features"), dict) and data.get("prediction_id"):
                self.core.on_record(
                    f"p:{data['prediction_id']}",
                    int(data.get("ts") or 0),
                    data["features"],
                    None,
                    position,
                    only=models,
                )
        else:
            try:
                label = Label.parse(data)
            except FeaturesError:
                log.warning(
                    "invalid label skipped", topic=rec.topic, partition=rec.partition, offset=rec.offset
                )
            else:
                models = [m for m in self.core.models if self._fresh(m, rec)]
                self.core.on_label(label.join_key, label.label, label.ts, position, only=models)
        for m in self.core.models:
            self.offsets.setdefault(m, {}).setdefault(rec.topic, {})
            if self._fresh(m, rec):
                self.offsets[m][rec.topic][rec.partition] = rec.offset + 1

    def _check_features(self, model: str, vector: dict[str, Any]) -> None:
        spec = self.core.specs[self.core.models[model].spec]
        missing = sorted(set(spec.features or ()) - set(vector))
        if missing:
            raise SpecError(
                spec.name, f"unknown features {missing}: view {spec.view!r} gives {sorted(vector)}"
            )
        self._checked.add(model)

    def _fresh(self, model: str, rec: Positioned) -> bool:
        """The model has not processed this record yet (it may be behind the others after a restore)."""
        return rec.offset >= self.offsets.get(model, {}).get(rec.topic, {}).get(rec.partition, 0)

    # ------------------------------------------------------------------ checkpoints

    def _due(self, now: float) -> bool:
        policy = self.specs[0].checkpoint
        return self._since_checkpoint >= policy.every_records or (
            self._since_checkpoint > 0 and now - self._last_checkpoint >= policy.every_seconds
        )

    def checkpoint(self) -> dict[str, int]:
        """Save every model that moved since the last checkpoint; returns the new version numbers."""
        saved: dict[str, int] = {}
        if self._since_checkpoint == 0:
            return saved
        for name, state in self.core.models.items():
            spec = self.core.specs[state.spec]
            header = {
                "offsets": self.offsets.get(name, {}),
                "metrics": state.metric_values(),
                "counters": state.counters,
                "n_learned": state.n_learned,
                "last_learned_ts": state.last_ts,
                "saved_at": time.time(),
                "spec": spec.name,
                "view": spec.view,
                "feature_hash": self.fingerprints.get(spec.view),
                "drifts": [
                    [d.detector, d.ts, d.n_learned, list(d.position or ())] for d in state.drifts[-10:]
                ],
            }
            saved[name] = self.registry.save(name, state, header, keep=spec.checkpoint.keep)
        self._since_checkpoint = 0
        self._last_checkpoint = self.clock()
        log.info("checkpoint", versions=saved)
        return saved


def _decode(value: bytes | None) -> Any:
    try:
        return orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return None


def _ts(data: Any, fallback: int) -> int:
    """Event time of a features record or label time of a label (the merge key)."""
    if isinstance(data, dict):
        event = data.get("event")
        ts = event.get("ts") if isinstance(event, dict) else data.get("ts")
        if isinstance(ts, int):
            return ts
    return fallback


def _fingerprints(settings: Settings) -> dict[str, str]:
    try:
        return {v.name: v.fingerprint() for v in load_views(settings.features_module)}
    except FeaturesError:
        return {}
