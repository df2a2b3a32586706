"""What a feature-worker drill left behind, explained when its check against the oracle fails.

A drill's topics hold the whole history: the events, the re-keyed view's repartition topic (each record
with its source position, header ``rivulet-src``) and every feature record published, in order. From the
repartition topic this module replays the one lineage the pipeline's rules allow per re-keyed entity (its
records in offset order, a record skipped when its source offset is at or below the highest applied of its
source partition, or its ``event_id`` among the last ``MAX_IDS`` applied) and sets the counts it gives
beside the counts the workers published and stored: where a worker applied an event to a state missing
events, the count it published says which state that was (the lineage's state at the offset where it had
that count), and the records between that state and the event are the ones it missed. With the stored
states' positions, the group's committed offsets and the workers' counters, that is what a failure of the
drill prints (``diagnose``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer

from features.events import Event
from features.redis_store import state_key
from features.state import MAX_IDS
from streaming.clients import redis_client
from streaming.settings import Settings
from tests.support.kafka_read import read_all
from tests.support.oracle import Oracle

__all__ = ["Step", "diagnose", "replay_rekeyed"]

COUNT = "count_lifetime"  # the lifetime count every drill view has: the number of events applied
SHOWN = 12  # records listed per gap


@dataclass(frozen=True, slots=True)
class Step:
    """One repartition record of an entity in the allowed lineage: where it is, what it carries, and the
    entity's count after it (``applied``: counted, else a duplicate the rules skip)."""

    partition: int
    offset: int
    source: tuple[str, int, int] | None
    event_id: str
    applied: bool
    count: int


def replay_rekeyed(records: list[Any], key_of: Any) -> dict[str, list[Step]]:
    """Per entity, its repartition ``records`` (kafka-python's, in per-partition order) as the one lineage
    the pipeline's duplicate rules allow. ``key_of(event)``: the view's entity of an event (None: none)."""
    steps: dict[str, list[Step]] = defaultdict(list)
    sources: dict[str, dict[tuple[str, int], int]] = defaultdict(dict)
    ids: dict[str, list[str]] = defaultdict(list)
    counts: Counter[str] = Counter()
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        try:
            event = Event.from_json(r.value)
        except Exception:
            continue
        entity = key_of(event)
        if entity is None:
            continue
        src = next((tuple(orjson.loads(v)) for k, v in r.headers if k == "rivulet-src"), None)
        done = sources[entity].get((src[0], src[1]), -1) if src is not None else -1
        applied = not (src is not None and src[2] <= done) and event.event_id not in ids[entity]
        if applied:
            counts[entity] += 1
            ids[entity] = [*ids[entity], event.event_id][-MAX_IDS:]
        if src is not None and src[2] > done:
            sources[entity][(src[0], src[1])] = src[2]
        steps[entity].append(Step(r.partition, r.offset, src, event.event_id, applied, counts[entity]))  # type: ignore[arg-type]
    return steps


def _stored_state(settings: Settings, view: str, entity: str) -> dict[str, Any]:
    client = redis_client(settings)
    try:
        raw = client.hgetall(state_key(settings.redis_prefix, view, entity))
    finally:
        client.close()
    out: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items() if k != b"s"}
    if b"s" in raw:
        with_state = orjson.loads(raw[b"s"])
        out["sources"] = with_state.get("r") if isinstance(with_state, dict) else None
    return out


def _committed(settings: Settings) -> dict[str, Any]:
    group = f"{settings.topic_prefix}features"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        committed = admin.list_group_offsets(group).get(group, {})
        tps = list(committed)
        end = consumer.end_offsets(tps) if tps else {}
        return {f"{tp.topic}/{tp.partition}": (committed[tp].offset, end.get(tp)) for tp in sorted(tps)}
    finally:
        admin.close()
        consumer.close()


def _count_after(view: Any, prefix: list[Event], event: Event) -> Any:
    """The count ``event``'s feature record holds when it is applied after ``prefix`` (the oracle's)."""
    oracle = Oracle(view).feed([*prefix, event])
    return oracle.vectors.get(event.event_id, {}).get(COUNT)


