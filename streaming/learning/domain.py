"""The numeric domain of model inputs and labels, checked before a model sees a value.

A number is in the domain when it is

- a float that is finite and whose magnitude is at most :data:`MAX_MAGNITUDE` (``1e150``), or
- an int (not a bool) within int64 (``-2**63 .. 2**63 - 1``; every such int is far below the bound).

Why ``1e150``: River models square their inputs and their errors (a scaler's running variance, a linear
model's squared loss and gradient, a Hoeffding tree's Gaussian split estimators, ``MSE``). The square of the
difference of two in-domain values is at most ``(2e150)**2 = 4e300``, so the sum of such squares over
``4e7`` records still fits below float64's ``1.8e308``; a value of ``1e155`` overflows after one square of
``1e310``. ``1e308`` (finite, accepted by JSON and by the event schema) is what made a Hoeffding tree raise
``OverflowError`` on a served prediction. No measurement of money, time or counts comes near ``1e150``, so the
bound refuses only hostile or broken input.

A features vector may also hold strings, booleans and nulls (a model's spec can name string features for
one-hot encoders); nested values (lists, objects) are not scalars and are refused, and so is a feature name
longer than 200 characters.

>>> check_number(1e150), check_number(-3), check_number(2**63 - 1)
(1e+150, -3, 9223372036854775807)
>>> check_number(1e308)
Traceback (most recent call last):
...
streaming.learning.errors.OutOfDomain: value_domain: 1e+308 is beyond the numeric domain (|x| <= 1e+150)
>>> check_vector({"salary": 1e308, "age": 3})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streaming.learning.errors.OutOfDomain: value_domain: salary: 1e+308 is beyond the numeric domain ...
>>> check_vector({"city": "Oslo", "vip": True, "missing": None, "age": 3})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from features import numeric
from features.numeric import INT64_MAX, INT64_MIN
from streaming.learning.errors import OutOfDomain, Reason

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_MAGNITUDE",
    "check_number",
    "check_vector",
    "in_domain",
    "vector_in_domain",
]

MAX_MAGNITUDE = 1e150  # the model bound, on top of Rivulet's numeric domain (features.numeric)
MAX_NAME_CHARS = 200  # a feature name (a model keeps each name it has seen)


def in_domain(value: int | float) -> bool:
    """Is this number (int or float, not bool) in the domain: in Rivulet's numeric domain
    (:func:`features.numeric.in_domain`: an int within int64, a finite float) and, a float, within
    :data:`MAX_MAGNITUDE`?

    >>> in_domain(1.5), in_domain(float("nan")), in_domain(2**64), in_domain(-1e200), in_domain(-(2**63))
    (True, False, False, False, True)
    """
    if not numeric.in_domain(value):
        return False
    return not isinstance(value, float) or -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE


def check_number(value: int | float, where: str = "", reason: Reason = Reason.VALUE_DOMAIN) -> int | float:
    """``value`` if it is in the domain, else :class:`OutOfDomain` (``where`` prefixes the detail)."""
    if in_domain(value):
        return value
    prefix = f"{where}: " if where else ""
    if isinstance(value, int):
        raise OutOfDomain(reason, f"{prefix}{value} is outside int64")
    if not math.isfinite(value):
        raise OutOfDomain(reason, f"{prefix}NaN and infinity are not numbers of the domain")
    raise OutOfDomain(reason, f"{prefix}{value!r} is beyond the numeric domain (|x| <= {MAX_MAGNITUDE:g})")


_SCALARS = (str, bool, type(None))


def check_vector(vector: Mapping[str, Any]) -> None:
    """Raise :class:`OutOfDomain` (reason ``value_domain``) unless every value is a string, a bool, null or
    an in-domain number; names must be strings of at most :data:`MAX_NAME_CHARS` characters.

    >>> check_vector({"a": 1e150, "b": -1e150, "c": 2**63 - 1, "d": -(2**63), "e": True, "f": None, "g": "x"})
    >>> bad = (float("nan"), float("inf"), -float("inf"), 1.0000001e150, 2**63, -(2**63) - 1, [1])
    >>> [vector_in_domain({"a": value}) for value in bad]
    [False, False, False, False, False, False, False]
    """
    for name, value in vector.items():
        kind = type(value)
        if kind is float:  # the common case inline (the merge and the router check every record's vector)
            if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # NaN fails both comparisons, inf the bound
                check_number(value, str(name))
        elif kind is int:
            if not INT64_MIN <= value <= INT64_MAX:
                check_number(value, str(name))
        elif kind not in _SCALARS and not isinstance(value, str | bool):
            if isinstance(value, int | float):  # subclasses (numpy scalars)
                check_number(value, str(name))
            else:
                raise OutOfDomain(Reason.VALUE_DOMAIN, f"{name}: a {kind.__name__} is not a scalar")
        if type(name) is not str:
            raise OutOfDomain(Reason.VALUE_DOMAIN, f"feature name {name!r} is not a string")
        if len(name) > MAX_NAME_CHARS:
            raise OutOfDomain(Reason.VALUE_DOMAIN, f"a feature name is at most {MAX_NAME_CHARS} characters")


def vector_in_domain(vector: Mapping[str, Any]) -> bool:
    """Does :func:`check_vector` take the vector? (The merge gives a refused vector no time, and verify
    takes no refused vector as a probe.)

    >>> vector_in_domain({"a": 1.5, "b": "x"}), vector_in_domain({"a": 1e308}), vector_in_domain({"a": [1]})
    (True, False, False)
    """
    try:
        check_vector(vector)
    except OutOfDomain:
        return False
    return True
