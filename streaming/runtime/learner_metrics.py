"""The learner's Prometheus metrics (``rivulet learn run --metrics-port``, ``RIVULET_LEARNER_METRICS_PORT``).

What an on-call engineer asks of the learner: is it keeping up (lag per partition in records and in event
time, records/s, batch latency), is it saving its work (seconds since the last checkpoint), is data dropped
(dead letters by reason and stage), and how its models fare (the prequential metrics, overall and rolling,
the current version, drifts, challengers, promotions and rollbacks).

Lag, per partition of the learner's topics: ``rivulet_learner_lag_records`` is the partition's end offset
(its high watermark as the consumer last saw it) minus the position after the last record processed;
``rivulet_learner_lag_seconds`` is now minus the event time of the last record processed on it (the same
time the learner merges by). A partition that is read to its end and gets no new record shows a growing
``lag_seconds`` and ``lag_records`` 0: the alerts (``deploy/prometheus/alerts.yml``) ask for both.

The gauges are set by the learner's own loop (:meth:`LearnerMetrics.observe`, at most once a second), never
read from the scrape's thread: the learner's state is not shared across threads.

>>> from prometheus_client import generate_latest
>>> m = LearnerMetrics()
>>> m.processed([], 0.0)
>>> b"rivulet_learner_records_total 0.0" in generate_latest(m.registry)
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streaming.learning.deadletters import DeadLetterSink
from streaming.learning.evidence import Decision
from streaming.learning.merge import Positioned

if TYPE_CHECKING:
    from streaming.runtime.learner import KafkaTail
    from streaming.runtime.learner_session import Learner

__all__ = ["CountingSink", "LearnerMetrics"]

TP = tuple[str, int]


class LearnerMetrics:
    """The learner's metrics on their own registry (``registry``, default a new one: several learners
    in one test process do not collide). ``clock``: wall time (event times are wall-clock milliseconds)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        r = self.registry
        tp = ["topic", "partition"]
        self.lag_records = Gauge(
            "rivulet_learner_lag_records",
            "End offset minus the position after the last record processed, per partition",
            tp,
            registry=r,
        )
        self.lag_seconds = Gauge(
            "rivulet_learner_lag_seconds",
            "Now minus the event time of the last record processed, per partition",
            tp,
            registry=r,
        )
        self.position = Gauge(
            "rivulet_learner_position",
            "Position after the last record processed, per partition",
            tp,
            registry=r,
        )
        self.records = Counter("rivulet_learner_records_total", "Records processed", registry=r)
        self.batch = Histogram(
            "rivulet_learner_batch_seconds",
            "Time to process the records one poll released",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.checkpoint_age = Gauge(
            "rivulet_learner_checkpoint_age_seconds",
            "Seconds since the learner's last checkpoint (or its session's start)",
            registry=r,
        )
        self.pending_records = Gauge(
            "rivulet_learner_uncheckpointed_records",
            "Records processed since the last checkpoint",
            registry=r,
        )
        self.dead_letters = Counter(
            "rivulet_learner_dead_letters_total",
            "Records sent to dead letters",
            ["reason", "stage"],
            registry=r,
        )
        self.decisions = Counter(
            "rivulet_learner_decisions_total",
            "Lifecycle decisions: challenger, promotion, rollback, retirement",
            ["spec", "kind"],
            registry=r,
        )
        m = ["model", "spec", "role"]
        self.version = Gauge("rivulet_learner_model_version", "Current version per model", m, registry=r)
        self.metric = Gauge(
            "rivulet_learner_model_metric",
            "Prequential metric per model (window: overall or rolling)",
            [*m, "metric", "window"],
            registry=r,
        )
        self.learned = Gauge("rivulet_learner_model_learned", "Records learned per model", m, registry=r)
        self.drifts = Gauge("rivulet_learner_model_drifts", "Drifts detected per model", m, registry=r)
        self.quarantined = Gauge(
            "rivulet_learner_model_quarantined", "1 while a model is quarantined", m, registry=r
        )
        self.challengers = Gauge(
            "rivulet_learner_challengers",
            "Challengers learning beside the champion, per spec",
            ["spec"],
            registry=r,
        )
        self._last: dict[TP, tuple[int, int]] = {}  # (topic, partition) -> (position, event time ms)
        self._observed = 0.0
        self._models: set[tuple[str, str, str]] = set()
        self._metric_keys: set[tuple[str, ...]] = set()
        self._samples: dict[str, dict[str, Any]] = {}  # model -> its last checkpoint's monitoring sample

    # ------------------------------------------------------------------ wiring

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """The ``/metrics`` endpoint, on a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)

    def sink(self, inner: DeadLetterSink) -> CountingSink:
        return CountingSink(inner, self)

    def watch(self, session: Learner) -> None:
        """Count ``session``'s lifecycle decisions (chained before its own handler)."""
        core = session.core
        then = core.on_decision

        def decided(decision: Decision) -> None:
            self.decisions.labels(decision.spec, decision.kind).inc()
            if then is not None:
                then(decision)

        core.on_decision = decided
        session.on_saved = self._saved

    def _saved(self, name: str, sample: dict[str, Any]) -> None:
        """A checkpoint's monitoring sample: the metrics as the checkpoint read them. Reading a model's
        metrics is not free of effects (``ModelState.metric_values`` settles a rolling window's deferred
        pairs; a metric may fill a defaultdict as it is read): read only where the checkpoint reads them,
        the state stays the one a replay rebuilds."""
        self._samples[name] = sample

    def start(self, tail: KafkaTail) -> None:
        """Each partition's position where the learner starts reading it (no record processed yet)."""
        for topic, partition in tail.assigned():
            key = (topic, partition)
            if key not in self._last:
                self._last[key] = (tail.consumer.position(_tp(key)), -1)

    # ------------------------------------------------------------------ the loop's calls

    def processed(self, recs: Sequence[Positioned], seconds: float) -> None:
        """One round's records, processed in ``seconds``."""
        if not recs:
            return
        self.records.inc(len(recs))
        self.batch.observe(seconds)
        last = self._last
        for rec in recs:
            last[(rec.topic, rec.partition)] = (rec.offset + 1, rec.ts)

    def observe(self, session: Learner, tail: KafkaTail, *, force: bool = False) -> None:
        """Set the gauges from the session and the consumer (at most once a second unless ``force``)."""
        now = self.clock()
        if not force and now - self._observed < 1.0:
            return
        self._observed = now
        consumer = tail.consumer
        for key, (position, ts) in self._last.items():
            labels = (key[0], str(key[1]))
            self.position.labels(*labels).set(position)
            high = consumer.highwater(_tp(key))
            if high is not None:
                self.lag_records.labels(*labels).set(max(0, high - position))
            if ts >= 0:
                self.lag_seconds.labels(*labels).set(now - ts / 1000.0)
        self.checkpoint_age.set(session.clock() - session.last_checkpoint)
        self.pending_records.set(session.since_checkpoint)
        self._observe_models(session)

    def _observe_models(self, session: Learner) -> None:
        seen: set[tuple[str, str, str]] = set()
        challengers: dict[str, int] = {s.name: 0 for s in session.specs}
        for name, state in list(session.core.models.items()):
            labels = (name, state.spec, state.role)
            seen.add(labels)
            if state.role == "challenger" and state.status == "learning":
                challengers[state.spec] = challengers.get(state.spec, 0) + 1
            version = session.router.bases.get(name, {}).get("version")
            if version is not None:
                self.version.labels(*labels).set(version)
            self.learned.labels(*labels).set(state.n_learned)
            self.drifts.labels(*labels).set(state.counters.get("drifts", 0))
            self.quarantined.labels(*labels).set(1 if state.quarantined else 0)
            sample = self._samples.get(name)
            if sample is not None:  # as of its last checkpoint (see _saved)
                for metric, value in (sample.get("metrics") or {}).items():
                    window = "rolling" if metric.startswith("rolling_") else "overall"
                    key = (*labels, metric.removeprefix("rolling_"), window)
                    self.metric.labels(*key).set(value)
                    self._metric_keys.add(key)
        for spec, n in challengers.items():
            self.challengers.labels(spec).set(n)
        for gone in self._models - seen:  # a retired model deleted, a role changed: its old series go
            for gauge in (self.version, self.learned, self.drifts, self.quarantined):
                gauge.remove(*gone)
            self._forget_metric(gone)
        self._models = seen

    def _forget_metric(self, labels: tuple[str, str, str]) -> None:
        for key in [k for k in self._metric_keys if k[:3] == labels]:
            self.metric.remove(*key)
            self._metric_keys.discard(key)


class CountingSink:
    """A dead-letter sink that counts each letter by reason and stage before handing it on."""

    def __init__(self, inner: DeadLetterSink, metrics: LearnerMetrics) -> None:
        self.inner, self.metrics = inner, metrics

    def send(self, letter: Any) -> None:
        self.metrics.dead_letters.labels(letter.reason, letter.stage).inc()
        self.inner.send(letter)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def _tp(key: TP) -> Any:
    from kafka import TopicPartition

    return TopicPartition(*key)
