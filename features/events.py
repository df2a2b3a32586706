"""The event and label schema every Rivulet component shares.

An :class:`Event` is one fact about one entity at one event time:

- ``event_id``: unique, generated as a time-ordered UUIDv7 when absent;
- ``entity``: the entity key (also the Kafka key, so one entity's events stay in order);
- ``ts``: event time in epoch milliseconds (ISO 8601 strings and datetimes are normalised);
- ``fields``: a flat mapping of names to scalars (str, int, float, bool or null);
- ``label``: optional scalar target, when it is known at event time;
- ``schema_version``: optional integer for producers that evolve their fields.

Validation errors name the field and the problem. Numbers in fields and labels must be in Rivulet's numeric
domain (:mod:`features.numeric`): finite float64, integers within int64. NaN or infinity is refused (JSON
has no such numbers, and orjson would silently write them as null), and so is an integer such as 2**64
(orjson cannot write it).

>>> e = Event(entity="u1", ts="2024-01-01T00:00:00Z", fields={"amount": 12.5})
>>> e.ts
1704067200000
>>> Event.from_json(e.to_json()) == e
True
>>> Event(entity="u1", ts=0, fields={"x": float("nan")})
Traceback (most recent call last):
...
features.errors.InvalidEvent: fields.x: NaN and infinity are not allowed
>>> Event(entity="u1", ts=0, fields={"n": 2**64})
Traceback (most recent call last):
...
features.errors.InvalidEvent: fields.n: integer outside the int64 range (-2**63 .. 2**63-1)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.errors import InvalidEvent
from features.numeric import INT64_MAX, INT64_MIN, check_number

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_ENTITY_CHARS",
    "MAX_TS_MS",
    "MIN_TS_MS",
    "Event",
    "Label",
    "Scalar",
    "check_number",
    "new_id",
    "parse_ts",
]

Scalar = str | int | float | bool | None
MIN_TS_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_ENTITY_CHARS = 1024  # the longest entity key (an event's, or the value a re-keyed view is keyed by)


def new_id() -> str:
    """A new time-ordered unique id (UUIDv7, RFC 9562).

    >>> a, b = new_id(), new_id()
    >>> len(a), a != b, a[14]
    (36, True, '7')
    """
    return str(uuid_utils.uuid7())


def parse_ts(value: object, field: str = "ts") -> int:
    """Normalise an event time to epoch milliseconds.

    Accepts epoch milliseconds (int, float or a string of digits), an ISO 8601 string, or a datetime.
    Naive datetimes are taken as UTC.

    >>> parse_ts(1704067200000), parse_ts("1704067200000"), parse_ts("2024-01-01T01:00:00+01:00")
    (1704067200000, 1704067200000, 1704067200000)
    >>> parse_ts("yesterday")
    Traceback (most recent call last):
    ...
    features.errors.InvalidEvent: ts: 'yesterday' is neither epoch milliseconds nor an ISO 8601 time
    """
    ms: int
    if isinstance(value, bool) or value is None:
        raise InvalidEvent(field, f"expected epoch milliseconds or an ISO 8601 string, got {value!r}")
    if isinstance(value, numbers.Integral):  # int, its subclasses, NumPy's integers
        ms = int(value)
    elif isinstance(value, float | numbers.Real) and not isinstance(value, datetime):
        number = float(value)
        if not math.isfinite(number):
            raise InvalidEvent(field, "NaN and infinity are not allowed")
        ms = int(number)
    elif isinstance(value, datetime):
        try:
            ms = _datetime_ms(value)
        except (OverflowError, ValueError):  # e.g. year 1 with a positive offset: before datetime.min
            raise InvalidEvent(field, "outside the range of event times (years 1-9999)") from None
    elif isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdigit():  # ASCII: str.isdigit() also takes '²', which int() does not
            if len(digits) > 20:  # beyond any int64 (and int() refuses more than 4300 digits)
                raise InvalidEvent(field, f"{len(digits)} digits: outside the range of event times")
            ms = int(text)
        else:
            try:
                ms = _datetime_ms(datetime.fromisoformat(text))
            except (ValueError, OverflowError):
                raise InvalidEvent(
                    field, f"{_clip(value)!r} is neither epoch milliseconds nor an ISO 8601 time"
                ) from None
    else:
        raise InvalidEvent(
            field, f"expected epoch milliseconds or an ISO 8601 string, got {type(value).__name__}"
        )
    if not MIN_TS_MS <= ms <= MAX_TS_MS:
        raise InvalidEvent(
            field, f"{ms} is outside {MIN_TS_MS}..{MAX_TS_MS} epoch milliseconds (years 1-9999)"
        )
    return ms


def _clip(text: str, limit: int = 100) -> str:
    """Text quoted in an error message: a ts of a megabyte must not make a megabyte of error."""
    return text if len(text) <= limit else text[:limit] + "..."


def _datetime_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


_PLAIN = (bool, type(None))  # always valid as they are (ints and floats: in the numeric domain)


def _text(value: str, field: str) -> str:
    """A string that JSON can carry: lone surrogates (possible from a JSON ``\\ud800`` escape read by the
    standard library) cannot be written as UTF-8, so they are refused here rather than failing later."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(field, "is not valid Unicode (a lone surrogate)") from None
    return value


