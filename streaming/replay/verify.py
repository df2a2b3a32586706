"""``rivulet models verify``: rebuild a stored model version from the log and check it equals the stored one.

Every checkpoint says how to rebuild it: its *base* (the version it continued from, or a fresh model from
its spec) with the positions at that point, the positions after the last record it processed, and the
order it processed them in (:class:`~streaming.learning.merge.OrderJournal`). Verification walks back
through the retained versions to the earliest base it can (a fresh model, when every version since the
first is retained and the log still holds their records; else the oldest retained version), reads the
journaled records from Kafka in that order, feeds them through the same router and learner core, and
compares the result with the stored state:

1. the **snapshot hash**: the rebuilt state pickles to the same bytes as the stored payload;
2. failing that, **equivalence**: the same counters, the same metric values, the same pending
   predictions, and bit-for-bit the same predictions on a probe set (the last feature vectors of the
   range). Pickles of equal states need not be byte-identical: pickle writes a string once and refers
   back to it when the *same object* recurs, and which strings are shared objects depends on the
   process (orjson's key cache, what was unpickled from the base), not on the model; and some models
   hold random state they never use to learn or predict (River's ``proba.Gaussian``, in every leaf of a
   Hoeffding tree, keeps an unseeded ``random.Random`` for sampling).
"""

from __future__ import annotations

import hashlib
import itertools
import pickle
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streaming.errors import StreamingError
from streaming.learning.core import LearnerCore, ModelState, predict
from streaming.learning.domain import vector_in_domain
from streaming.learning.header import CheckpointHeader, HeaderError
from streaming.learning.keys import Keyring
from streaming.learning.loop import in_journal_order
from streaming.learning.merge import Positioned
from streaming.learning.registry import NoValidVersion, RedisRegistry
from streaming.learning.router import Router, TopicRoles
from streaming.learning.snapshot import SnapshotRejected
from streaming.learning.spec import ModelSpec
from streaming.replay.collect import fewer_collections
from streaming.replay.kafka import RangeReader
from streaming.settings import Settings

__all__ = ["History", "Verification", "VerifyError", "check_retention", "history", "probes_differ", "verify"]


class VerifyError(StreamingError):
    """The version cannot be rebuilt (not retained, refused, or the log no longer holds its records)."""


@dataclass
class Verification:
    model: str
    version: int
    ok: bool
    method: str  # "snapshot hash" | "equivalence"
    base: str  # what the rebuild started from
    records: int
    checks: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _load(registry: RedisRegistry, name: str, version: int) -> Any:
    try:
        return registry.load(name, version)
    except (SnapshotRejected, NoValidVersion) as exc:
        raise VerifyError(str(exc)) from None


def _header(raw: dict[str, Any]) -> CheckpointHeader:
    """The typed header; one whose positions cannot be read cannot be rebuilt."""
    try:
        return CheckpointHeader.of(raw).require("offsets", "base", "journal")
    except HeaderError as exc:
        raise VerifyError(str(exc)) from None


@dataclass
class Chain:
    """What a rebuild starts from and replays: the headers from the oldest base on (the verified version's
    last), and the base's state (None: a fresh model) described as ``base``."""

    headers: list[CheckpointHeader]
    start: ModelState | None = None
    base: str = "a fresh model"

    @property
    def journals(self) -> list[dict[str, Any]]:
        return [h.journal for h in self.headers if h.journal is not None]

    def ranges(self) -> dict[str, dict[int, tuple[int, int]]]:
        """Per topic and partition, from the oldest base's position to the verified version's."""
        starts: dict[str, dict[int, int]] = {}
        for h in self.headers:
            assert h.base is not None  # rebuildable
            for t, parts in h.base.offsets.items():
                for p, o in parts.items():
                    starts.setdefault(t, {}).setdefault(p, o)
        ends = self.headers[-1].offsets
        return {
            t: {p: (starts.get(t, {}).get(p, o), o) for p, o in parts.items()} for t, parts in ends.items()
        }


def verify(
    settings: Settings,
    registry: RedisRegistry,
    specs: Iterable[ModelSpec],
    name: str,
    version: int,
    *,
    from_version: int | None = None,
    probes: int = 200,
    on_progress: Callable[[int, int], None] | None = None,
) -> Verification:
    """Rebuild ``name`` version ``version`` from the log (from ``from_version``, or the earliest base the
    log and the registry allow) and compare it with the stored one; :class:`VerifyError` when it cannot be
    rebuilt."""
    target = _load(registry, name, version)
    past = history(settings, registry, specs, name, version, from_version=from_version, header=target.header)
    header, chain, log_start = past.header, past.chain, past.log_start
    rebuild = _Rebuild(settings, past.spec, name, chain.start, probes, registry.keyring)
    done = rebuild.run(settings, chain, log_start, on_progress)
    return _judge(Verification(name, version, False, "", chain.base, done), rebuild, target.state, header)


