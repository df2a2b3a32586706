"""The shared event and label schema."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.errors import InvalidEvent
from features.events import MAX_TS_MS, MIN_TS_MS, Event, Label, new_id, parse_ts

pytestmark = pytest.mark.unit

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0, T0),
        (float(T0) + 0.9, T0),
        (str(T0), T0),
        ("2024-01-01T00:00:00Z", T0),
        ("2024-01-01T00:00:00.250+00:00", T0 + 250),
        ("2024-01-01T02:00:00+02:00", T0),
        ("2024-01-01 00:00:00", T0),  # naive: UTC
        (datetime(2024, 1, 1, tzinfo=UTC), T0),
        (datetime(2023, 12, 31, 19, tzinfo=timezone(timedelta(hours=-5))), T0),
    ],
)
def test_event_times_normalise_to_epoch_ms(value: object, expected: int) -> None:
    assert parse_ts(value) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("yesterday", "neither epoch milliseconds nor an ISO 8601 time"),
        ("2024-13-01", "neither epoch milliseconds"),
        (True, "expected epoch milliseconds"),
        (None, "expected epoch milliseconds"),
        (MIN_TS_MS - 1, "outside -62135596800000.."),
        (MAX_TS_MS + 1, "outside -62135596800000.."),
        (math.nan, "NaN and infinity"),
        ([1], "got list"),
    ],
)
def test_bad_event_times_name_the_problem(value: object, problem: str) -> None:
    with pytest.raises(InvalidEvent, match=problem) as info:
        parse_ts(value)
    assert info.value.field == "ts"


@pytest.mark.parametrize(
    ("record", "field", "problem"),
    [
        ({"ts": 1}, "entity", "is required"),
        ({"entity": "", "ts": 1}, "entity", "must not be empty"),
        ({"entity": 1.5, "ts": 1}, "entity", "must be a string or an integer"),
        ({"entity": "a"}, "ts", "is required"),
        ({"entity": "a", "ts": 1, "fields": {"x": math.inf}}, "fields.x", "NaN and infinity"),
        ({"entity": "a", "ts": 1, "fields": {"x": -math.inf}}, "fields.x", "NaN and infinity"),
        ({"entity": "a", "ts": 1, "fields": {"x": [1]}}, "fields.x", "got list"),
        ({"entity": "a", "ts": 1, "fields": [1]}, "fields", "must be a mapping"),
        ({"entity": "a", "ts": 1, "label": math.nan}, "label", "NaN and infinity"),
        ({"entity": "a", "ts": 1, "colour": "red"}, "colour", "is not a known field"),
        ({"entity": "a", "ts": 1, "schema_version": -1}, "schema_version", "greater than or equal to 0"),
        ({"entity": "a", "ts": 1, "event_id": ""}, "event_id", "at least 1 character"),
    ],
)
def test_invalid_events_name_field_and_problem(record: dict, field: str, problem: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        Event.parse(record)
    assert info.value.field == field
    assert problem in info.value.problem


def test_missing_event_id_is_generated_unique_and_time_ordered() -> None:
    events = [Event(entity="a", ts=1) for _ in range(2_000)]
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    # UUIDv7: the first 48 bits are the creation time in ms, so ids sort by creation time
    stamps = [int(i.replace("-", "")[:12], 16) for i in ids]
    assert stamps == sorted(stamps)
    assert all(i[14] == "7" for i in ids)
    assert new_id() != new_id()


def test_integer_entities_become_strings() -> None:
    assert Event(entity=42, ts=1).entity == "42"  # type: ignore[arg-type]


def test_serialised_event_omits_absent_optionals() -> None:
    e = Event(event_id="x", entity="a", ts=5, fields={"n": None, "b": False})
    assert e.to_json() == b'{"event_id":"x","entity":"a","ts":5,"fields":{"n":null,"b":false}}'


def test_from_json_rejects_bad_documents() -> None:
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        Event.from_json(b'{"entity": "a", "ts": 1, "fields": {"x": NaN}}')
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        Event.from_json(b'{"entity": "\xff"}')
    with pytest.raises(InvalidEvent, match="expected a JSON object"):
        Event.from_json(b"[]")
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        Event.from_json(b"[" * 2000 + b"]" * 2000)  # deeper than orjson's limit


def test_labels_need_exactly_one_id_and_a_value() -> None:
    assert Label.parse({"event_id": "e", "label": 0, "ts": 1}).join_key == "e"
    assert Label.parse({"prediction_id": "p", "label": "cat", "ts": 1}).join_key == "p:p"
    for bad in ({"label": 1, "ts": 1}, {"event_id": "e", "prediction_id": "p", "label": 1, "ts": 1}):
        with pytest.raises(InvalidEvent, match="exactly one of event_id and prediction_id"):
            Label.parse(bad)
    with pytest.raises(InvalidEvent, match="label: is required"):
        Label.parse({"event_id": "e", "label": None, "ts": 1})


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@given(
    entity=st.text(min_size=1, max_size=30).filter(str.strip),
    ts=st.integers(MIN_TS_MS, MAX_TS_MS),
    fields=st.dictionaries(st.text(min_size=1, max_size=10), scalars, max_size=8),
    label=scalars,
)
def test_any_valid_event_survives_a_json_round_trip(
    entity: str, ts: int, fields: dict, label: object
) -> None:
    e = Event(entity=entity, ts=ts, fields=fields, label=label)  # type: ignore[arg-type]
    assert Event.from_json(e.to_json()) == e


@pytest.mark.parametrize("field", ["event_id", "prediction_id"])
def test_label_ids_are_capped_at_200_characters_as_event_ids_are(field: str) -> None:
    """Before: a label's ids took any length (the API and Event cap ids at 200; the learner dead-letters
    longer ones), so a 201-character id passed the SDK and the API and was then dropped by the learner."""
    assert getattr(Label.parse({field: "x" * 200, "label": 1, "ts": T0}), field) == "x" * 200
    with pytest.raises(InvalidEvent, match="at most 200") as caught:
        Label.parse({field: "x" * 201, "label": 1, "ts": T0})
    assert caught.value.field == field
    with pytest.raises(InvalidEvent, match="at most 200"):
        Label.from_json(b'{"%s": "%s", "label": true, "ts": 1}' % (field.encode(), b"y" * 5000))
    with pytest.raises(InvalidEvent, match="at most 200"):
        Event.parse({"event_id": "x" * 201, "entity": "a", "ts": T0})  # the same cap
