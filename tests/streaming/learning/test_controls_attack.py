"""Attacks on the hand controls of the lifecycle (signed control records in the features topic): each test
is a promise of :mod:`streaming.learning.controls` an input breaks (failing on the code it was written
against), or one that holds and is pinned here (the last few)."""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from features.events import MIN_TS_MS
from streaming.cli import app
from streaming.learning import controls as controls_module
from streaming.learning.controls import (
    MAX_CONTROL_BYTES,
    ControlRefused,
    challenger_model,
    control_time,
    open_control,
    sign_control,
)
from streaming.learning.keys import generate
from streaming.learning.merge import NO_TIME, Merger, Positioned, event_time
from streaming.learning.registry import MemoryRegistry
from streaming.learning.router import Router
from streaming.replay.runner import FEATURES, Replay
from streaming.runtime.learner import Learner
from tests.streaming.learning.test_controls import KEY, RING, ROLES, SPEC, STREAM, T0, Log, control, features

pytestmark = pytest.mark.unit

NEVER = replace(SPEC, checkpoint=replace(SPEC.checkpoint, every_records=10**9))  # checkpoints by hand only


def signed_text(text: str, key_id: str = KEY.key_id) -> dict[str, Any]:
    """A control record over ``text`` exactly as written (what a key holder can sign: sign_control's own
    serialiser refuses some JSON the learner parses)."""
    sig = KEY.sign(controls_module._DOMAIN + text.encode())
    return {"control": text, "key_id": key_id, "sig": base64.b64encode(sig).decode()}


def nested_challenge(depth: int, cid: str = "deep") -> dict[str, Any]:
    """A signed challenge whose challenger takes a parameter nested ``depth`` lists deep (valid JSON, well
    under the control's size limit and orjson's nesting limit)."""
    value = "[" * depth + '"a"' + "]" * depth
    steps = '[{"tree.HoeffdingTreeClassifier":{"nominal_attributes":' + value + "}}]"
    return signed_text(
        '{"action":"challenge","spec":"m","model":null,"warm":null,"challenger":' + steps
        + f',"id":"{cid}","ts":{T0}' + "}"
    )  # fmt: skip


def run_log(learner: Learner, records: list[Any], start: int, stop: int) -> None:
    for offset in range(start, stop):
        value = records[offset]
        learner.process(Positioned(event_time(value), 0, 0, offset, "f", value, orjson.dumps(value)))


def taken(decisions: Any) -> list[tuple[str, str, Any]]:
    return [(d.kind, d.model, d.position) for d in decisions]


def deeper(frames: int, fn: Callable[[], Any]) -> Any:
    """``fn`` called ``frames`` Python frames deeper than here (a caller with a longer stack)."""
    return fn() if frames == 0 else deeper(frames - 1, fn)


# ---------------------------------------------------------------------- promise 2: each id applied once


def test_a_copy_of_an_old_control_is_not_applied_again_after_a_thousand_others() -> None:
    """The ids are remembered in a list cut to CONTROLS_KEPT (1,000): once that many other controls were
    applied, a copy of the first one (any writer of the features topic can copy a record) applies again."""
    log = Log()
    log.stream(0, 20)
    first = control("challenge", control_id="first")
    log.send(first)
    for i in range(1_000):
        log.send(control("challenge", control_id=f"k{i}"))
    applied = sum("control first)" in d.why for d in log.core.decisions if d.kind == "challenger")
    log.send(first)  # the same signed record, copied to a later offset
    assert sum("control first)" in d.why for d in log.core.decisions if d.kind == "challenger") == applied
    assert log.letters()[-1]["reason"] == "control" and "'first'" in log.letters()[-1]["detail"]


def test_a_restarted_learner_names_a_new_challenger_as_the_one_that_never_stopped() -> None:
    """A restart does not load retired challengers, and the name of a hand challenger is the champion's
    latest time, bumped past names *in memory*: the learner that never stopped names the next challenger
    ``m~L+1``, the restarted one reuses ``m~L``, the retired model's name. Its decisions differ from a
    replay's, and the new challenger shares the retired one's registry name, which the learner treats as
    retired: it is never checkpointed, and lost at the next restart."""
    late = f"m~{T0 + 299}"
    records: list[Any] = [features(i, *STREAM[i]) for i in range(300)]
    records += [
        control("challenge", ts=T0 + 299, control_id="c1"),
        control("retire", model=late, ts=T0 + 299, control_id="c2"),
        control("challenge", ts=T0 + 299, control_id="c3"),  # at once: no record learned in between
    ]
    records += [features(i, *STREAM[i]) for i in range(300, 400)]
    never = Learner([NEVER], MemoryRegistry(signer=KEY), ROLES)
    run_log(never, records, 0, len(records))
    registry = MemoryRegistry(signer=KEY)
    first = Learner([NEVER], registry, ROLES)
    run_log(first, records, 0, 302)
    first.checkpoint()
    second = Learner([NEVER], registry, ROLES)
    second.restore()
    run_log(second, records, 302, len(records))
    assert taken(second.core.decisions) == taken(never.core.decisions)[2:]
    new = taken(second.core.decisions)[-1][1]
    saved = second.checkpoint()
    assert new in saved, f"the hand challenger {new} was not checkpointed: {saved}"