@dataclass
class History:
    """What rebuilds a version: its header, its spec, the chain of versions from the earliest base the log
    and the registry allow, and where the log starts on each partition of its topics."""

    header: CheckpointHeader
    spec: ModelSpec
    chain: Chain
    log_start: dict[str, dict[int, int]]


def history(
    settings: Settings,
    registry: RedisRegistry,
    specs: Iterable[ModelSpec],
    name: str,
    version: int,
    *,
    from_version: int | None = None,
    header: dict[str, Any] | None = None,
) -> History:
    """The history of ``name`` version ``version`` (``header``: its verified header, when it was loaded
    already); :class:`VerifyError` when it cannot be rebuilt. What ``verify`` and ``rivulet export
    version`` read."""
    typed = _header(header if header is not None else _load(registry, name, version).header)
    spec = _spec_of(typed, specs, name, version)
    if from_version is not None and from_version >= version:
        raise VerifyError(f"--from-version must be older than the version verified ({version})")
    with RangeReader(settings, client_id="rivulet-verify") as probe:
        log_start = {t: probe.log_start(t) for t in typed.offsets}
    return History(typed, spec, _chain(registry, name, version, typed, from_version, log_start), log_start)


def _spec_of(header: CheckpointHeader, specs: Iterable[ModelSpec], name: str, version: int) -> ModelSpec:
    if not header.rebuildable:
        raise VerifyError(
            f"model {name!r} version {version} has no order journal (written by an older Rivulet)"
        )
    by_name = {s.name: s for s in specs}
    spec = by_name.get(header.spec or name.split("~")[0])
    if spec is None:
        raise VerifyError(f"no spec {header.spec!r} in the models module; known: {sorted(by_name)}")
    return spec


def _held(h: CheckpointHeader, log_start: dict[str, dict[int, int]]) -> bool:
    """Does the log still hold every record from this header's base on?"""
    assert h.base is not None  # rebuildable
    return all(
        log_start.get(t, {}).get(p, 0) <= o for t, parts in h.base.offsets.items() for p, o in parts.items()
    )


def _chain(
    registry: RedisRegistry,
    name: str,
    version: int,
    header: CheckpointHeader,
    from_version: int | None,
    log_start: dict[str, dict[int, int]],
) -> Chain:
    """Walk back through the retained versions to the earliest base the log still allows (or to
    ``from_version``)."""
    chain = Chain([header])
    while True:
        base = chain.headers[0].base
        assert base is not None  # rebuildable
        bv = base.version
        if bv is None:
            if from_version is not None:
                raise VerifyError(f"version {from_version} is not in the history of version {version}")
            return chain
        if from_version is not None and bv < from_version:
            raise VerifyError(f"version {from_version} is not in the history of version {version}")
        try:
            opened = registry.load(name, int(bv))
        except (SnapshotRejected, NoValidVersion) as exc:
            if len(chain.headers) == 1 or from_version is not None:
                raise VerifyError(f"cannot rebuild from version {bv}: {exc}") from None
            raise VerifyError(f"the history of version {version} is broken at version {bv}: {exc}") from None
        h = _header(opened.header)
        stop = from_version is not None and bv == from_version
        nxt = h.base
        if (
            not stop
            and h.rebuildable
            and nxt is not None
            and _held(h, log_start)
            and (nxt.version is None or _retained(registry, name, nxt.version))
        ):
            chain.headers.insert(0, h)
            continue
        if from_version is not None and not stop:
            raise VerifyError(
                f"cannot rebuild from version {from_version}: the history stops at version {bv}"
            )
        chain.start, chain.base = opened.state, f"version {bv}"
        return chain


class _Rebuild:
    """The model rebuilt through the live learner's router and core, and the probe vectors it saw last."""

    def __init__(
        self,
        settings: Settings,
        spec: ModelSpec,
        name: str,
        start: ModelState | None,
        probes: int,
        keyring: Keyring | None = None,
    ) -> None:
        self.core = LearnerCore([spec])
        # the live learner names a model's state with its spec's own name string: the same object, which
        # pickle writes once; an equal string from the command line would be written twice
        own = spec.name if name == spec.name else name
        self.state = self.core.new_state(spec, own) if start is None else start
        self.core.models = {name: self.state}
        self.name, self.spec, self.topics = name, spec, settings.topics
        t = settings.topics
        self.router = Router(
            self.core, TopicRoles(t.features, t.labels, t.predictions), track=False, keyring=keyring
        )
        self.recent: deque[dict[str, Any]] = deque(maxlen=probes)

    def feed(self, rec: Positioned) -> None:
        self.router.process(rec)
        value = rec.value
        if (
            rec.topic == self.topics.features
            and isinstance(value, dict)
            and value.get("view") == self.spec.view
            and isinstance(value.get("features"), dict)
            and vector_in_domain(value["features"])  # a rejected vector is no probe
        ):
            self.recent.append(value["features"])

    def run(
        self,
        settings: Settings,
        chain: Chain,
        log_start: dict[str, dict[int, int]],
        on_progress: Callable[[int, int], None] | None,
    ) -> int:
        """Feed the chain's records in journal order; how many."""
        journals, ranges = chain.journals, chain.ranges()
        total = sum(len_journal(j) for j in journals)
        # the live learner read the metrics at every checkpoint before pickling, and reading some River
        # metrics changes their state (a confusion matrix is a defaultdict: reading a missing cell inserts
        # it, and the order of insertion is pickled), so they are read at the same points: after each
        # version's records
        boundaries = set(itertools.accumulate(len_journal(j) for j in journals))
        if 0 in boundaries:
            self.state.metric_values()
        done = 0
        with RangeReader(settings, client_id="rivulet-verify") as reader:
            check_retention(ranges, log_start, chain.base)
            reader.assign(ranges)

            def missing(topic: str, partition: int) -> Exception:
                return VerifyError(
                    f"the journal expects more records of {topic}[{partition}] than the log holds"
                )

            with fewer_collections():  # records are buffered per partition: see streaming.replay.collect
                for rec in in_journal_order(reader, journals, on_missing=missing):
                    self.feed(rec)
                    done += 1
                    if done in boundaries:
                        self.state.metric_values()
                    if on_progress is not None and done % 1000 == 0:
                        on_progress(done, total)
        if on_progress is not None:
            on_progress(done, total)
        if done != total:
            raise VerifyError(f"rebuilt from {done} records, the journal lists {total}")
        return done


