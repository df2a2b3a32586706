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
    ValidationError,
)

from features.events import MAX_TS_MS, MIN_TS_MS
from serving.headers import Drift
from streaming.learning.domain import INT64_MAX, INT64_MIN

__all__ = [
    "BatchPredictRequest",
    "BatchPredictResponse",
    "Dashboard",
    "DashboardModel",
    "DashboardSample",
    "DashboardVersion",
    "DriftOut",
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


def _no_int(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError("an integer must be within int64 (-2**63 .. 2**63-1)")  # not rounded to a float
    return value


# The numeric domain of request values (fields, labels), as everywhere in Rivulet: integers within int64
# (-2**63 .. 2**63-1), floats finite (float64). 10**400 or 2**64 is a 422, never an overflow later. (JSON
# Schema cannot say "an integer literal within int64, or any float": the schema says the int64 range for
# integers, the validator also refuses a big integer where a float would do, rather than round it.) The
# learner's tighter bound on model inputs (|x| <= 1e150) is checked on the vector a model scores (see
# serving.routes.scoring), labels against the served models' tasks (serving.routes.ingest).
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Float64 = Annotated[float, Field(allow_inf_nan=False), BeforeValidator(_no_int)]
Number = Int64 | Float64
Scalar = str | bool | Int64 | Float64 | None
LabelValue = str | bool | Int64 | Float64


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
    schema_version: Annotated[int, Field(ge=0, le=INT64_MAX), BeforeValidator(_not_bool)] | None = None


class LabelForEvent(_Strict):
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    label: LabelValue
    ts: EventTime | None = Field(None, description="When the label became known (default: now).")


class LabelForPrediction(_Strict):
    prediction_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    label: LabelValue
    ts: EventTime | None = Field(None, description="When the label became known (default: now).")


class EventsRequest(_Strict):
    events: list[EventIn] = Field(min_length=1, max_length=10_000)


class LabelsRequest(_Strict):
    labels: list[LabelForEvent | LabelForPrediction] = Field(min_length=1, max_length=10_000)


class IngestResponse(BaseModel):
    ids: list[str]


class _Listed(BaseModel):
    """Built from the typed views of :mod:`serving.headers` by their attributes (``model_validate``)."""

    model_config = ConfigDict(from_attributes=True)


class DriftOut(_Listed):
    detector: str = Field(description="The drift detector that fired (e.g. a feature's ADWIN).")
    ts: int | None = Field(description="Event time of the record it fired on (epoch ms).")
    learned: int | None = Field(description="Records learned when it fired.")

    @classmethod
    def of(cls, drift: Drift) -> DriftOut:
        return cls(detector=drift.detector, ts=drift.ts, learned=drift.learned)


class VersionInfoOut(_Listed):
    """A version in ``/v1/models`` (from a :class:`serving.headers.ListedVersion`)."""

    version: int
    current: bool
    n_learned: int | None = Field(None, validation_alias="learned")
    offsets: dict[str, dict[str, int]] | None = None
    metrics: dict[str, float | None] | None = None
    saved_at: float | None = None


class DecisionOut(BaseModel):
    """A step of a spec's champion/challenger lifecycle (streaming.learning.evidence.Decision)."""

    kind: str = Field(description="challenger, promotion, rollback or retirement.")
    model: str = Field(description="The model started, promoted, restored or retired.")
    champion: str = Field(description="The champion when it was decided.")
    ts: int = Field(description="Event time of the record after which it was decided.")
    position: list[str | int] | None = Field(None, description="That record's topic, partition and offset.")
    why: str = ""
    saved_at: float | None = Field(None, description="When the learner's checkpoint recorded it (Unix s).")
    evidence: dict[str, Any] | None = Field(
        None,
        description="For a promotion or a rollback: paired records n, both models' mean losses, the "
        "statistic, its bound, the p-value, the confidence and margin.",
    )

    @classmethod
    def kept(cls, registry: Any, spec: str, limit: int = 50) -> list[DecisionOut]:
        """A spec's latest ``limit`` decisions in the registry (anyone who can write Redis wrote them: one
        that is not a decision is left out)."""
        out = []
        for d in registry.decisions(spec)[-limit:]:
            try:
                out.append(cls.model_validate(d))
            except ValidationError:
                continue
        return out


class ModelInfo(BaseModel):
    name: str
    current_version: int | None
    loaded_version: int | None
    role: str | None = Field(None, description="In its spec's lifecycle: champion, challenger, probation...")
    champion: str | None = Field(
        None, description="For a spec with a promotion policy: the model that scores its requests."
    )
    challengers: list[str] = Field(default_factory=list, description="Its spec's running challengers.")
    decisions: list[DecisionOut] = Field(default_factory=list, description="The latest lifecycle decisions.")
    view: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    counters: dict[str, int] = Field(default_factory=dict)
    rejected: dict[str, int] = Field(
        default_factory=dict, description="Records the learner rejected, per reason code."
    )
    drifts: list[DriftOut] = Field(default_factory=list)
    versions: list[VersionInfoOut] = Field(default_factory=list)


class DashboardVersion(_Listed):
    """A version in ``/v1/dashboard`` (from a :class:`serving.headers.ListedVersion`)."""

    version: int
    current: bool
    saved_at: float | None
    learned: int | None
    metrics: dict[str, float | None]


class DashboardSample(_Listed):
    """A monitoring sample (from a :class:`serving.headers.Sample`)."""

    t: float = Field(description="When the checkpoint was written (epoch seconds).")
    learned: int | None
    rate: float | None = Field(description="Records learned per second since the previous sample.")
    freshness_ms: float | None = Field(description="Age of the newest learned event at the checkpoint.")
    metrics: dict[str, float | None]
    drifts: list[DriftOut]
    status: str | None = Field(None, description="'quarantined' when the learner quarantined the model here.")
    quarantine: str | None = Field(None, description="Why it was quarantined (the model's error).")


class DashboardModel(BaseModel):
    current_version: int | None
    loaded_version: int | None
    view: str | None
    spec: str | None
    learned: int | None
    metrics: dict[str, float | None]
    counters: dict[str, int]
    rejected: dict[str, int]
    status: str = Field(
        description="'quarantined' (stopped learning, its last good version serving) or 'ok'."
    )
    quarantine: str | None = Field(description="Why the model was quarantined.")
    versions: list[DashboardVersion]
    history: list[DashboardSample]
    role: str | None = Field(None, description="In its spec's lifecycle: champion, challenger, probation...")
    champion: str | None = Field(None, description="A spec with a promotion policy: the model serving it.")
    decisions: list[DecisionOut] = Field(default_factory=list, description="Its spec's latest decisions.")


class DashboardStageLag(BaseModel):
    """A stage's lag measured by the API from outside the stage (:mod:`serving.lag`)."""

    stage: str = Field(description="features or learner")
    known: bool = Field(description="False: Kafka unreachable, a topic missing, offsets unreadable...")
    records: int | None = Field(description="Records behind over every partition (None: not known).")
    worst_records: int | None = Field(description="Records behind on the worst partition.")
    worst_records_partition: str | None
    worst_seconds: float | None = Field(
        description="Event-time seconds behind on the worst partition: now minus the oldest waiting record's."
    )
    worst_seconds_partition: str | None
    measured_at: float | None = Field(description="When it was measured (epoch seconds).")
    problems: list[str] = Field(description="What is not known, and why.")


class Dashboard(BaseModel):
    now: float
    models: dict[str, DashboardModel]
    lag: list[DashboardStageLag] = Field(
        default_factory=list, description="Each stage's lag (empty: not measured, RIVULET_SERVE_LAG_S=0)."
    )
