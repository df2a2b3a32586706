"""``rivulet status``: the pipeline at a glance, for whoever is on call.

It reads Kafka and the registry for each stage's lag from outside the stage
(:mod:`streaming.runtime.stage_lag`: the feature workers' group offsets against the events topic's end
offsets; the learner's positions, which live in its checkpoints, not in Kafka, against the end offsets of
the topics it reads; in records and in event time), the registry (each model's versions, champion,
challengers, last checkpoint age, rolling metric, drifts, dead letters by reason) and each process's health
(its metrics endpoint or probe), and says what needs a person (:attr:`Status.problems`): a stage down, a
stage whose lag is not known, a stage lagging beyond ``max_lag`` records (or ``max_lag_s`` seconds of
event time, records waiting), a learner whose last checkpoint is older than ``max_checkpoint_age_s`` while
records wait, a quarantined model.

:func:`problems_of` is the pure part: it judges a :class:`Status` gathered by :func:`gather`.

>>> s = Status(stages=[Stage("learner", up=True, lag_records=20_000)], models=[])
>>> problems_of(s, max_lag=10_000, max_checkpoint_age_s=600)
['learner: 20000 records behind (more than 10000)']
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from streaming.clients import redis_client
from streaming.learning.header import CheckpointHeader
from streaming.learning.registry import Registry
from streaming.runtime.stage_lag import StageLag, measure, newest_header, shown
from streaming.settings import Settings

__all__ = ["ModelStatus", "Stage", "Status", "gather", "measure_lag", "model_statuses", "problems_of"]


@dataclass
class Stage:
    """A stage of the pipeline: ``up`` (None: not probed), lag in records over its partitions and in event
    time on its worst partition (None: not known; ``lag_known`` False when any of it is not), its
    endpoint, and lag per partition."""

    name: str
    up: bool | None = None
    lag_records: int | None = None
    lag_seconds: float | None = None
    lag_known: bool = True
    endpoint: str | None = None
    partitions: dict[str, int] = field(default_factory=dict)  # "topic[p]" -> records behind
    detail: str = ""


@dataclass
class ModelStatus:
    name: str
    spec: str
    versions: int
    current: int | None
    champion: str | None
    challengers: list[str]
    checkpoint_age_s: float | None
    rolling: dict[str, float]
    drifts: int
    learned: int | None
    dead_letters: dict[str, int]
    status: str  # ok, quarantined, retired, refused (no version verifies)


@dataclass
class Status:
    stages: list[Stage]
    models: list[ModelStatus]
    dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> reason -> count
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def problems_of(
    status: Status, *, max_lag: int, max_checkpoint_age_s: float, max_lag_s: float | None = None
) -> list[str]:
    """What needs a person: each line names the stage or model and why. ``max_lag_s``: event-time seconds
    behind, records waiting, that need a person (None: not judged)."""
    out: list[str] = []
    for s in status.stages:
        if s.up is False:
            out.append(f"{s.name}: down ({s.detail or s.endpoint})")
        if not s.lag_known:
            out.append(f"{s.name}: lag not known ({s.detail})")
        if s.lag_records is not None and s.lag_records > max_lag:
            out.append(f"{s.name}: {s.lag_records} records behind (more than {max_lag})")
        if (
            max_lag_s is not None
            and s.lag_seconds is not None
            and s.lag_seconds > max_lag_s
            and (s.lag_records or 0) > 0
        ):
            out.append(f"{s.name}: {s.lag_seconds:.0f} s behind in event time (more than {max_lag_s:g} s)")
    learner_lag = next((s.lag_records for s in status.stages if s.name == "learner"), None)
    for m in status.models:
        if m.status in ("quarantined", "refused"):
            out.append(f"model {shown(m.name)}: {m.status}")
        if (
            m.status == "ok"
            and m.checkpoint_age_s is not None
            and m.checkpoint_age_s > max_checkpoint_age_s
            and (learner_lag or 0) > 0
        ):
            out.append(
                f"model {shown(m.name)}: last checkpoint {m.checkpoint_age_s:.0f} s ago with records waiting "
                f"(more than {max_checkpoint_age_s:.0f} s)"
            )
    return out


# ---------------------------------------------------------------------- gathering


def probe(url: str | None, timeout_s: float = 2.0) -> tuple[bool | None, str]:
    """Whether ``url`` answers 200 (None: no URL to probe)."""
    if not url:
        return None, "not probed (no endpoint)"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def gather(
    settings: Settings,
    registry: Registry,
    *,
    endpoints: dict[str, str | None],
    now: float | None = None,
    max_lag: int = 10_000,
    max_checkpoint_age_s: float = 600.0,
    max_lag_s: float | None = None,
) -> Status:
    """The pipeline's state now. ``endpoints``: stage -> URL that answers 200 when the stage is up
    (``features``, ``learner``: their ``/metrics``; ``api``: ``/healthz``; None: not probed)."""
    now = time.time() if now is None else now
    models = model_statuses(registry, now)
    stages = [Stage(name, endpoint=endpoints.get(name)) for name in ("features", "learner", "api")]
    for stage in stages:
        stage.up, stage.detail = probe(stage.endpoint)
    lag = measure_lag(settings, registry, models)
    for stage in stages:
        if stage.name in lag:
            _with_lag(stage, lag[stage.name], now)
    status = Status(
        stages, models, {"learner": _learner_letters(models), "features": _feature_letters(settings)}
    )
    status.problems = problems_of(
        status, max_lag=max_lag, max_checkpoint_age_s=max_checkpoint_age_s, max_lag_s=max_lag_s
    )
    return status


def measure_lag(
    settings: Settings, registry: Registry, models: list[ModelStatus], *, timeout_s: float = 10.0
) -> dict[str, StageLag]:
    """Each stage's lag (:func:`streaming.runtime.stage_lag.measure`), the learner placed by the models
    that learn (not retired, quarantined or refused): what ``rivulet status`` and the API's lag watcher
    (:mod:`serving.lag`) both read."""
    learning = [m.name for m in models if m.status == "ok"]
    return measure(settings, registry, learning, timeout_s=timeout_s)


def _with_lag(stage: Stage, lag: StageLag, now: float) -> None:
    stage.partitions = {
        f"{p.topic}[{p.partition}]": r for p in lag.partitions if (r := p.records) is not None
    }
    records, stage.lag_seconds = lag.worst(now)
    stage.lag_records = lag.records if records is not None else None
    if lag.problems:
        stage.lag_known = False
        stage.detail = "; ".join(filter(None, [stage.detail, "lag not known: " + "; ".join(lag.problems)]))


def model_statuses(registry: Registry, now: float) -> list[ModelStatus]:
    """Each model of the registry: versions, champion, challengers, checkpoint age, metrics, status. Each
    header is read typed (:meth:`~streaming.learning.header.CheckpointHeader.of`): a field of the wrong
    type shows as not known, never raises."""
    names = registry.names()
    versions = {name: registry.versions(name) for name in names}
    headers = {name: newest_header(infos) for name, infos in versions.items()}
    typed = {name: CheckpointHeader.of(raw) for name, raw in headers.items()}
    out = []
    for name in names:
        infos = versions[name]
        raw, header = headers[name], typed[name]
        spec = name.partition("~")[0]
        if not raw:
            state = "refused"
        elif header.status == "retired":
            state = "retired"
        else:
            state = "quarantined" if _quarantined(registry, name) else "ok"
        out.append(
            ModelStatus(
                name=name,
                spec=spec,
                versions=len(infos),
                current=header.version if raw else None,
                champion=registry.champion(spec) if "~" not in name else None,
                challengers=sorted(
                    n
                    for n in names
                    if n.startswith(f"{name}~")
                    and typed[n].role == "challenger"
                    and typed[n].status != "retired"
                )
                if "~" not in name
                else [],
                checkpoint_age_s=round(now - header.saved_at, 1) if header.saved_at is not None else None,
                rolling={
                    k.removeprefix("rolling_"): v
                    for k, v in header.metrics.items()
                    if k.startswith("rolling_") and v is not None
                },
                drifts=header.counters.get("drifts", 0),
                learned=header.n_learned,
                dead_letters=dict(header.rejected),
                status=state,
            )
        )
    return out


def _quarantined(registry: Registry, name: str) -> bool:
    """Whether the model's newest history sample says it is quarantined (a sample that is not a JSON
    object: not)."""
    try:
        history = registry.history(name, limit=1)
    except ValueError:  # a sample that is not JSON (no Rivulet writes one): not known to be quarantined
        return False
    return bool(history) and isinstance(history[-1], dict) and history[-1].get("status") == "quarantined"


def _learner_letters(models: list[ModelStatus]) -> dict[str, int]:
    """The learner's rejections by reason, the most any model counted (a record rejected for every model
    is one letter)."""
    out: dict[str, int] = {}
    for m in models:
        for reason, n in m.dead_letters.items():
            out[reason] = max(out.get(reason, 0), int(n))
    return out


def _feature_letters(settings: Settings) -> dict[str, int]:
    from streaming.runtime.feature_worker import stats_key

    try:
        raw = redis_client(settings).hgetall(stats_key(settings))
    except Exception:  # Redis unreachable: the models' part failed already, or will say so
        return {}
    out = {}
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        if key.startswith("dead_letters:"):
            out[key.removeprefix("dead_letters:")] = int(v)
    return out