def check_retention(
    ranges: dict[str, dict[int, tuple[int, int]]], log_start: dict[str, dict[int, int]], base: str
) -> None:
    for t, spans in ranges.items():
        for p, (lo, _) in spans.items():
            if log_start.get(t, {}).get(p, 0) > lo:
                raise VerifyError(
                    f"the log of {t}[{p}] starts at offset {log_start[t][p]}, after {lo} where the "
                    f"rebuild must start from {base}: retention removed records it needs"
                )


def _judge(
    result: Verification, rebuild: _Rebuild, stored: ModelState, header: CheckpointHeader
) -> Verification:
    """The snapshot hash, or failing that the equivalence, of the rebuilt and the stored state."""
    rebuilt = rebuild.core.models[rebuild.name]
    digest = hashlib.sha256(pickle.dumps(rebuilt, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()
    if digest == header.payload_sha256:
        result.ok, result.method = True, "snapshot hash"
        result.checks.append(f"rebuilt state pickles to the stored payload (sha256 {digest[:16]}...)")
        return result
    result.method = "equivalence"
    result.notes.append(
        "rebuilt state pickles to other bytes than the stored payload (random state the model does not use "
        "for learning or prediction, or strings shared differently): compared by equivalence"
    )
    _compare(result, "counters", rebuilt.counters, stored.counters)
    _compare(result, "rejections", rebuilt.rejected, stored.rejected)
    _compare(result, "metrics", rebuilt.metric_values(), stored.metric_values())
    _compare(result, "last learned event time", rebuilt.last_ts, stored.last_ts)
    _compare(result, "pending predictions", sorted(rebuilt.pending), sorted(stored.pending))
    probe_set = list(rebuild.recent)
    diff = probes_differ(rebuilt, stored, probe_set)
    if diff is None:
        result.checks.append(f"predictions on {len(probe_set)} probe vectors are identical")
    else:
        i, mine, theirs = diff
        result.mismatches.append(f"probe {i}: rebuilt predicts {mine}, stored predicts {theirs}")
    result.ok = not result.mismatches
    return result


def probes_differ(
    rebuilt: ModelState, stored: ModelState, vectors: list[dict[str, Any]]
) -> tuple[int, Any, Any] | None:
    """The first probe vector on which the two states predict differently: (its index, the rebuilt one's
    prediction, the stored one's), or None. A probe a model raises on (a vector the router rejected for it:
    a string where it took numbers) counts as the exception's type, and NaN equals NaN: before, either made
    ``verify`` fail on a good version (an uncaught exception, or NaN != NaN)."""
    for i, (a, b) in enumerate(
        zip(_predictions(rebuilt, vectors), _predictions(stored, vectors), strict=True)
    ):
        if a != b and repr(a) != repr(b):
            return i, a, b
    return None


def _predictions(state: ModelState, vectors: list[dict[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for x in _inputs(state, vectors):
        try:
            out.append(predict(state, dict(x), serving=True))
        except Exception as exc:  # the same vector makes the same model raise the same way
            out.append(f"raised {type(exc).__name__}")
    return out


def len_journal(journal: dict[str, Any]) -> int:
    return sum(journal["runs"][1::2])


def _retained(registry: RedisRegistry, name: str, version: int) -> bool:
    return any(v.version == version for v in registry.versions(name))


def _inputs(state: ModelState, vectors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from streaming.learning.core import select_inputs

    return [select_inputs(v, state.features) for v in vectors]


def _compare(result: Verification, what: str, rebuilt: Any, stored: Any) -> None:
    if rebuilt == stored:
        result.checks.append(f"{what} equal")
    else:
        result.mismatches.append(f"{what} differ: rebuilt {rebuilt!r}, stored {stored!r}")
