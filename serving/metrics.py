"""The API's Prometheus metrics, defined in one place (exported on ``/metrics``, scope ``read``).

The request path takes a metric's child for its labels from a :class:`Children` (``REQUESTS_OF(route,
status)``...), not from ``labels()``, which validates the values and takes the metric's lock on every call.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from serving.near_cache import NearCache

__all__ = [
    "CHAMPION",
    "DECISIONS",
    "FEATURE_AGE",
    "FEATURE_AGE_OF",
    "LATENCY",
    "LATENCY_OF",
    "NEAR_CACHES",
    "PREDICTIONS",
    "PREDICTIONS_OF",
    "REJECTED",
    "REQUESTS",
    "REQUESTS_OF",
    "SAVED",
    "UNPUBLISHED",
    "UNPUBLISHED_OF",
    "VERSION",
    "Children",
    "watch_near_cache",
]

M = TypeVar("M", Counter, Gauge, Histogram)

REQUESTS = Counter("rivulet_http_requests_total", "HTTP requests", ["route", "status"])
LATENCY = Histogram(
    "rivulet_http_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
PREDICTIONS = Counter("rivulet_predictions_total", "Predictions served", ["model", "version"])
UNPUBLISHED = Counter(
    "rivulet_predictions_unpublished_total", "Predictions not published to Kafka", ["model"]
)
FEATURE_AGE = Histogram(
    "rivulet_feature_age_seconds",
    "Age of the online features used",
    ["model"],
    buckets=(0.01, 0.1, 1, 10, 60, 600, 3600, 86400),
)


class Children(Generic[M]):
    """A metric's children, kept per label values: ``children(*values)`` is ``metric.labels(*values)``, a
    dict lookup after the first call. At most ``limit`` are kept (then forgotten, not lost: the metric
    keeps them). Only for a metric whose children are never removed (a removed child kept here would count
    where nobody reads).

    >>> c = Counter("doctest_children_total", "a counter", ["route"], registry=None)
    >>> kept = Children(c)
    >>> kept("/a").inc(); kept("/a").inc(2)
    >>> kept("/a") is c.labels("/a"), c.labels("/a")._value.get()
    (True, 3.0)
    """

    def __init__(self, metric: M, limit: int = 10_000) -> None:
        self.metric: M = metric
        self.limit = limit
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            if len(self._children) >= self.limit:
                self._children.clear()
            child = self._children[values] = self.metric.labels(*values)
        return child


REQUESTS_OF = Children(REQUESTS)
LATENCY_OF = Children(LATENCY)
PREDICTIONS_OF = Children(PREDICTIONS)
UNPUBLISHED_OF = Children(UNPUBLISHED)
FEATURE_AGE_OF = Children(FEATURE_AGE)

VERSION = Gauge("rivulet_serving_model_version", "Model version in use", ["model"])
SAVED = Gauge(  # issue 18: the RivuletServedModelStale alert
    "rivulet_serving_model_saved_timestamp_seconds", "When the version in use was checkpointed", ["model"]
)
REJECTED = Gauge(
    "rivulet_learner_rejected_records",
    "Records the learner rejected, per reason, as of the served version's checkpoint",
    ["model", "reason"],
)
CHAMPION = Gauge(
    "rivulet_champion", "1: the model its champion pointer names for a spec (issue 14)", ["spec", "model"]
)
DECISIONS = Gauge(
    "rivulet_lifecycle_decisions",
    "A spec's kept lifecycle decisions, per kind (challenger, promotion, rollback, retirement)",
    ["spec", "kind"],
)


class _NearCaches:
    """The near caches' counts (:class:`serving.near_cache.CacheStats`), read when Prometheus scrapes: the
    hot path adds to plain integers, not to Prometheus counters (a lock each)."""

    def __init__(self) -> None:
        self.caches: weakref.WeakSet[NearCache] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        caches = list(self.caches)
        for name, doc in (
            ("hits", "Entities served from the near cache"),
            ("misses", "Entities read from Redis (not in the near cache, or the cache off)"),
            ("invalidations", "Near-cache keys invalidated by Redis"),
            ("flushes", "Times the near cache was emptied (tracking lost or re-established, FLUSHDB)"),
        ):
            total = sum(getattr(c.stats, name) for c in caches)
            yield CounterMetricFamily(f"rivulet_near_cache_{name}", doc, value=total)
        yield GaugeMetricFamily(
            "rivulet_near_cache_entries", "Vectors in the near cache", value=sum(len(c) for c in caches)
        )


NEAR_CACHES = _NearCaches()
REGISTRY.register(NEAR_CACHES)


def watch_near_cache(cache: NearCache) -> None:
    """Export ``cache``'s counts (as long as it lives)."""
    NEAR_CACHES.caches.add(cache)
