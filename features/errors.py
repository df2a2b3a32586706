"""Errors of the ``features`` package: one root, subclasses that carry their context."""

from __future__ import annotations

__all__ = ["DefinitionError", "FeaturesError", "InvalidEvent", "LateEvent"]


class FeaturesError(Exception):
    """Root of every error raised by ``features``."""


class InvalidEvent(FeaturesError):
    """An event or label that does not satisfy the schema.

    Deliberately not a ``ValueError``: pydantic lets it through unwrapped, so constructing an ``Event``
    directly raises it just as ``Event.parse`` does.

    ``field`` names the offending field (dotted for nested ones, empty for the whole document) and
    ``problem`` says what is wrong with it.

    >>> str(InvalidEvent("fields.amount", "NaN and infinity are not allowed"))
    'fields.amount: NaN and infinity are not allowed'
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)

    def __reduce__(self) -> tuple[type[InvalidEvent], tuple[str, str]]:
        return (type(self), (self.field, self.problem))


class DefinitionError(FeaturesError):
    """A feature definition that cannot work (bad window, duplicate name, unknown reference...)."""


class LateEvent(FeaturesError):
    """An event older than its entity's watermark minus the view's allowed lateness; it was not applied."""

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

    def __reduce__(self) -> tuple[type[LateEvent], tuple[str, str, int, int, int]]:
        return (type(self), (self.view, self.entity, self.ts, self.watermark, self.lateness_ms))
