"""The whole stream pipeline under a hostile producer (issue 11, acceptance): hypothesis generates records
that are invalid by construction (:mod:`tests.support.hostile`) and interleaves them, as raw bytes, with a
known good stream on the events, labels and predictions topics of real Kafka. The good stream's values are
what production sends (issue 13: nulls, missing fields, booleans and strings where numbers are expected,
near-constant values; :func:`tests.support.streams.with_hostile_values`), and so are the fields of the
hostile records' events. The real feature worker and the real learner (``rivulet learn run``) then run until
caught up.

Asserted, for each example:

- neither process stops by itself, and each exits 0 when told to (SIGTERM; the learner's ``--idle-exit``);
- every hostile record is on the dead-letter topic, found by its position (topic, partition, offset), with
  the stage and reason its construction calls for and its original bytes; a valid event the learner must
  refuse is found at the position of its features record; no good record is dead-lettered;
- the per-reason counters (feature worker's stats in Redis, the learner's checkpoint header) count them;
- the features records and the Redis vectors of the good entities equal the brute-force oracle
  (:mod:`tests.support.oracle`) on the good stream alone, and the fresh entities of the valid hostile events
  hold the oracle's vector of theirs (the second ``1e308`` loan refused as an overflow);
- the models' final metrics equal River's ``progressive_val_score`` on the good stream alone, labels inline
  for some events and late (``DELAY`` events later, on the labels topic) for the others; the tree never
  learned a class other than ``False``/``True``.

Hypothesis runs two examples (derandomized: the same two on every run), each on fresh topics and keys.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from river import evaluate, metrics, tree

from features.events import Event, Label
from streaming.clients import kafka_producer, redis_client
from streaming.settings import Settings
from tests.streaming.runtime.test_feature_worker import read_redis
from tests.support.feature_defs import ALL
from tests.support.hostile import Hostile, Slot, batch
from tests.support.kafka_read import read_all
from tests.support.learning import KEY_ENV, events, learning_topics, registry
from tests.support.model_defs import scaled_lr
from tests.support.oracle import Oracle
from tests.support.streams import with_hostile_values
from tests.support.workers import ROOT, Worker, wait_caught_up

pytestmark = pytest.mark.integration

N, DELAY, SEED = 400, 25, 61
LATE = frozenset(i for i in range(N) if i % 3 == 1)  # these events' labels come on the labels topic
# strictly increasing event times, 40 entities, a label on each; values as production sends them (nulls,
# missing fields, booleans, strings, near-constant values: tests.support.streams)
GOOD = with_hostile_values(events(N, seed=SEED), seed=SEED)
MODELS: dict[str, Callable[[], Any]] = {
    "lr": scaled_lr,
    "tree": tree.HoeffdingTreeClassifier,
}  # tests.support.poison_models


def good_stream() -> list[tuple[str, bytes, bytes, int]]:
    """(role, key, value, time) in the order they are sent: each event (without its label when the label
    is late), and the late label of event ``j`` at the time of event ``j + DELAY`` just before it (River's
    ``simulate_qa`` reveals it before that question), or after the last event."""
    out = []
    due = {j + DELAY: j for j in LATE}
    for i, e in enumerate(GOOD):
        if i in due:
            out.append(_label(GOOD[due[i]], e.ts))
        sent = e.model_copy(update={"label": None}) if i in LATE else e
        out.append(("events", e.entity.encode(), sent.to_json(), e.ts))
    rest = sorted(j for j in LATE if j + DELAY >= N)
    out += [_label(GOOD[j], GOOD[-1].ts + 1 + k) for k, j in enumerate(rest)]
    return out


def _label(e: Event, ts: int) -> tuple[str, bytes, bytes, int]:
    return ("labels", e.event_id.encode(), Label(event_id=e.event_id, label=e.label, ts=ts).to_json(), ts)


Position = tuple[str, int, int]


def produce(s: Settings, hostile: list[tuple[Slot, Hostile]]) -> dict[Position, Hostile]:
    """The good stream with the hostile records at their slots, as raw bytes; returns where each hostile
    record landed."""
    good = good_stream()
    at: dict[int, list[Hostile]] = defaultdict(list)
    for slot, h in hostile:
        at[slot.index].append(h)
    producer = kafka_producer(s, acks="all", max_request_size=2_000_000)
    placed = []
    try:
        for index in range(len(good) + 1):
            for h in at.get(index, []):
                placed.append((producer.send(getattr(s.topics, h.role), h.value, key=h.key), h))
            if index < len(good):
                role, key, value, _ = good[index]
                producer.send(getattr(s.topics, role), value, key=key)
        producer.flush()
        positions = {}
        for future, h in placed:
            meta = future.get(timeout=30)
            positions[(meta.topic, meta.partition, meta.offset)] = h
        return positions
    finally:
        producer.close()


@contextmanager
def fresh_pipeline(base: Settings) -> Iterator[Settings]:
    """Rivulet's topics and keys under prefixes of their own (one hypothesis example), removed afterwards."""
    run = uuid.uuid4().hex[:10]
    s = base.model_copy(update={"topic_prefix": f"test.fuzz.{run}.", "redis_prefix": f"test:fuzz:{run}:"})
    client = redis_client(s)
    try:
        with learning_topics(s) as topics:
            yield topics
    finally:
        keys = list(client.scan_iter(match=f"{s.redis_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def run_learner(s: Settings, log: Path) -> int:
    """``rivulet learn run`` until idle, as its own process; returns its exit code."""
    env = {
        **os.environ,
        "RIVULET_TOPIC_PREFIX": s.topic_prefix,
        "RIVULET_REDIS_PREFIX": s.redis_prefix,
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs",
        "RIVULET_LOG_LEVEL": "WARNING",
        **KEY_ENV,
    }
    # 6 s without records: a slow first fetch on a loaded machine is not the end of the stream
    argv = ["learn", "run", "--models", "tests.support.poison_models", "--idle-exit", "6"]
    with log.open("ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "streaming.cli", *argv],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=240,
            check=False,
        )
    return done.returncode


def features_records(s: Settings) -> dict[str, tuple[Position, dict[str, Any]]]:
    """View ``all``'s features records by event id, with their positions."""
    out: dict[str, tuple[Position, dict[str, Any]]] = {}
    for r in read_all(s.kafka_bootstrap, s.topics.features):
        rec = orjson.loads(r.value)
        if rec["view"] == "all":
            out.setdefault(rec["event"]["event_id"], ((r.topic, r.partition, r.offset), rec))
    return out


def check_dead_letters(
    s: Settings,
    sent: dict[Position, Hostile],
    records: dict[str, tuple[Position, dict[str, Any]]],
) -> None:
    """Each hostile record's letter at its position (a valid event's: at its features record's), with
    its stage, reason and bytes; nothing else is dead-lettered."""
    expected: dict[Position, Hostile] = {}
    for position, h in sent.items():
        if h.stage == "learner" and h.role == "events":
            assert h.event is not None and h.event.event_id in records, f"no features record: {h}"
            expected[records[h.event.event_id][0]] = h
        else:
            expected[position] = h
    letters: dict[Position, list[dict[str, Any]]] = defaultdict(list)
    for r in read_all(s.kafka_bootstrap, s.topics.dead_letters):
        d = orjson.loads(r.value)
        letters[(d["topic"], d["partition"], d["offset"])].append(d)
    missing = [expected[p] for p in expected.keys() - letters.keys()]
    assert not missing, f"{len(missing)} hostile records not dead-lettered, e.g. {missing[:3]}"
    strays = {p: ds for p, ds in letters.items() if p not in expected}
    assert not strays, f"dead letters of records that are not hostile: {list(strays.items())[:3]}"
    for position, h in expected.items():
        for d in letters[position]:  # at least once: a redelivery may write one twice
            got = (d["stage"], d["reason"])
            assert got == (h.stage, h.reason), f"{got} for {h.kind} {h.role} {h.value!r:.200}"
            if h.event is not None and h.stage == "learner":  # its features record's bytes: its event
                assert orjson.loads(base64.b64decode(d["value_b64"]))["event"] == h.event.to_dict()
            elif h.value is None:
                assert d["value_b64"] is None
            elif d["value_b64"] is not None:
                assert base64.b64decode(d["value_b64"]) == h.value
            else:  # too large to carry: its size and hash instead
                assert d["value_bytes"] == len(h.value)
            assert isinstance(d["error"], str) and d["error"], d
            if h.event is None and h.key is not None:  # the original key too (or its size, if too large)
                if d.get("key_b64") is not None:
                    assert base64.b64decode(d["key_b64"]) == h.key
                else:
                    assert d["key_bytes"] == len(h.key)
            if h.stage == "learner":
                assert sorted(d["models"]) == sorted(MODELS)


def check_vectors(
    s: Settings, sent: dict[Position, Hostile], records: dict[str, tuple[Position, dict[str, Any]]]
) -> None:
    """Good events' records and good entities' Redis vectors equal the oracle on the good stream alone;
    each fresh entity of valid hostile events holds the oracle's vector of its own events."""
    oracle = Oracle(ALL).feed(GOOD)
    assert not oracle.late and not oracle.overflow
    for e in GOOD:
        (_, rec) = records[e.event_id]
        assert not oracle.diff(rec["features"], oracle.vectors[e.event_id]), (e.event_id, rec)
    online = oracle.online()
    fresh: dict[str, list[Event]] = defaultdict(list)
    for h in sent.values():  # in the order they were sent on their entity's partition
        if h.event is not None:
            fresh[h.event.entity].append(h.event)
    for entity, evs in fresh.items():
        theirs = Oracle(ALL).feed(evs)
        refused = {h.event.event_id for h in sent.values() if h.event and h.reason == "overflow"}
        assert theirs.overflow == refused & {e.event_id for e in evs}, entity  # the construction holds
        online[entity] = theirs.online()[entity]
    entities = sorted(online)
    for entity, row in zip(entities, read_redis(s, "all", entities), strict=True):
        wm, aggs = online[entity]
        assert row is not None and row.ts == wm and not oracle.diff(row.values, aggs), (entity, row, aggs)
    good_ids = {e.event_id for e in GOOD}
    hostile_ids = {h.event.event_id for h in sent.values() if h.event and h.reason != "overflow"}
    assert records.keys() == good_ids | hostile_ids


def river_score(data: list[tuple[dict[Hashable, Any], Any]], model: Any, metric: Any) -> float:
    """River's progressive validation with the good stream's delays: an inline label is revealed before the
    next event (delay 0), a late one ``DELAY`` events later (``simulate_qa`` asks the delay once per record,
    in order)."""
    delays = iter([DELAY if i in LATE else 0 for i in range(N)])
    return float(evaluate.progressive_val_score(data, model, metric, delay=lambda _x, _y: next(delays)).get())


def check_models(s: Settings, sent: dict[Position, Hostile], records: dict[str, Any]) -> None:
    """The final checkpoints: metrics equal River's progressive validation on the good stream alone (labels
    inline or DELAY events late), every good event learned once, rejections counted by reason."""
    data: list[tuple[dict[Hashable, Any], Any]] = []
    for e in GOOD:
        features = records[e.event_id][1]["features"]
        x: dict[Hashable, Any] = {
            k: v for k, v in features.items() if v is not None and not isinstance(v, bool | str)
        }
        data.append((x, e.label))
    rejected = dict(Counter(h.reason for h in sent.values() if h.stage == "learner"))
    reg = registry(s)
    for name, make in MODELS.items():
        opened, refused = reg.load_latest(name)
        assert not refused
        header = opened.header
        assert header["n_learned"] == N, (name, header["n_learned"])
        assert header["rejected"] == rejected, name
        for metric in (metrics.LogLoss(), metrics.Accuracy()):
            want = river_score(data, make(), metric)
            got = header["metrics"][type(metric).__name__]
            assert got == pytest.approx(want, rel=1e-9), (name, type(metric).__name__)
        if name == "tree":
            assert set(opened.state.model.classes) <= {False, True}


@hypothesis_settings(
    max_examples=2,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.generate],  # no shrinking: each example runs both processes on real Kafka
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(data=st.data())
def test_hostile_records_on_every_topic_leave_the_good_stream_as_the_oracle(
    data: st.DataObject,
    base_settings: Settings,
    kafka_up: str,
    redis_up: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    stream = good_stream()
    times = [ts for _, _, _, ts in stream]
    hostile = data.draw(batch(times, [e.event_id for e in GOOD]), label="hostile records")
    logs = tmp_path_factory.mktemp("fuzz")
    with fresh_pipeline(base_settings) as s:
        sent = produce(s, hostile)
        worker = Worker(s, "tests.support.feature_defs:DIRECT", logs / "features.log")
        try:
            wait_caught_up(s, [worker], timeout_s=120)  # asserts the worker never exited
            assert worker.alive(), worker.log.read_text()[-3000:]
        finally:
            worker.stop()
        assert worker.proc.returncode == 0, f"the feature worker exited {worker.proc.returncode}"
        code = run_learner(s, logs / "learn.log")
        assert code == 0, f"the learner exited {code}:\n{(logs / 'learn.log').read_text()[-3000:]}"

        records = features_records(s)
        check_dead_letters(s, sent, records)
        check_vectors(s, sent, records)
        check_models(s, sent, records)
        stats = redis_client(s).hgetall(f"{s.redis_prefix}stats:features")
        counted = {k.decode(): int(v) for k, v in stats.items() if k.startswith(b"dead_letters:")}  # type: ignore[union-attr,arg-type]
        want = Counter(f"dead_letters:{h.reason}" for h in sent.values() if h.stage == "features")
        assert counted == dict(want)
