"""Feature views for Rivulet's bundled demo streams (River's ``Agrawal`` loan applications, used by
``synth:agrawal`` and ``synth:drift``). Load them with ``--features features.examples``.

``customer`` is keyed by the event's entity; ``site`` re-keys the same events by their ``zipcode`` field.
"""

from __future__ import annotations

from features.aggregations import Count, DistinctCount, Last, Max, Mean, Min, SinceLast, Std, Sum
from features.definitions import Derived, Expression, FeatureView
from features.windows import hopping, lifetime, sliding, tumbling

__all__ = ["ACTIVITY", "VIEWS"]


def _ratio(a: object, b: object) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return None
    return float(a) / float(b)


# the activity a loan view counts in every kind of window; scripts/bench_features.py times the engine on it
ACTIVITY = (
    Count(),
    Count(window=sliding("10m")),
    Mean("salary", window=sliding("10m")),
    Sum("loan", window=tumbling("1h")),
    Max("loan", window=sliding("30m")),
)

customer = FeatureView(
    name="customer",
    derived=[Derived("loan_to_salary", lambda f: _ratio(f["loan"], f["salary"]))],
    aggregations=[
        *ACTIVITY,
        Min("age", window=lifetime()),
        Std("hvalue", window=hopping("30m", "5m")),
        Mean("loan_to_salary"),
        Last("car"),
        DistinctCount("zipcode"),
        SinceLast(),
    ],
    expressions=[
        Expression(
            "loan_vs_mean_ratio", lambda v: _ratio(v["loan_to_salary"], v["loan_to_salary_mean_lifetime"])
        ),
    ],
    ttl="7d",
    allowed_lateness="5m",
)

site = FeatureView(
    name="site",
    entity="zipcode",
    aggregations=[Count(), Mean("salary", window=sliding("10m")), Mean("loan")],
    include_fields=False,
    ttl="7d",
    allowed_lateness="5m",
)

VIEWS = [customer, site]
