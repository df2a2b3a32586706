"""Rivulet's feature layer: the shared event schema, feature definitions and the online feature store.

Pure code only: nothing here does network I/O at import or reads the clock to compute a feature.
"""

from features.aggregations import Count, DistinctCount, Last, Max, Mean, Min, SinceLast, Std, Sum, Var
from features.definitions import Derived, Expression, FeatureView, load_views
from features.engine import EntityState, FeatureEngine
from features.errors import (
    AggregateOverflow,
    CorruptState,
    DefinitionError,
    FeaturesError,
    InvalidEvent,
    LateEvent,
    StoreError,
)
from features.events import Event, Label, new_id, parse_ts
from features.numeric import FLOAT64_MAX, INT64_MAX, INT64_MIN, SUM_LIMIT, check_number, in_domain
from features.store import FeatureRow, MemoryStore, OnlineStore, StateStore
from features.tiles import MAX_TILES
from features.windows import hopping, lifetime, sliding, tumbling

__all__ = [
    "FLOAT64_MAX",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_TILES",
    "SUM_LIMIT",
    "AggregateOverflow",
    "CorruptState",
    "Count",
    "DefinitionError",
    "Derived",
    "DistinctCount",
    "EntityState",
    "Event",
    "Expression",
    "FeatureEngine",
    "FeatureRow",
    "FeatureView",
    "FeaturesError",
    "InvalidEvent",
    "Label",
    "Last",
    "LateEvent",
    "Max",
    "Mean",
    "MemoryStore",
    "Min",
    "OnlineStore",
    "SinceLast",
    "StateStore",
    "Std",
    "StoreError",
    "Sum",
    "Var",
    "check_number",
    "hopping",
    "in_domain",
    "lifetime",
    "load_views",
    "new_id",
    "parse_ts",
    "sliding",
    "tumbling",
]
