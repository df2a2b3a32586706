"""The concept-drift streams the lifecycle tests share (issue 14): River's Agrawal generator switching from
one classification function to another at a known record."""

from __future__ import annotations

from typing import Any

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
