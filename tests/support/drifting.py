"""The concept-drift streams the lifecycle tests share (issue 14): River's Agrawal generator switching from
one classification function to another at a known record."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from river.datasets import synth


def agrawal_drift(seed: int, position: int, before: int = 0, after: int = 4) -> Any:
    """Agrawal function ``before``, then ``after`` from record ``position`` (a sigmoid 100 records wide)."""
    return synth.ConceptDriftStream(
        stream=synth.Agrawal(classification_function=before, seed=seed),
        drift_stream=synth.Agrawal(classification_function=after, seed=seed),
        position=position,
        width=100,
        seed=seed,
    )


def publish_labelled(s: Any, pairs: Iterable[tuple[dict[str, Any], Any]], start: int, t0: int) -> None:
    """Features records of view ``all`` to ``s``'s features topic, labels inline: record ``i`` (from
    ``start``) is event ``ev<i>`` of entity ``u<i % 20>`` at ``t0 + 1000 * i``."""
    from streaming import clients

    producer = clients.kafka_producer(s)
    for i, (x, y) in enumerate(pairs, start):
        entity = f"u{i % 20}"
        event = {"event_id": f"ev{i}", "entity": entity, "ts": t0 + 1_000 * i, "fields": {}, "label": bool(y)}
        record = {"view": "all", "entity": entity, "event": event, "features": x}
        producer.send(s.topics.features, orjson.dumps(record), key=entity.encode())
    producer.flush()
    producer.close()