def _explain_rekeyed(settings: Settings, view: Any, topic: str, lines: list[str]) -> None:
    """The entities of ``view`` whose first published records or stored count leave the lineage."""
    events: dict[str, Event] = {}
    records = read_all(settings.kafka_bootstrap, topic)
    for r in records:
        try:
            events.setdefault(Event.from_json(r.value).event_id, Event.from_json(r.value))
        except Exception:
            continue
    lineage = replay_rekeyed(records, Oracle(view).key)
    published: dict[str, list[tuple[int, str, Any]]] = defaultdict(list)  # features offset, event, count
    first: set[str] = set()
    for r in read_all(settings.kafka_bootstrap, settings.topics.features):
        rec = orjson.loads(r.value)
        if rec["view"] == view.name and rec["event"]["event_id"] not in first:
            first.add(rec["event"]["event_id"])
            published[rec["entity"]].append((r.offset, rec["event"]["event_id"], rec["features"][COUNT]))
    for entity, steps in sorted(lineage.items()):
        applied = [s for s in steps if s.applied]
        order = [events[s.event_id] for s in applied]
        expected = Oracle(view).feed(order).vectors  # each event's record, applied in the lineage's order
        bad = [(o, e, c) for o, e, c in published.get(entity, []) if expected.get(e, {}).get(COUNT) != c]
        (row,) = _rows(settings, view.name, [entity])
        stored_count = row.values.get(COUNT) if row is not None else None
        if not bad and stored_count == len(applied):
            continue
        lines.append(
            f"{view.name} {entity!r}: lineage count {len(applied)}, stored {stored_count}, stored state "
            f"{_stored_state(settings, view.name, entity)}; {len(bad)} first records off the lineage"
        )
        for offset, event_id, count in bad[:3]:
            copies = [(s.partition, s.offset, s.source) for s in steps if s.event_id == event_id]
            lines.append(
                f"  event {event_id} (features offset {offset}) counted {count}, in the lineage "
                f"{expected.get(event_id, {}).get(COUNT)}; its repartition records {copies}"
            )
            # the lineage's state the worker applied it to: the fewest first events that give its count
            index = next((i for i, s in enumerate(applied) if s.event_id == event_id), len(applied))
            lo, hi = 0, index
            while lo < hi:  # the count is non-decreasing in the events before it
                mid = (lo + hi) // 2
                if _count_after(view, order[:mid], events[event_id]) < count:
                    lo = mid + 1
                else:
                    hi = mid
            start = applied[lo - 1].offset if lo else -1
            missed = applied[lo:index]
            lines.append(
                f"  as if applied after the lineage's first {lo} events (state at repartition offset "
                f"{start}): {len(missed)} events before it missed, first "
                f"{[(s.offset, s.source) for s in missed[:SHOWN]]}"
            )


def _rows(settings: Settings, view: str, entities: list[str]) -> Any:
    from tests.support.workers import read_redis

    return read_redis(settings, view, entities)


def _explain_direct(settings: Settings, view: Any, events: list[Event], lines: list[str]) -> None:
    """The entities of a view keyed by the entity whose stored count is not the oracle's."""
    online = Oracle(view).feed(events).online()
    entities = sorted(online)
    last: dict[str, tuple[int, int]] = {}
    for r in read_all(settings.kafka_bootstrap, settings.topics.events):
        try:
            last[Event.from_json(r.value).entity] = (r.partition, r.offset)
        except Exception:
            continue
    for entity, row in zip(entities, _rows(settings, view.name, entities), strict=True):
        want = online[entity][1].get(COUNT)
        got = row.values.get(COUNT) if row is not None else None
        if got != want:
            lines.append(
                f"{view.name} {entity!r}: oracle count {want}, stored {got}, its last event at "
                f"{last.get(entity)}, stored state {_stored_state(settings, view.name, entity)}"
            )


def diagnose(settings: Settings, events: list[Event], direct: Any, rekeyed: Any) -> str:
    """What to print when a drill's check against the oracle fails (see the module docstring)."""
    lines: list[str] = []
    client = redis_client(settings)
    try:
        stats = client.hgetall(f"{settings.redis_prefix}stats:features")
    finally:
        client.close()
    lines.append(f"worker counters: { {k.decode(): int(v) for k, v in sorted(stats.items())} }")
    reasons: Counter[tuple[Any, Any]] = Counter()
    for r in read_all(settings.kafka_bootstrap, settings.topics.dead_letters):
        d = orjson.loads(r.value)
        reasons[(d.get("view"), d.get("reason"))] += 1
    lines.append(f"dead letters by (view, reason): {dict(reasons)}")
    lines.append(f"group offsets (committed, end): {_committed(settings)}")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        topics = [t for t in admin.list_topics() if settings.topic_prefix in t and "repartition" in t]
    finally:
        admin.close()
    for topic in topics:
        if f"-by-{rekeyed.name}-" in topic:
            _explain_rekeyed(settings, rekeyed, topic, lines)
    _explain_direct(settings, direct, events, lines)
    return "\n".join(lines)
