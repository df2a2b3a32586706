"""``rivulet export``: point-in-time datasets. A dataset is named by a log range and feature definitions,
not copied into a data lake: the feature vectors one model saw and the labels joined to them, written to
Parquet (:mod:`streaming.replay.dataset`) with the range, the offsets, the feature-definition hash and a
content hash in the file's metadata.

Two sources, both read by the machinery that replays and verifies, with a
:class:`~streaming.replay.recorder.Recorder` as the learner core (so the join is the learner's own):

- :func:`export_range`: a topic over a range (:class:`~streaming.replay.plan.TopicSource`, optionally
  some partitions only), with the labels topic over its own range, for one spec, as ``rivulet replay``
  reads it. Give the resolved offsets back (the metadata's ``range``) to export the same dataset again.
- :func:`export_history`: what a registry version learned, its records in the order its journal lists
  (as ``rivulet models verify`` reads them), up to the offsets its header names.

A bad record (not JSON, no vector, a label no model can take...) goes where a replay sends it: it is
rejected by the router, counted by reason in the metadata's ``dead_letters``, and the export goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import river

from features.definitions import FeatureView
from streaming.learning.loop import in_journal_order
from streaming.learning.merge import Positioned
from streaming.learning.registry import RedisRegistry
from streaming.learning.router import Router, TopicRoles
from streaming.learning.spec import ModelSpec
from streaming.replay import dataset
from streaming.replay.kafka import RangeError, RangeReader
from streaming.replay.plan import TopicSource, plan_topic, views_for
from streaming.replay.recorder import Recorder
from streaming.replay.runner import Replay
from streaming.replay.sources import kafka_records
from streaming.replay.verify import VerifyError, check_retention, history, len_journal
from streaming.settings import Settings

__all__ = ["Exported", "export_history", "export_range"]


class Exported:
    """A written dataset: its path, its metadata and its table (``pyarrow.Table``)."""

    def __init__(self, path: Path, table: Any) -> None:
        self.path = path
        self.table = table
        self.meta = dataset.metadata_of(table.schema)


def export_range(
    settings: Settings,
    source: TopicSource,
    spec: ModelSpec,
    views: Sequence[FeatureView],
    out: str | Path,
    *,
    partitions: Sequence[int] | None = None,
    keyring: Any = None,
) -> Exported:
    """The rows ``spec``'s model sees over ``source`` (of ``partitions``, default all), to ``out``."""
    recorder = Recorder([spec], spec.name)
    replay = Replay([spec], views=views_for(views, [spec]), keyring=keyring, core=recorder)
    replay.on_features = recorder.see
    with RangeReader(settings, client_id="rivulet-export") as reader:
        plan = plan_topic(reader, settings, source)
        if partitions is not None:
            have = plan.ranges[source.topic]
            unknown = sorted(set(partitions) - set(have))
            if unknown:
                raise RangeError(f"topic {source.topic!r} has no partition {unknown[0]}")
            plan.ranges[source.topic] = {p: r for p, r in have.items() if p in set(partitions)}
        replay.run(kafka_records(reader, plan, replay))
    ranges = plan.describe()
    meta = {
        "source": {"kind": "range", "topic": source.topic, "role": source.role, "order": _order(source)},
        **_model(spec, replay.core.models.get(spec.name)),
        "feature_hash": _fingerprint(views, spec.view),
        "feature_hash_from": "RIVULET_FEATURES_MODULE",
        "range": ranges,
        "offsets": {t: {p: e for p, (_, e) in parts.items()} for t, parts in ranges.items()},
        "dead_letters": dict(sorted(replay.dead_letters.counts.items())),
        "features_stage": dict(sorted(replay.stage.counts.items())) if replay.stage else {},
        "labels_before_range": replay.labels_before,
    }
    return _write(recorder, meta, out)


def export_history(
    settings: Settings,
    registry: RedisRegistry,
    specs: Iterable[ModelSpec],
    name: str,
    version: int,
    out: str | Path,
) -> Exported:
    """The rows model ``name`` learned up to ``version`` (from a fresh model, or from the oldest version
    the registry and the log still allow: the metadata's ``base``), to ``out``."""
    past = history(settings, registry, specs, name, version)
    header, chain, spec = past.header, past.chain, past.spec
    recorder = Recorder([spec], name)
    if chain.start is not None:
        recorder.models = {name: chain.start}
    else:  # the live learner names a model's state with its spec's own name string
        recorder.models = {name: recorder.new_state(spec, spec.name if name == spec.name else name)}
    t = settings.topics
    router = Router(
        recorder, TopicRoles(t.features, t.labels, t.predictions), track=False, keyring=registry.keyring
    )
    ranges = chain.ranges()
    total = sum(len_journal(j) for j in chain.journals)
    done = 0
    with RangeReader(settings, client_id="rivulet-export") as reader:
        check_retention(ranges, past.log_start, chain.base)
        reader.assign(ranges)

        def missing(topic: str, partition: int) -> Exception:
            return VerifyError(f"the journal expects more records of {topic}[{partition}] than the log holds")

        for rec in in_journal_order(reader, chain.journals, on_missing=missing):
            _feed(recorder, router, rec, t.features, t.predictions)
            done += 1
    if done != total:
        raise VerifyError(f"read {done} records, the journal lists {total}")
    meta = {
        "source": {"kind": "version", "version": version, "base": chain.base, "order": "journal"},
        **_model(spec, recorder.models.get(name)),
        "model": name,
        "feature_hash": header.feature_hash,
        "feature_hash_from": "the version's header",
        "range": {t: {str(p): [s, e] for p, (s, e) in sorted(ps.items())} for t, ps in ranges.items()},
        "offsets": {t: {str(p): o for p, o in sorted(ps.items())} for t, ps in header.offsets.items()},
        "records": done,
        "dead_letters": dict(sorted(getattr(recorder.models.get(name), "rejected", {}).items())),
        "n_learned": header.n_learned,
        "river": header.river,
    }
    return _write(recorder, meta, out)


def _feed(recorder: Recorder, router: Router, rec: Positioned, features: str, predictions: str) -> None:
    recorder.see(rec.value if rec.topic in (features, predictions) else None)
    router.process(rec)


def _model(spec: ModelSpec, state: Any) -> dict[str, Any]:
    return {
        "model": spec.name,
        "spec": spec.name,
        "view": spec.view,
        "task": spec.task,
        "status": getattr(state, "status", None),
        "river_version": river.__version__,
    }


def _order(source: TopicSource) -> str:
    return "kafka" if source.kafka_order else "event-time"


def _fingerprint(views: Sequence[FeatureView], name: str) -> str | None:
    return next((v.fingerprint() for v in views if v.name == name), None)


def _write(recorder: Recorder, meta: dict[str, Any], out: str | Path) -> Exported:
    table = dataset.to_table(recorder.rows, meta)
    return Exported(dataset.write(table, out), table)
