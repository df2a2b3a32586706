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

# re-keyed by a field: Faust repartitions the events by zipcode. Its lateness accepts every event the tests
# send it: they are out of order across the source partitions by up to the stream's span, and the hour-late
# events of the streams with ``late_every`` must be applied too (``check_rekeyed_view`` expects a record for
# every event). It was "365d" until issue 13; a day keeps that and fits the tile bound (MAX_TILES = 10,000
# per window): the 10m sliding window's default 10 s tiles retain (10m + 1d) // 10s + 2 = 8,702 tiles at
# most, where 365 days would make it 3.2 million and the view is refused.
ZIP = FeatureView(
    name="zip",
    entity="zipcode",
    aggregations=[Count(), Mean("salary", window=sliding("10m")), Max("loan")],
    include_fields=False,
    allowed_lateness="1d",
)

VIEWS = [ALL, ZIP]
DIRECT = [ALL]

# For the hostile stream (tests.support.streams, ``stream(..., hostile=True)``, lateness 2m): every
# aggregation kind over windows of every kind: sliding ones with default resolutions (1m -> 1s, 90s -> 1.5s,
# 5m -> 5s) and declared ones, hopping ones whose step divides the size or not, lifetime ones (tiles of 2 s
# from the 2m lateness); near-constant values under var/std, the high-cardinality ``device`` and ``elevel``
# under distinct counts. No expression reads a distinct count (beyond 64 values the engine's is an estimate).
HOSTILE = FeatureView(
    name="hostile",
    derived=[Derived("sal_k", lambda f: f["salary"] / 1000)],
    aggregations=[
        Count(),
        Count("age", window=sliding("1m")),
        Sum("loan", window=hopping("3m", "1m")),
        Sum("loan", window=hopping("10m", "3m")),
        Mean("sal_k", window=sliding("90s")),
        Mean("hvalue", window=tumbling("2m")),
        Min("age", window=tumbling("1m")),
        Min("salary", window=sliding("5m")),
        Max("age", window=sliding("10m", resolution="1m")),
        Max("hvalue"),
        Var("hvalue", window=sliding("2m", resolution="10s")),
        Std("hvalue", window=hopping("4m", "1m")),
        Var("hvalue"),
        Std("hvalue"),
        Last("car", window=hopping("2m", "30s")),
        Last("device"),
        DistinctCount("device", window=sliding("5m", resolution="1m")),
        DistinctCount("device"),
        DistinctCount("elevel", window=tumbling("10m")),
        DistinctCount("zipcode"),
        SinceLast(),
        SinceLast(window=sliding("30s", resolution="100ms")),
    ],
    expressions=[Expression("loan_per_event", lambda v: v["loan_sum_3m_every_1m"] / v["count_lifetime"])],
    allowed_lateness="2m",
)

# the same stream re-keyed by zipcode: events whose zipcode is null or missing have no key (not applied);
# a boolean or a string zipcode is a key like any other ("True", "n/a", "")
HOSTILE_KEYED = FeatureView(
    name="hostile_keyed",
    entity="zipcode",
    aggregations=[
        Count(),
        Mean("salary", window=sliding("10m")),
        Max("loan"),
        DistinctCount("device", window=sliding("1m")),
        Last("car"),
        SinceLast(window=tumbling("1m")),
        Var("hvalue", window=hopping("5m", "1m")),
    ],
    include_fields=False,
    allowed_lateness="2m",
)

# exact sliding windows (1 ms tiles): the tile bound allows them with a short lateness (hostile stream with
# lateness 3s): (5s + 3s) // 1 ms + 2 = 8,002 tiles at most
EXACT = FeatureView(
    name="exact",
    aggregations=[
        Count(window=sliding("2s", resolution=1)),
        Sum("loan", window=sliding("5s", resolution="1ms")),
        Last("device", window=sliding("2s", resolution=1)),
        SinceLast(window=sliding("2s", resolution=1)),
        SinceLast(),
    ],
    allowed_lateness="3s",
)
