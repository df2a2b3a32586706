"""Re-keying: the events of a view keyed by another field, forwarded to that view's repartition topic.

The worker forwards each batch of the events topic to every re-keyed view's repartition topic itself (it
used Faust's ``group_by``, a record at a time), keyed by the view's key field, and acknowledges the batch
only once Kafka has acknowledged the forwarded records, so none is lost. Each forwarded record carries the
position it was read at on the events topic (header ``rivulet-src``: ``[topic, partition, offset]``),
replacing any header of that name the producer sent (a forged one would make real events look like
duplicates); the producer's other headers and the record's timestamp are kept. A crash re-forwards the
records forwarded but not acknowledged, at new positions: the pipeline recognises them by that header
(the feature worker's module docstring).

The topic is named as Faust's ``group_by`` named it (``<app id>-<events topic>-by-<view>-repartition``,
:func:`repartition_topic`), so a deployment keeps its topic and its committed positions.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from features.definitions import FeatureView
from features.events import MAX_ENTITY_CHARS, Event
from streaming.runtime.feature_publisher import Outgoing

__all__ = ["SOURCE_HEADER", "forwarded", "rekey", "repartition_topic", "source"]

# the repartition record's header with the source position of its event (see the module docstring)
SOURCE_HEADER = "rivulet-src"


def repartition_topic(app_id: str, events_topic: str, view: FeatureView) -> str:
    """The name Faust's ``group_by(name="by-<view>")`` gave a view's repartition topic.

    >>> repartition_topic("rivulet-features", "rivulet-events", FeatureView(name="site", entity="zipcode"))
    'rivulet-features-rivulet-events-by-site-repartition'
    """
    return f"{app_id}-{events_topic}-by-{view.name}-repartition"


def rekey(view: FeatureView, value: bytes | None) -> bytes:
    """The repartition key of an event: its value of the view's key field (a placeholder when absent or
    invalid). A value longer than an entity may be is keyed by its hash: the repartition record must fit the
    topic (a 600 kB key and its event were refused by the broker); the pipeline dead-letters it as invalid.

    >>> view = FeatureView(name="site", entity="zipcode")
    >>> rekey(view, b'{"entity": "u1", "ts": 1, "fields": {"zipcode": 7}}'), rekey(view, b"{")
    (b'7', b'\\x00invalid')
    """
    try:
        event = Event.from_json(value or b"")
    except Exception:
        return b"\x00invalid"
    found = event.fields.get(view.entity)
    if found is None:
        return b"\x00missing"
    text = str(found).encode("utf-8", "surrogatepass")
    if len(text) > 4 * MAX_ENTITY_CHARS:
        return b"\x00long:" + hashlib.sha256(text).hexdigest().encode()
    return text


def forwarded(view: FeatureView, messages: Sequence[Any]) -> list[Outgoing]:
    """The repartition records of ``messages`` (Faust's consumer messages of the events topic)."""
    out: list[Outgoing] = []
    for m in messages:
        headers = _kept_headers(m.headers)
        headers.append((SOURCE_HEADER, orjson.dumps([m.topic, m.partition, m.offset])))
        timestamp = round(m.timestamp * 1000) if m.timestamp else None  # faust: seconds
        out.append((rekey(view, m.value), m.value if m.value is not None else b"", headers, timestamp))
    return out


def _kept_headers(headers: Any) -> list[tuple[str, bytes]]:
    """A record's headers without any ``rivulet-src`` (those of a shape Kafka would not send: none)."""
    kept: list[tuple[str, bytes]] = []
    with contextlib.suppress(Exception):
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        for k, v in pairs:
            name = k.decode("utf-8", "surrogateescape") if isinstance(k, bytes) else str(k)
            if not name.isascii():  # a name read leniently (kafka_records) cannot be encoded as it is
                name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            if name != SOURCE_HEADER:
                kept.append((name, bytes(v) if v is not None else b""))
        return kept
    return []


def source(headers: Any) -> tuple[str, int, int] | None:
    """The source position of a repartition record, from its header (None: absent or malformed).

    >>> source([("rivulet-src", b'["events", 2, 41]')])
    ('events', 2, 41)
    >>> source([("rivulet-src", b'["events", 2]')]), source(None)
    (None, None)
    """
    for k, v in headers or ():
        if k != SOURCE_HEADER:
            continue
        with contextlib.suppress(Exception):
            t, p, o = orjson.loads(v)
            if type(t) is str and type(p) is int and type(o) is int and p >= 0 and o >= 0:
                return t, p, o
        return None
    return None
