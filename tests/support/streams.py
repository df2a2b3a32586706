"""Synthetic event streams for the feature tests: the plain Agrawal-like stream, and the hostile one that
holds what production sends (issue 13).

The hostile stream (``stream(..., hostile=True)``) keeps the plain stream's fields and adds to them:

- values that are null, missing, booleans, or strings where numbers are expected (``"12"``, ``""``,
  ``"n/a"``), on every field, the re-keyed views' key field (``zipcode``) included, so some events of a
  re-keyed view have no key;
- a ``device`` field whose values mix ``1``, ``1.0``, ``True`` (one distinct value) with ``"1"`` (another);
- entities with a role (:data:`ROLES`): ``busy`` takes ~30% of the events, each with a ``device`` and an
  ``elevel`` never seen before (thousands of distinct values); ``flat`` has ``hvalue`` = 1e9 plus half-units
  (the variance of values near 1e9); ``tiny`` has ``hvalue`` on adjacent floats of 1e9; ``equal`` has the
  same ``hvalue`` and ``salary`` on every event (a variance of exactly 0);
- event times that tie an earlier event of the entity exactly, sit on a minute boundary (a tile boundary of
  every window the test views have), equal the entity's watermark minus ``lateness_ms`` exactly (accepted)
  or one millisecond less (late), are out of order within the lateness, or an hour late.

:func:`with_hostile_values` gives an existing stream the hostile values only (times, entities and ids as
they were), for the tests whose streams must stay in order.

>>> plain = stream(50, 3, seed=1)
>>> [e.ts for e in plain] == sorted(e.ts for e in plain)
True
>>> wild = stream(400, 5, seed=2, hostile=True)
>>> sum(e.entity == "busy" for e in wild) > 80, any("zipcode" not in e.fields for e in wild)
(True, True)
>>> len({e.fields.get("device") for e in wild if e.entity == "busy"}) > 80
True
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from features.events import Event

__all__ = ["ROLES", "stream", "with_hostile_values"]

ROLES = ("busy", "flat", "tiny", "equal")  # entities of the hostile stream with a role (module docstring)
NEAR_CONSTANT = {"flat", "tiny", "equal"}
DEVICES: tuple[Any, ...] = ("a", "b", "1", 1, 1.0, True, 2, 2.5, "")  # 1 == 1.0 == True; "1" is another
EQUAL_VALUE = 0.1 + 0.2  # not a short decimal: an equal value whose mean is rounded


def stream(
    n: int,
    entities: int,
    seed: int,
    *,
    late_every: int = 0,
    shuffle_every: int = 0,
    t0: int = 1_704_067_200_000,
    step_ms: int = 7_000,
    grain_ms: int = 1,
    hostile: bool = False,
    lateness_ms: int = 120_000,
) -> list[Event]:
    """A synthetic Agrawal-like stream: increasing event time with some events out of order (within the
    examples' 5-minute lateness) and, with ``late_every``, some far too late. Several events share a
    timestamp when ``grain_ms`` is coarse. ``hostile``: the hostile stream of the module docstring
    (``late_every``, ``shuffle_every`` and ``grain_ms`` are then not used; ``lateness_ms`` is the
    lateness of the views it is fed to, for the events at the lateness boundary)."""
    if hostile:
        return _hostile_stream(n, entities, seed, t0=t0, step_ms=step_ms, lateness_ms=lateness_ms)
    rng = random.Random(seed)
    events = []
    for i in range(n):
        ts = t0 + i * step_ms + rng.randrange(step_ms)
        if shuffle_every and i % shuffle_every == 3:
            ts -= rng.randrange(60_000, 240_000)  # out of order, within lateness
        if late_every and i % late_every == 5:
            ts -= 3_600_000  # an hour behind: late
        ts -= ts % grain_ms  # a coarse grain puts events on window boundaries
        events.append(
            Event(
                event_id=f"ev-{seed}-{i}",
                entity=f"c{rng.randrange(entities)}",
                ts=ts,
                fields=_fields(rng),
                label=rng.random() < 0.3,
            )
        )
    return events


def _fields(rng: random.Random) -> dict[str, Any]:
    return {
        "salary": round(rng.uniform(20_000, 150_000), 2),
        "commission": rng.choice([0.0, round(rng.uniform(0, 75_000), 2)]),
        "age": rng.randrange(20, 80),
        "elevel": rng.randrange(5),
        "car": rng.randrange(1, 21),
        "zipcode": rng.randrange(9),
        "hvalue": round(rng.uniform(50_000, 900_000), 2),
        "hyears": rng.randrange(1, 31),
        "loan": rng.choice([0.0, round(rng.uniform(0, 500_000), 2)]),
    }


def _hostile_stream(
    n: int, entities: int, seed: int, *, t0: int, step_ms: int, lateness_ms: int
) -> list[Event]:
    rng = random.Random(seed)
    times: dict[str, list[int]] = defaultdict(list)
    events = []
    for i in range(n):
        r = rng.random()
        if r < 0.3:
            entity = "busy"
        elif r < 0.4:
            entity = rng.choice(ROLES[1:])
        else:
            entity = f"c{rng.randrange(entities)}"
        ts = _hostile_time(rng, t0 + i * step_ms + rng.randrange(step_ms), times[entity], lateness_ms)
        times[entity].append(ts)
        events.append(
            Event(
                event_id=f"hx-{seed}-{i}",
                entity=entity,
                ts=ts,
                fields=_hostile_fields(rng, entity, i, _fields(rng)),
                label=rng.random() < 0.3,
            )
        )
    return events


def _hostile_time(rng: random.Random, ts: int, before: list[int], lateness_ms: int) -> int:
    """The event time of the entity's next event, given its earlier ones (``before``)."""
    r = rng.random()
    wm = max(before, default=None)
    if wm is None:
        return ts
    if r < 0.08:
        return rng.choice(before[-20:])  # ties an earlier event exactly (out of order, or at the watermark)
    if r < 0.12:
        return ts - ts % 60_000  # on a tile boundary (and so, often, a tie too)
    if r < 0.15:
        return wm - lateness_ms  # the oldest time still accepted
    if r < 0.17:
        return wm - lateness_ms - 1  # the newest time refused as late
    if r < 0.25:
        return ts - rng.randrange(lateness_ms)  # out of order, within the lateness of the last event
    if r < 0.27:
        return ts - 3_600_000  # an hour late
    return ts


def _hostile_fields(rng: random.Random, role: str, i: int, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the hostile values of the entity's ``role`` (or none), then nulls, missing fields,
    booleans and strings on any field."""
    fields["device"] = rng.choice(DEVICES)
    if role == "busy":
        fields["device"], fields["elevel"] = f"d{i}", 1_000 + i  # never seen before: a string, an int
    elif role == "flat":
        fields["hvalue"] = 1e9 + rng.randrange(-4, 5) / 2
    elif role == "tiny":
        fields["hvalue"] = 1e9 + rng.randrange(3) * 2.0**-23  # 1e9 and the next two floats
    elif role == "equal":
        fields["hvalue"] = fields["salary"] = EQUAL_VALUE
    for k in list(fields):
        r = rng.random()
        if r < 0.04:
            fields[k] = None
        elif r < 0.08:
            del fields[k]
        elif r < 0.10 and not (k == "hvalue" and role in NEAR_CONSTANT):  # a bool is a 0/1: not constant
            fields[k] = rng.random() < 0.5
        elif r < 0.13:
            fields[k] = rng.choice([str(fields[k]), "", "n/a"])
    return fields


def with_hostile_values(events: list[Event], seed: int) -> list[Event]:
    """``events`` with hostile values (entities ``c0``..``c3`` take the roles of :data:`ROLES`); event
    times, entities, ids and labels unchanged.

    >>> before = stream(40, 4, seed=3)
    >>> after = with_hostile_values(before, seed=3)
    >>> [(e.ts, e.entity, e.event_id) for e in after] == [(e.ts, e.entity, e.event_id) for e in before]
    True
    >>> {e.fields.get("hvalue") for e in after if e.entity == "c3"} - {None, "", "n/a", str(EQUAL_VALUE)}
    {0.30000000000000004}
    """
    rng = random.Random(seed)
    roles = {f"c{k}": role for k, role in enumerate(ROLES)}
    return [
        e.model_copy(update={"fields": _hostile_fields(rng, roles.get(e.entity, ""), i, dict(e.fields))})
        for i, e in enumerate(events)
    ]
