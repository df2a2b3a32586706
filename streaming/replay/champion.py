"""The registry's champion as it was at the start of a replay's range: the newest retained version that
had learned nothing after the range's first event time (read, verified, never written)."""

from __future__ import annotations

from collections.abc import Sequence

from streaming.errors import StreamingError
from streaming.learning.header import CheckpointHeader
from streaming.learning.registry import NoValidVersion, RedisRegistry
from streaming.learning.snapshot import SnapshotRejected
from streaming.learning.spec import ModelSpec
from streaming.replay.runner import Champion

__all__ = ["ChampionError", "champion_at"]


class ChampionError(StreamingError, ValueError):
    """No usable version of the champion for the range."""


def champion_at(registry: RedisRegistry, name: str, specs: Sequence[ModelSpec], ts: int) -> Champion:
    versions = registry.versions(name)
    if not versions:
        raise ChampionError(f"model {name!r} has no versions in the registry")
    # learned nothing at or after the range's first event (a version with an unreadable header is not one)
    headers = {v.version: CheckpointHeader.of(v.header) for v in versions}
    fitting = [v for v in versions if v.header and (headers[v.version].last_learned_ts or 0) < ts]
    if not fitting:
        oldest = versions[-1]
        raise ChampionError(
            f"no retained version of {name!r} predates the range (first event at {ts}); the oldest, "
            f"v{oldest.version}, learned up to {headers[oldest.version].last_learned_ts}"
        )
    refused = []
    for chosen in fitting:  # newest first; a version that does not verify is skipped, loudly
        try:
            opened = registry.load(name, chosen.version)
            break
        except (SnapshotRejected, NoValidVersion) as exc:
            refused.append(str(exc))
    else:
        raise ChampionError("; ".join(refused))
    header = CheckpointHeader.of(opened.header)
    spec_name = header.spec or name
    spec = next((s for s in specs if s.name == spec_name), None)
    if spec is None:
        raise ChampionError(
            f"champion {name!r} was trained with spec {spec_name!r}, which is not in the models module"
        )
    return Champion(name, chosen.version, spec, opened.state, header.last_learned_ts)
