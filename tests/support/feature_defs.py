"""Feature views used by the tests (workers load them with ``--features tests.support.feature_defs``)."""

from __future__ import annotations

from features.aggregations import Count, DistinctCount, Last, Max, Mean, Min, SinceLast, Std, Sum, Var
from features.definitions import Derived, Expression, FeatureView
from features.windows import hopping, sliding, tumbling

# every aggregation over every kind of window, with windows short enough that state gets pruned
ALL = FeatureView(
    name="all",
    derived=[Derived("sal_k", lambda f: f["salary"] / 1000), Derived("broken", lambda f: f["nope"])],
    aggregations=[
        Count(),
        Count(window=sliding("1m")),
        Count("loan", window=tumbling("2m")),
        Sum("loan", window=hopping("3m", "1m")),
        Mean("sal_k", window=sliding("90s")),
        Min("age", window=tumbling("1m")),
        Max("age"),
        Mean("loan"),  # lifetime: two loans of 1e308 took it to infinity (issue 11)
        Var("hvalue", window=sliding("2m")),
        Std("hvalue"),
        Last("car", window=hopping("2m", "30s")),
        Last("zipcode"),
        DistinctCount("zipcode", window=sliding("5m")),
        DistinctCount("elevel"),
        SinceLast(),
        SinceLast(window=sliding("30s")),
    ],
    expressions=[Expression("ratio", lambda v: v["loan_sum_3m_every_1m"] / v["count_lifetime"])],
    allowed_lateness="2m",
)

# re-keyed by a field: Faust repartitions the events by zipcode
ZIP = FeatureView(
    name="zip",
    entity="zipcode",
    aggregations=[Count(), Mean("salary", window=sliding("10m")), Max("loan")],
    include_fields=False,
    allowed_lateness="365d",
)

VIEWS = [ALL, ZIP]
DIRECT = [ALL]