# ---------------------------------------------------------------------- promise 7 and 1: the merge time


@pytest.mark.parametrize(
    "wrapper",
    [
        {"features": 1},  # not a served prediction: no time at all, merged first
        {"features": {}, "view": "all", "prediction_id": "p", "ts": MIN_TS_MS},  # any time the writer likes
    ],
    ids=["features-key", "prediction-fields"],
)
def test_an_unsigned_field_of_the_record_cannot_move_a_signed_control(wrapper: dict[str, Any]) -> None:
    """Only ``control`` is signed. Extra fields of the record make ``event_time`` read it as a served
    prediction (another time, chosen by whoever copied the record), while the router still applies it as
    the control: anyone who can write the topic can take an operator's control scheduled ``--at`` a later
    stream time and have it applied now, at a record of their choosing."""
    signed = control("challenge", ts=T0 + 50, control_id="sched")
    copied = {**signed, **wrapper}
    log = Log()
    log.stream(0, 10)
    log.send(copied)
    applied = any("control sched" in d.why for d in log.core.decisions)
    assert not applied or event_time(copied) == event_time(signed) == T0 + 50


def test_a_control_refused_for_its_form_has_no_merge_time_like_a_refused_features_record() -> None:
    """A control whose signature is not even base64 is refused whatever the keyring (as a features record
    without an event id is refused whatever the models): it should have no time. It has its control's,
    which enters its partition's clock: at the head of a partition (the clock starts empty at every
    start) a year-1 time makes the next good record of that partition merge at year 1, ahead of every
    earlier record of the other partitions."""
    forged = {**control("challenge", ts=MIN_TS_MS, control_id="y1"), "sig": "not base64!"}
    refused_features = {"view": "all", "features": {"a": 1}, "event": {"event_id": "", "ts": MIN_TS_MS}}
    assert event_time(refused_features) == NO_TIME
    assert control_time(forged, NO_TIME) == NO_TIME

    def order(head: Any) -> list[Any]:
        merger = Merger({"f": 0})
        for i in range(10):
            merger.add("f", 0, i, T0 + i, ("p0", i))
        merger.add("f", 1, 0, event_time(head), ("p1", "head"))
        merger.add("f", 1, 1, T0 + 5, ("p1", "good"))
        return [r.value for r in merger.ready(lambda tp: True)]

    baseline = order(refused_features)
    assert baseline.index(("p1", "good")) > baseline.index(("p0", 4))
    attacked = order(forged)
    assert attacked.index(("p1", "good")) > attacked.index(("p0", 4)), attacked


# ---------------------------------------------------------------------- promise 6: hostile challengers


def _learner_after(depth: int) -> Learner:
    """A live learner that met a challenge of a parameter nested ``depth`` deep after 40 records."""
    learner = Learner([NEVER], MemoryRegistry(signer=KEY), ROLES)
    records: list[Any] = [features(i, *STREAM[i]) for i in range(50)]
    records.insert(40, nested_challenge(depth))
    run_log(learner, records, 0, len(records))
    return learner


@pytest.mark.parametrize(("depth", "applied"), [(10, True), (14, False), (50, False), (600, False)])
def test_nesting_is_bounded_so_acceptance_never_depends_on_the_stack(depth: int, applied: bool) -> None:
    """Before, a challenger nested just under the pickling check's limit was applied, and then every
    checkpoint raised RecursionError (a crash loop: restarted, the learner met the control again); and
    whether it was applied depended on how deep the caller's stack was (the live learner and a replay call
    the router from different depths). Now a challenger is at most MAX_DEPTH levels deep, whatever the
    stack."""
    for frames in (0, 300):
        log = Log()
        log.stream(0, 5)
        deeper(frames, lambda log=log: log.send(nested_challenge(depth)))  # type: ignore[misc]
        assert (len(log.core.models) == 2) is applied, (depth, frames)
    if applied:
        learner = _learner_after(depth)
        assert len(learner.core.models) == 2
        assert learner.checkpoint()  # every model saved, the challenger with it


