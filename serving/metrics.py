"""The API's Prometheus metrics, defined in one place (exported on ``/metrics``, scope ``read``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CHAMPION",
    "DECISIONS",
    "FEATURE_AGE",
    "LATENCY",
    "PREDICTIONS",
    "REJECTED",
    "REQUESTS",
    "SAVED",
    "UNPUBLISHED",
    "VERSION",
]

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
