"""Rivulet's feature layer: the shared event schema, feature definitions and the online feature store.

Pure code only: nothing here does network I/O at import or reads the clock to compute a feature.
"""

from features.aggregations import Count, DistinctCount, Last, Max, Mean, Min, SinceLast, Std, Sum, Var
from features.definitions import Derived, Expression, FeatureView, load_views
from features.engine import EntityState, FeatureEngine
from features.errors import DefinitionError, FeaturesError, InvalidEvent, LateEvent
from features.events import Event, Label, new_id, parse_ts
from features.store import FeatureRow, MemoryStore, OnlineStore, StateStore
from features.windows import hopping, lifetime, sliding, tumbling

__all__ = [
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
    "Sum",
    "Var",
    "hopping",
    "lifetime",
    "load_views",
    "new_id",
    "parse_ts",
    "sliding",
    "tumbling",
]
