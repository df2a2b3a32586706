"""Rivulet's numeric domain: the numbers an event field, a label or a feature value may hold.

- floats: finite float64 (NaN and +/-infinity are refused: JSON has no such numbers, and orjson writes
  them as ``null``);
- integers: within int64, ``INT64_MIN`` (-2**63) to ``INT64_MAX`` (2**63 - 1) (orjson cannot write a
  larger one, and River and NumPy would overflow on it);
- booleans are numbers 0 and 1 where an aggregation counts them, and always in the domain.

:func:`check_number` enforces it at every entry (events, labels, API request fields) and names the field
in its :class:`~features.errors.InvalidEvent`. :func:`in_domain` is the same test without an error, for
values computed by code (derived fields, expressions), which become null outside the domain.

Aggregates stay in the domain too: the engine refuses an event whose values would take a running sum
past ``SUM_LIMIT`` (see :mod:`features.engine`).

>>> check_number(2**63 - 1, "fields.n"), check_number(1e308, "fields.x"), check_number(True, "label")
(9223372036854775807, 1e+308, True)
>>> check_number(2**64, "fields.n")
Traceback (most recent call last):
...
features.errors.InvalidEvent: fields.n: integer outside the int64 range (-2**63 .. 2**63-1)
>>> check_number(float("inf"), "label")
Traceback (most recent call last):
...
features.errors.InvalidEvent: label: NaN and infinity are not allowed
>>> in_domain(10**400), in_domain(float("nan")), in_domain(-(2**63)), in_domain("x")
(False, False, True, False)
"""

from __future__ import annotations

import math
import sys

from features.errors import InvalidEvent

__all__ = ["FLOAT64_MAX", "INT64_MAX", "INT64_MIN", "SUM_LIMIT", "check_number", "in_domain"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
FLOAT64_MAX = sys.float_info.max
# Bound on the running magnitude totals the engine keeps (see features.engine): float64's largest value less
# a margin of 2**-20 for the rounding of a sum taken in another order (a window's, an out-of-order event's).
SUM_LIMIT = FLOAT64_MAX * (1 - 2**-20)


def in_domain(value: object) -> bool:
    """True for a bool, an int within int64 or a finite float (int and float subclasses included)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, float):
        return math.isfinite(value)
    return False


def check_number(value: object, field: str) -> int | float | bool:
    """``value`` if it is a number in the domain, else :class:`InvalidEvent` naming ``field``.

    The message never prints the value itself (a 10**5000 would not even convert to a string).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return value
        raise InvalidEvent(field, "integer outside the int64 range (-2**63 .. 2**63-1)")
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise InvalidEvent(field, "NaN and infinity are not allowed")
    raise InvalidEvent(field, f"must be a number, got {type(value).__name__}")
