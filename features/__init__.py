"""Rivulet's feature layer: the shared event schema, feature definitions and the online feature store.

Pure code only: nothing here does network I/O at import or reads the clock to compute a feature.
"""

from features.errors import FeaturesError, InvalidEvent
from features.events import Event, Label, new_id, parse_ts

__all__ = ["Event", "FeaturesError", "InvalidEvent", "Label", "new_id", "parse_ts"]