def test_a_challenger_path_naming_a_river_function_is_not_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps name River *classes*; any callable attribute of any river module is called with the step's
    parameters before the result is checked (a function of river.datasets.base creates directories)."""
    target = tmp_path / "made-by-a-control"
    monkeypatch.setenv("RIVER_DATA", str(target))
    with pytest.raises(ControlRefused):
        challenger_model(SPEC, [{"datasets.base.get_data_home": {}}])
    assert not target.exists(), "a refused challenger ran river.datasets.base.get_data_home()"


# ---------------------------------------------------------------------- promise 4: the CLI


class _Sent(list):  # type: ignore[type-arg]
    pass


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> _Sent:
    """The records ``rivulet models challenge`` would publish (no Kafka)."""
    records = _Sent()

    class Producer:
        def __init__(self, settings: Any) -> None:
            pass

        def send_record(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
            records.append(orjson.loads(value))
            meta = SimpleNamespace(topic=topic, partition=0, offset=len(records) - 1)
            return SimpleNamespace(get=lambda timeout: meta)

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr("streaming.ingest.producer.Producer", Producer)
    return records


def tree(params: str) -> list[str]:
    """``rivulet models challenge pm`` with a Hoeffding tree of these YAML parameters."""
    return ["challenge", "pm", "--challenger", f"[tree.HoeffdingTreeClassifier: {{{params}}}]"]


def _cli(tmp_path: Path, *args: str) -> Any:
    pair = generate()
    env = {
        "RIVULET_DATA_DIR": str(tmp_path / "data"),
        "RIVULET_SIGNING_KEY": pair.encoded,
        "RIVULET_VERIFY_KEYS": pair.public.encoded,
        "RIVULET_FEATURES_MODULE": "tests.support.feature_defs",
        "RIVULET_MODELS_MODULE": "tests.support.model_defs:BY_HAND",
    }
    return CliRunner().invoke(app, ["models", *args], env=env), pair


@pytest.mark.parametrize(
    "args",
    [
        ["challenge", "pm", "--warm", "1" + "0" * 25],  # an int orjson cannot write
        tree("grace_period: 1" + "0" * 25),
        tree("nominal_attributes: !!set {a: }"),
        tree("nominal_attributes: !!binary YQ=="),
        tree("nominal_attributes: " + "[" * 300 + "a" + "]" * 300),  # orjson writes 255 levels at most
    ],
    ids=["warm-1e25", "param-1e25", "yaml-set", "yaml-binary", "nested-300"],
)
def test_the_cli_gives_a_clean_error_not_a_traceback(tmp_path: Path, sent: _Sent, args: list[str]) -> None:
    res, _ = _cli(tmp_path, *args)
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"traceback: {type(res.exception).__name__}: {res.exception}"
    )
    assert res.exit_code == 1 and "error:" in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["challenge", "pm", "--warm", "5"],  # the spec's policy keeps no records: the learner refuses it
        tree("grace_period: .nan"),  # signed as null
        tree("nominal_attributes: [" + ", ".join(f"feature_{i:05d}" for i in range(2_000)) + "]"),  # > 16 kB
    ],
    ids=["warm-without-warm-records", "nan-signed-as-null", "over-the-size-limit"],
)
def test_the_cli_never_sends_a_control_the_learner_refuses_or_reads_otherwise(
    tmp_path: Path, sent: _Sent, args: list[str]
) -> None:
    """``_control`` says it checks the control as the learner will; these are checked, signed and sent,
    then refused by the learner (a dead letter the operator never sees), or read as another model."""
    res, pair = _cli(tmp_path, *args)
    if res.exit_code == 1 and not sent:
        return  # refused up front, with an error: what the CLI promises
    assert res.exit_code == 0, res.output
    from streaming.learning.keys import Keyring
    from tests.support.model_defs import BY_HAND

    core = Log().core
    core.specs = {"pm": BY_HAND}
    core.models = {"pm": core.new_state(BY_HAND, "pm")}
    try:
        core.apply_control(open_control(sent[0], Keyring.of(pair.public)))
    except ControlRefused as exc:
        pytest.fail(f"the CLI said 'sent'; the learner refuses it: {exc}")
    model = core.models[core.decisions[-1].model].model
    assert model.grace_period is not None, "checked with grace_period NaN, signed and applied as None"


def test_sign_control_refuses_what_the_learner_refuses_for_its_size() -> None:
    big = [{"tree.HoeffdingTreeClassifier": {"nominal_attributes": [f"f{i:06d}" for i in range(2_000)]}}]
    with pytest.raises(ControlRefused, match="at most"):
        open_control(sign_control(KEY, "challenge", "m", challenger=big), RING)  # the learner's refusal
    with pytest.raises(ControlRefused):  # so the signer refuses it: "a control the learner would refuse is
        sign_control(KEY, "challenge", "m", challenger=big)  # never sent"
    assert MAX_CONTROL_BYTES == 16_384


# ---------------------------------------------------------------------- guarantees that hold (pinned)


def test_entry_points_never_raise_on_hostile_records() -> None:
    good = control("challenge", control_id="g")
    hostile: list[Any] = [
        None,
        [good],
        {"control": None},
        {"control": good["control"], "key_id": KEY.key_id, "sig": "é" * 88},
        {"control": good["control"], "key_id": KEY.key_id, "sig": base64.b64encode(b"x" * 65).decode()},
        {"control": "\ud800", "key_id": KEY.key_id, "sig": good["sig"]},
        {"control": "[" * 5_000, "key_id": KEY.key_id, "sig": good["sig"]},
        {"control": good["control"], "key_id": ["k"], "sig": good["sig"]},
        {"control": good["control"], "key_id": KEY.key_id, "sig": "x", "view": ["unhashable"]},
        signed_text('{"action":"promote","spec":"m","model":"m~1","id":"p","ts":1,"warm":0}'),
        signed_text('{"action":"challenge","spec":"m","id":"s","ts":1,"challenger":[{}]}'),
        signed_text('{"action":"challenge","spec":"m","id":"e","ts":1,"challenger":[{"..os.system":{}}]}'),
        signed_text('{"action":"challenge","spec":"m","id":"l","ts":1,"challenger":[7]}'),
        signed_text('{"action":"challenge","spec":"m","id":"x","ts":1,"challenger":[{"a.B":[1]}]}'),
        signed_text('{"action":"challenge","spec":"m","id":"d","ts":1,"challenger":"' + "x" * 15_000 + '"}'),
        signed_text('{"action":"challenge","spec":"m","id":"big","ts":1' + "0" * 30 + "}"),
    ]
    log = Log()
    log.stream(0, 10)
    for offset, h in enumerate(hostile, 10):
        event_time(h)
        if isinstance(h, dict):
            control_time(h, 0)
        with pytest.raises(ControlRefused):
            log.core.apply_control(open_control(h, RING))
        log.router.process(Positioned(event_time(h), 0, 0, offset, "f", h, None))
    assert set(log.core.models) == {"m"} and not log.core.decisions
    assert {d.reason for d in log.sink.letters} == {"control", "undecodable"}
    log.offset = 10 + len(hostile)
    log.stream(10, 10)
    assert log.core.models["m"].n_learned == 20


def test_the_live_learner_and_a_replay_take_the_same_decisions_with_copies() -> None:
    records: list[Any] = [features(i, *STREAM[i]) for i in range(900)]
    challenge = control("challenge", ts=T0 + 299, control_id="c", warm=50)
    records.insert(300, challenge)
    records.insert(320, challenge)  # a copy
    records.insert(600, control("promote", model=f"m~{T0 + 299}", ts=T0 + 598, control_id="p"))
    records.insert(601, sign_control(generate(), "retire", "m", model=f"m~{T0 + 299}"))  # a foreign key
    live = Learner([NEVER], MemoryRegistry(signer=KEY), ROLES)
    run_log(live, records, 0, len(records))
    replay = Replay([NEVER], keyring=RING)
    for offset, value in enumerate(records):
        replay.feed(Positioned(event_time(value), 0, 0, offset, "f", value, orjson.dumps(value)), FEATURES)
    assert taken(live.core.decisions)[:2] == [
        ("challenger", f"m~{T0 + 299}", ("f", 0, 300)),
        ("promotion", f"m~{T0 + 299}", ("f", 0, 600)),
    ]
    assert taken(replay.core.decisions) == taken(live.core.decisions)
    assert live.sink.counts == replay.dead_letters.counts


def test_a_signature_of_the_bare_control_or_by_another_key_id_is_refused() -> None:
    good = control("challenge", control_id="dom")
    bare = {**good, "sig": base64.b64encode(KEY.sign(good["control"].encode())).decode()}  # no domain
    other = generate()
    ring = RING.with_key(other.public)
    swapped = {**good, "key_id": other.key_id}  # a key the learner holds, not the one that signed
    for record, why in ((bare, "does not match"), (swapped, "does not match")):
        with pytest.raises(ControlRefused, match=why):
            open_control(record, ring)
    router = Router(Log().core, ROLES, keyring=ring)
    router.process(Positioned(0, 0, 0, 0, "f", swapped, None))
    assert set(router.core.models) == {"m"}


@pytest.mark.parametrize(
    "path", ["..os.system", "os.system", ".os.system", "__builtins__.eval", "base.Estimator"]
)
def test_paths_outside_river_estimators_are_refused(path: str) -> None:
    before = set(sys.modules)
    with pytest.raises(ControlRefused):
        challenger_model(SPEC, [{path: {}}])
    assert not {m for m in set(sys.modules) - before if not m.startswith("river")}