def _scalar(value: object, field: str) -> Scalar:
    """A scalar as a plain ``str``, ``int``, ``float``, ``bool`` or None. Subclasses and other numbers
    (NumPy's, ``Fraction``) are converted: kept as they were, a ``numpy.float64`` passed validation and then
    made ``to_json`` raise ``TypeError`` (the SDK's ``send`` crashed on a NumPy value)."""
    if type(value) in _PLAIN:
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        return _text(str(value), field)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return check_number(int(value), field)
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:  # e.g. a Fraction beyond float64
            raise InvalidEvent(field, "NaN and infinity are not allowed") from None
        return check_number(number, field)
    raise InvalidEvent(field, f"must be a string, number, boolean or null, got {type(value).__name__}")


def _entity(value: object) -> str:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(check_number(int(value), "entity"))
    if value is None:
        raise InvalidEvent("entity", "is required")
    if not isinstance(value, str):
        raise InvalidEvent("entity", f"must be a string or an integer, got {type(value).__name__}")
    if not value.strip():
        raise InvalidEvent("entity", "must not be empty")
    return _text(value, "entity")


def _fields(value: object) -> dict[str, Scalar]:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidEvent("fields", f"must be a mapping, got {type(value).__name__}")
    out: dict[str, Scalar] = {}
    plain = _PLAIN
    for name, v in value.items():
        if type(name) is not str or not name:
            raise InvalidEvent("fields", f"names must be non-empty strings, got {name!r}")
        if not name.isascii():
            _text(name, "fields")
        t = type(v)
        if (
            (t is str and v.isascii())
            or t in plain
            or (t is float and v - v == 0.0)  # v - v is NaN for NaN and infinities
            or (t is int and INT64_MIN <= v <= INT64_MAX)
        ):
            out[name] = v
        else:
            out[name] = _scalar(v, f"fields.{name}")
    return out


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Any:
        """Validate a mapping; any problem is an :class:`InvalidEvent` naming the field."""
        if type(data) is not dict and not isinstance(data, Mapping):
            raise InvalidEvent("", f"expected a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _as_invalid(exc) from None

    @classmethod
    def from_json(cls, raw: bytes | str) -> Any:
        """Decode and validate one JSON document (orjson: strict UTF-8, no NaN)."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent("", f"not valid JSON: {exc}") from None
        return cls.parse(data)


def _as_invalid(exc: ValidationError) -> InvalidEvent:
    err = exc.errors(include_url=False)[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidEvent):
        return cause
    field = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "missing":
        return InvalidEvent(field, "is required")
    if kind == "extra_forbidden":
        return InvalidEvent(field, "is not a known field")
    return InvalidEvent(field, err["msg"])


class Event(_Record):
    """One event about one entity; see the module docstring for the fields."""

    event_id: str = Field(default_factory=new_id, min_length=1, max_length=200)
    entity: str = Field(min_length=1, max_length=MAX_ENTITY_CHARS)
    ts: int
    fields: dict[str, Any] = Field(default_factory=dict)  # values are Scalar, checked by _normalise
    label: Any = None  # Scalar, checked by _normalise
    schema_version: int | None = Field(None, ge=0, le=INT64_MAX)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        """All checks in one pass (it runs per event on every hot path): entity, time, fields, label."""
        if type(data) is not dict:
            if not isinstance(data, Mapping):
                return data  # pydantic reports the type error
            data = dict(data)
        else:
            data = data.copy()
        entity = data.get("entity")
        if not (type(entity) is str and entity and not entity[0].isspace() and entity.isascii()):
            data["entity"] = _entity(entity)
        event_id = data.get("event_id")
        if type(event_id) is str and not event_id.isascii():
            _text(event_id, "event_id")
        ts = data.get("ts")
        if not (type(ts) is int and MIN_TS_MS <= ts <= MAX_TS_MS):
            if "ts" not in data:
                raise InvalidEvent("ts", "is required")
            data["ts"] = parse_ts(ts)
        fields = data.get("fields")
        if fields is None:
            data["fields"] = {}
        else:
            data["fields"] = _fields(fields)
        label = data.get("label")
        if type(label) not in _PLAIN:
            data["label"] = _scalar(label, "label")
        return data

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "entity": self.entity,
            "ts": self.ts,
            "fields": self.fields,
        }
        if self.label is not None:
            out["label"] = self.label
        if self.schema_version is not None:
            out["schema_version"] = self.schema_version
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class Label(_Record):
    """A label that arrives after its event, joined by ``event_id`` or by ``prediction_id``.

    >>> Label(event_id="e1", label=True, ts=5).to_json()
    b'{"event_id":"e1","label":true,"ts":5}'
    """

    event_id: str | None = Field(None, min_length=1, max_length=200)  # as Event's (the API's, the learner's)
    prediction_id: str | None = Field(None, min_length=1, max_length=200)
    label: str | int | float | bool
    ts: int

    @field_validator("ts", mode="plain")
    @classmethod
    def _ts(cls, value: object) -> int:
        return parse_ts(value)

    @field_validator("label", mode="plain")
    @classmethod
    def _label(cls, value: object) -> Scalar:
        if value is None:
            raise InvalidEvent("label", "is required")
        return _scalar(value, "label")

    @model_validator(mode="after")
    def _one_id(self) -> Label:
        if (self.event_id is None) == (self.prediction_id is None):
            raise InvalidEvent("event_id", "exactly one of event_id and prediction_id is required")
        if self.event_id is not None:
            _text(self.event_id, "event_id")
        if self.prediction_id is not None:
            _text(self.prediction_id, "prediction_id")
        return self

    @property
    def join_key(self) -> str:
        return self.event_id if self.event_id is not None else f"p:{self.prediction_id}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        if self.prediction_id is not None:
            out["prediction_id"] = self.prediction_id
        out["label"] = self.label
        out["ts"] = self.ts
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())
