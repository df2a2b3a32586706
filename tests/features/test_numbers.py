"""Rivulet's numeric domain (features.numeric) and its enforcement at the Event and Label entry."""

from __future__ import annotations

import json
import sys

import orjson
import pytest

import features
from features.errors import InvalidEvent
from features.events import Event, Label
from features.numeric import FLOAT64_MAX, INT64_MAX, INT64_MIN, SUM_LIMIT, check_number, in_domain

pytestmark = pytest.mark.unit


def test_the_bounds_are_int64_and_finite_float64() -> None:
    assert (INT64_MIN, INT64_MAX) == (-9_223_372_036_854_775_808, 9_223_372_036_854_775_807)
    assert sys.float_info.max == FLOAT64_MAX
    assert 1.797e308 < SUM_LIMIT < FLOAT64_MAX and 2 * 1e308 > SUM_LIMIT > 1e308


@pytest.mark.parametrize(
    "value", [0, -1, INT64_MIN, INT64_MAX, 0.0, -0.0, 1e308, -FLOAT64_MAX, 5e-324, True, False]
)
def test_numbers_in_the_domain_pass_unchanged(value: object) -> None:
    assert in_domain(value)
    assert check_number(value, "f") is value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (INT64_MAX + 1, "integer outside the int64 range"),
        (INT64_MIN - 1, "integer outside the int64 range"),
        (2**64, "integer outside the int64 range"),
        (10**400, "integer outside the int64 range"),
        (10**5000, "integer outside the int64 range"),  # too long even to print: the message never does
        (float("inf"), "NaN and infinity are not allowed"),
        (float("-inf"), "NaN and infinity are not allowed"),
        (float("nan"), "NaN and infinity are not allowed"),
        ("1", "must be a number, got str"),
        (None, "must be a number, got NoneType"),
    ],
    ids=["2**63", "-2**63-1", "2**64", "10**400", "10**5000", "inf", "-inf", "nan", "str", "none"],
)
def test_numbers_outside_the_domain_are_refused_naming_the_field(value: object, problem: str) -> None:
    assert not in_domain(value)
    with pytest.raises(InvalidEvent) as info:
        check_number(value, "fields.amount")
    assert info.value.field == "fields.amount" and problem in info.value.problem


def test_the_package_exports_the_domain() -> None:
    for name in ("check_number", "in_domain", "INT64_MIN", "INT64_MAX", "FLOAT64_MAX", "SUM_LIMIT"):
        assert name in features.__all__ and getattr(features, name) is not None
    from features.events import check_number as via_events

    assert via_events is check_number


@pytest.mark.parametrize(
    "value", [2**64, 2**63, INT64_MIN - 1, 10**400], ids=["2**64", "2**63", "min-1", "10**400"]
)
def test_an_event_or_label_with_an_integer_beyond_int64_is_invalid(value: int) -> None:
    """2**64 in an event gave a 500 at POST /v1/events: orjson could not write it."""
    body = {"entity": "u", "ts": 0, "fields": {"n": value}}
    with pytest.raises(InvalidEvent, match=r"fields\.n: integer outside the int64 range"):
        Event.parse(body)
    with pytest.raises(InvalidEvent, match="label: integer outside"):
        Event.parse({"entity": "u", "ts": 0, "label": value})
    with pytest.raises(InvalidEvent, match="label: integer outside"):
        Label.parse({"event_id": "e", "ts": 0, "label": value})
    with pytest.raises(InvalidEvent, match="entity: integer outside"):
        Event.parse({"entity": value, "ts": 0})
    # as the API reads a body (the standard library keeps big integers exact)
    with pytest.raises(InvalidEvent, match=r"fields\.n"):
        Event.parse(json.loads(json.dumps(body)))


def test_events_at_the_edges_of_the_domain_are_accepted_and_serialise() -> None:
    e = Event.parse(
        {"entity": "u", "ts": 0, "fields": {"a": INT64_MAX, "b": INT64_MIN, "c": 1e308}, "label": -1}
    )
    assert Event.from_json(e.to_json()) == e
    # orjson reads 2**64 - 1 as an integer: refused; 2**64 and 10**400 as a float (finite) or an error
    with pytest.raises(InvalidEvent, match="integer outside"):
        Event.from_json(b'{"entity": "u", "ts": 0, "fields": {"n": 18446744073709551615}}')
    assert (
        Event.from_json(b'{"entity": "u", "ts": 0, "fields": {"n": 18446744073709551616}}').fields["n"]
        == 2.0**64
    )
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        Event.from_json(b'{"entity": "u", "ts": 0, "fields": {"n": 1' + b"0" * 400 + b"}}")


def test_strings_that_cannot_be_written_as_utf8_are_invalid() -> None:
    """A JSON "\\ud800" escape read by the standard library is a lone surrogate: orjson cannot write it."""
    body = json.loads('{"entity": "u", "ts": 0, "fields": {"s": "a\\ud800"}}')
    with pytest.raises(InvalidEvent, match=r"fields\.s: is not valid Unicode"):
        Event.parse(body)
    with pytest.raises(InvalidEvent, match="entity: is not valid Unicode"):
        Event.parse({"entity": "\udfff", "ts": 0})
    with pytest.raises(InvalidEvent, match="label: is not valid Unicode"):
        Label.parse({"event_id": "e", "ts": 0, "label": "\udfff"})
    ok = Event.parse({"entity": "é}{用户", "ts": 0, "fields": {"ü": "😀"}})
    assert orjson.loads(ok.to_json())["entity"] == "é}{用户"


def test_every_name_the_features_package_exports_exists() -> None:
    assert sorted(features.__all__) == sorted(set(features.__all__))
    for name in features.__all__:
        assert getattr(features, name) is not None, name
