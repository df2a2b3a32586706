"""Each stage's lag, measured by the API from outside the stages (issue 18), for ``/metrics`` and the
dashboard: a stopped learner exports nothing, so the lag alerts need a process that keeps running while
it is down, and the API is one (it reads the registry already, and Prometheus scrapes it).

:class:`LagWatcher` measures with :func:`streaming.runtime.pipeline_status.measure_lag` (what ``rivulet
status`` prints, the same code) every ``RIVULET_SERVE_LAG_S`` seconds on a thread, never on the request
path; a request or a scrape reads the last measurement. A measurement never raises into the API: Kafka
unreachable, a topic missing, a checkpoint whose offsets are garbage make the stage's lag *not known*
(``rivulet_stage_lag_known 0``, and no lag series rather than a 0), as does a measurement older than
:attr:`LagWatcher.stale_s` (a thread stuck past its timeouts). Off with ``RIVULET_SERVE_LAG_S=0``.

Exported (scope ``read``, with the API's other metrics):

- ``rivulet_stage_lag_records{stage, topic, partition}``: end offset minus the stage's position;
- ``rivulet_stage_lag_seconds{stage, topic, partition}``: now minus the event time of the oldest record
  waiting (0 when nothing waits), as of the scrape: it keeps growing while the stage is stopped;
- ``rivulet_stage_lag_known{stage}``: 1 when the last measurement of the stage is whole and fresh;
- ``rivulet_stage_lag_measured_timestamp_seconds{stage}``: when it was measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric

from streaming.learning.registry import Registry
from streaming.logs import get_logger
from streaming.runtime.stage_lag import STAGES, StageLag
from streaming.settings import Settings

__all__ = ["LAG_METRICS", "LagWatcher", "StageView"]

log = get_logger("rivulet.serving.lag")


@dataclass(frozen=True)
class StageView:
    """A stage's lag as the dashboard shows it: its worst partition in records and in event time, the
    records behind over all partitions, whether it is known and why not."""

    stage: str
    known: bool
    records: int | None  # over every partition
    worst_records: int | None
    worst_records_partition: str | None
    worst_seconds: float | None
    worst_seconds_partition: str | None
    measured_at: float | None
    problems: tuple[str, ...]


Measure = Callable[[], dict[str, StageLag]]


class LagWatcher:
    """Measures each stage's lag every ``interval_s`` seconds with ``measure`` (on a thread), keeping the
    last result; ``timeout_s`` bounds each Kafka call of a measurement."""

    def __init__(
        self,
        measure: Measure,
        *,
        interval_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.measure, self.interval_s, self.timeout_s, self.clock = measure, interval_s, timeout_s, clock
        # a measurement makes a few Kafka calls, each bounded by timeout_s: past this it is stuck
        self.deadline_s = 4 * timeout_s + 1.0
        self.stale_s = 2 * interval_s + self.deadline_s  # older than this: not known
        self.last: dict[str, StageLag] = {}
        self._task: asyncio.Task[None] | None = None
        self._thread: asyncio.Future[dict[str, StageLag]] | None = None

    @classmethod
    def of(cls, settings: Settings, registry: Registry) -> LagWatcher | None:
        """The API's watcher (None: ``RIVULET_SERVE_LAG_S=0``)."""
        if settings.serve_lag_s <= 0:
            return None
        from streaming.runtime.pipeline_status import measure_lag, model_statuses

        timeout = settings.serve_lag_timeout_s

        def measure() -> dict[str, StageLag]:
            return measure_lag(settings, registry, model_statuses(registry, time.time()), timeout_s=timeout)

        return cls(measure, interval_s=settings.serve_lag_s, timeout_s=timeout)

    async def start(self) -> None:
        LAG_METRICS.watchers.add(self)
        self._task = asyncio.create_task(self._run(), name="rivulet-lag")

    async def stop(self) -> None:
        LAG_METRICS.watchers.discard(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> None:
        """One measurement (never raises: a failure makes every stage's lag not known)."""
        if self._thread is None or self._thread.done():
            self._thread = asyncio.ensure_future(asyncio.to_thread(self.measure))
        try:
            got = await asyncio.wait_for(asyncio.shield(self._thread), self.deadline_s)
        except asyncio.CancelledError:
            raise
        except TimeoutError:  # the thread goes on (it cannot be stopped); the next refresh waits for it
            self._unknown(f"the measurement took more than {self.deadline_s:g} s")
            return
        except Exception as exc:  # the registry unreadable, anything: said, never raised
            self._unknown(f"{type(exc).__name__}: {exc}")
            return
        for stage, lag in got.items():
            before = self.last.get(stage)
            self.last[stage] = lag
            if lag.problems and (before is None or before.problems != lag.problems):  # once per change
                log.warning("stage lag not known", stage=stage, problems=lag.problems[:5])

    def _unknown(self, why: str) -> None:
        if any(lag.problems != [why] for lag in self.last.values()) or not self.last:  # once per change
            log.warning("stage lag not measured", error=why)
        now = self.clock()
        self.last = {stage: StageLag(stage, problems=[why], measured_at=now) for stage in STAGES}

    def current(self) -> dict[str, StageLag]:
        """The last measurement per stage; one older than :attr:`stale_s` is replaced by a stage without
        partitions whose problem says so."""
        now = self.clock()
        out: dict[str, StageLag] = {}
        for stage in STAGES:
            lag = self.last.get(stage)
            if lag is None:
                lag = StageLag(stage, problems=["not measured yet"])
            elif now - lag.measured_at > self.stale_s:
                lag = StageLag(stage, problems=[f"last measured {now - lag.measured_at:.0f} s ago"])
            out[stage] = lag
        return out

    def views(self) -> list[StageView]:
        now = self.clock()
        out = []
        for stage, lag in self.current().items():
            by_records = [(r, p) for p in lag.partitions if (r := p.records) is not None]
            by_seconds = [(s, p) for p in lag.partitions if (s := p.seconds(now)) is not None]
            top_r = max(by_records, key=lambda x: x[0], default=None)
            top_s = max(by_seconds, key=lambda x: x[0], default=None)
            out.append(
                StageView(
                    stage=stage,
                    known=lag.known,
                    records=lag.records,
                    worst_records=top_r[0] if top_r else None,
                    worst_records_partition=f"{top_r[1].topic}[{top_r[1].partition}]" if top_r else None,
                    worst_seconds=round(top_s[0], 3) if top_s else None,
                    worst_seconds_partition=f"{top_s[1].topic}[{top_s[1].partition}]" if top_s else None,
                    measured_at=lag.measured_at or None,
                    problems=tuple(lag.problems),
                )
            )
        return out

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        labels = ["stage", "topic", "partition"]
        records = GaugeMetricFamily(
            "rivulet_stage_lag_records", "End offset minus the stage's position, per partition", labels=labels
        )
        seconds = GaugeMetricFamily(
            "rivulet_stage_lag_seconds",
            "Now minus the event time of the oldest record waiting (0: none waits), per partition",
            labels=labels,
        )
        known = GaugeMetricFamily(
            "rivulet_stage_lag_known",
            "1: the stage's last lag measurement is whole and fresh",
            labels=["stage"],
        )
        measured = GaugeMetricFamily(
            "rivulet_stage_lag_measured_timestamp_seconds",
            "When the stage's lag was last measured",
            labels=["stage"],
        )
        for stage, lag in self.current().items():
            known.add_metric([stage], 1.0 if lag.known else 0.0)
            if lag.measured_at:
                measured.add_metric([stage], lag.measured_at)
            for p in lag.partitions:
                key = [stage, p.topic, str(p.partition)]
                if (r := p.records) is not None:
                    records.add_metric(key, r)
                if (s := p.seconds(now)) is not None:
                    seconds.add_metric(key, s)
        yield from (records, seconds, known, measured)


class _LagMetrics:
    """The running watchers' metrics, read when Prometheus scrapes (no Kafka call on a scrape)."""

    def __init__(self) -> None:
        self.watchers: weakref.WeakSet[LagWatcher] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        for watcher in list(self.watchers):
            yield from watcher.collect()


LAG_METRICS = _LagMetrics()
REGISTRY.register(LAG_METRICS)
