"""Request and response bodies of the scoring API (they make its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from features.events import MAX_TS_MS, MIN_TS_MS

__all__ = [
    "BatchPredictRequest",
    "BatchPredictResponse",
    "ErrorBody",
    "EventsRequest",
    "IngestResponse",
    "LabelsRequest",
    "ModelInfo",
    "PredictRequest",
    "PredictResponse",
    "VersionInfoOut",
    "errors",
]

Scalar = str | int | float | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorBody(BaseModel):
    error: str = Field(description="A stable code, e.g. model_not_found.")
    detail: str = Field(description="What went wrong, for a person.")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error codes a route can answer with."""
    text = {
        400: "Invalid input",
        401: "No API key",
        403: "API key not allowed",
        404: "Unknown model",
        409: "Conflicts with the state of the registry",
        413: "Body too large",
        422: "Malformed body",
        503: "A dependency is unavailable",
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


class PredictRequest(_Strict):
    entity: str = Field(min_length=1, max_length=1024, description="The entity to score.")
    fields: dict[str, Scalar] = Field(
        default_factory=dict,
        description="Request-time fields: the event's own fields for this request; derived fields and "
        "expressions are computed from them, and aggregates always come from the online store.",
    )


class BatchPredictRequest(_Strict):
    items: list[PredictRequest] = Field(min_length=1, max_length=1_000)


class PredictResponse(BaseModel):
    prediction_id: str
    model: str
    version: int
    entity: str
    prediction: Scalar
    probabilities: dict[str, float] | None = None
    features_found: bool = Field(description="Whether the entity had a vector in the online store.")
    feature_age_ms: int | None = Field(description="How far behind the request the vector's event time is.")
    fallback: bool = Field(False, description="Scored from request fields alone (the store was unreachable).")


class BatchPredictResponse(BaseModel):
    predictions: list[PredictResponse]


EntityKey = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"\S")]
FieldName = Annotated[str, StringConstraints(min_length=1)]


def _iso_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("an ISO 8601 time must be a string")  # not a number read as a Unix time
    return value


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("epoch milliseconds must be a number, not a boolean")
    return value  # 1700000000000.0 is an integer to JSON Schema, and accepted as one


EventTime = (
    Annotated[int, Field(ge=MIN_TS_MS, le=MAX_TS_MS), BeforeValidator(_not_bool)]
    | Annotated[AwareDatetime, BeforeValidator(_iso_text)]
)


class EventIn(_Strict):
    """An event, as the SDK takes it (see the README's event schema)."""

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    entity: EntityKey
    ts: EventTime = Field(description="Epoch milliseconds or an ISO 8601 time with its offset.")
    fields: dict[FieldName, Scalar] = Field(default_factory=dict)
    label: Scalar = None
    schema_version: Annotated[int, Field(ge=0), BeforeValidator(_not_bool)] | None = None


class LabelForEvent(_Strict):
    event_id: Annotated[str, StringConstraints(min_length=1)]
    label: str | int | float | bool
    ts: EventTime | None = Field(None, description="When the label became known (default: now).")


class LabelForPrediction(_Strict):
    prediction_id: Annotated[str, StringConstraints(min_length=1)]
    label: str | int | float | bool
    ts: EventTime | None = Field(None, description="When the label became known (default: now).")


class EventsRequest(_Strict):
    events: list[EventIn] = Field(min_length=1, max_length=10_000)


class LabelsRequest(_Strict):
    labels: list[LabelForEvent | LabelForPrediction] = Field(min_length=1, max_length=10_000)


class IngestResponse(BaseModel):
    ids: list[str]


class VersionInfoOut(BaseModel):
    version: int
    current: bool
    n_learned: int | None = None
    offsets: dict[str, Any] | None = None
    metrics: dict[str, float | None] | None = None
    saved_at: float | None = None


class ModelInfo(BaseModel):
    name: str
    current_version: int | None
    loaded_version: int | None
    view: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    counters: dict[str, int] = Field(default_factory=dict)
    drifts: list[list[Any]] = Field(default_factory=list)
    versions: list[VersionInfoOut] = Field(default_factory=list)
