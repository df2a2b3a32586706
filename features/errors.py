"""Errors of the ``features`` package: one root, subclasses that carry their context.

::

    FeaturesError
    ├── InvalidEvent        not an event, or a number outside the domain  (dead-letter reason "invalid")
    ├── DefinitionError     a feature definition that cannot work
    ├── LateEvent           behind the watermark by more than the lateness (reason "late")
    ├── AggregateOverflow   would take an aggregate out of float64          (reason "overflow")
    ├── CorruptState        a stored entity state that cannot be used       (reason "corrupt_state")
    ├── RecordTooLarge      its feature record would exceed the record limit (reason "too_large")
    └── StoreError          a store configured so that it cannot work

The reasons are the dead-letter reason codes of the feature stage (:mod:`features.pipeline`), which also
uses ``error`` for any other exception raised while processing one record.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AggregateOverflow",
    "CorruptState",
    "DefinitionError",
    "FeaturesError",
    "InvalidEvent",
    "LateEvent",
    "RecordTooLarge",
    "StoreError",
]


class FeaturesError(Exception):
    """Root of every error raised by ``features``.

    A subclass that carries context names it in ``context``: the constructor's arguments, kept as
    attributes of the same names, so that the error pickles (to a process pool, say) with its context.

    >>> import pickle
    >>> pickle.loads(pickle.dumps(LateEvent("v", "u1", 5, 10, 2))).watermark
    10
    """

    context: ClassVar[tuple[str, ...]] = ()

    def __reduce__(self) -> tuple[type[FeaturesError], tuple[Any, ...]] | str | tuple[Any, ...]:
        if not self.context:
            return super().__reduce__()
        return (type(self), tuple(getattr(self, name) for name in self.context))


class InvalidEvent(FeaturesError):
    """An event or label that does not satisfy the schema.

    Deliberately not a ``ValueError``: pydantic lets it through unwrapped, so constructing an ``Event``
    directly raises it just as ``Event.parse`` does.

    ``field`` names the offending field (dotted for nested ones, empty for the whole document) and
    ``problem`` says what is wrong with it.

    >>> str(InvalidEvent("fields.amount", "NaN and infinity are not allowed"))
    'fields.amount: NaN and infinity are not allowed'
    """

    context = ("field", "problem")

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


class DefinitionError(FeaturesError):
    """A feature definition that cannot work (bad window, duplicate name, unknown reference...)."""


class LateEvent(FeaturesError):
    """An event older than its entity's watermark minus the view's allowed lateness; it was not applied."""

    context = ("view", "entity", "ts", "watermark", "lateness_ms")

    def __init__(self, view: str, entity: str, ts: int, watermark: int, lateness_ms: int) -> None:
        self.view, self.entity, self.ts, self.watermark, self.lateness_ms = (
            view,
            entity,
            ts,
            watermark,
            lateness_ms,
        )
        super().__init__(
            f"late: event time {ts} is {watermark - ts} ms behind entity {entity!r} of view {view!r} "
            f"(watermark {watermark}, allowed lateness {lateness_ms} ms)"
        )


class AggregateOverflow(FeaturesError):
    """Applying the event would take an aggregate of ``field`` past float64 (see :mod:`features.engine`); the
    event was not applied.

    >>> str(AggregateOverflow("v", "u1", "loan", "sum"))
    "overflow: field 'loan' of entity 'u1' in view 'v': its sum would leave float64"
    """

    context = ("view", "entity", "field", "what")

    def __init__(self, view: str, entity: str, field: str, what: str) -> None:
        self.view, self.entity, self.field, self.what = view, entity, field, what
        super().__init__(
            f"overflow: field {field!r} of entity {entity!r} in view {view!r}: its {what} would leave float64"
        )


class CorruptState(FeaturesError):
    """A stored entity state that does not decode or does not fit its view (a ``null`` where a number must be,
    a missing summary, a wrong type): written by an older version, a changed definition, or tampering.

    >>> str(CorruptState("v", "u1", "total.x_sum_lifetime: not a finite number"))
    "corrupt_state: entity 'u1' of view 'v': total.x_sum_lifetime: not a finite number"
    """

    context = ("view", "entity", "problem")

    def __init__(self, view: str, entity: str, problem: str) -> None:
        self.view, self.entity, self.problem = view, entity, problem
        super().__init__(f"corrupt_state: entity {entity!r} of view {view!r}: {problem}")


class RecordTooLarge(FeaturesError):
    """The event's feature record (the event and its vector, serialised) would exceed ``limit`` bytes, more
    than the features topic takes, or (``what="state"``) the entity's stored state would grow past the
    pipeline's limit: the event was not applied (``features.pipeline``, reason ``too_large``).

    >>> str(RecordTooLarge("v", "u1", 2_000_000, 1_000_000))
    "too_large: the feature record of entity 'u1' in view 'v' is 2000000 bytes, over the limit of 1000000"
    """

    context = ("view", "entity", "size", "limit", "what")

    def __init__(self, view: str, entity: str, size: int, limit: int, what: str = "feature record") -> None:
        self.view, self.entity, self.size, self.limit, self.what = view, entity, size, limit, what
        super().__init__(
            f"too_large: the {what} of entity {entity!r} in view {view!r} is {size} bytes, "
            f"over the limit of {limit}"
        )


class StoreError(FeaturesError):
    """A store that cannot work as configured."""
