"""Attacks on the learner's typed per-model state (``ModelState``, ``Recent``, ``Evidence``: C types where
compiled, state.pxd / evidence.pxd), as a hostile caller: what the dataclasses they replaced allowed (weak
references, any pickle protocol, attributes no field holds, equality), and snapshots whose content is not a
state this code writes (wrong field types, missing fields, impossible counts). Each test failed on the code
before its fix, compiled (and the snapshot ones as pure Python too)."""

from __future__ import annotations

import copy
import hashlib
import pickle
import subprocess
import sys
import weakref
from collections import Counter, OrderedDict
from typing import Any
from unittest import mock

import pytest
from river import linear_model, metrics

from streaming.learning.evidence import Evidence
from streaming.learning.keys import generate
from streaming.learning.registry import MemoryRegistry
from streaming.learning.snapshot import SnapshotRejected
from streaming.learning.spec import ModelSpec
from streaming.learning.state import ModelState, Recent, new_state

pytestmark = pytest.mark.unit

SPEC = ModelSpec("m", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,))


def _recent() -> Recent:
    r = Recent()
    for key in ("a", "b", "c"):
        r.add(key, 2)
    return r


def _evidence() -> Evidence:
    return Evidence(7, 3.0, 1.5, ("t", 0, 1), ("t", 0, 9), {"champion": "m"})


# ---------------------------------------------------------------- what the dataclasses allowed


def test_the_typed_states_take_weak_references() -> None:
    """A dataclass instance takes a weak reference (a cache keyed by state, a WeakSet of models); the C
    types had no weakref slot: TypeError compiled, fine as Python."""
    st = new_state(SPEC, "m")
    for obj in (st, st.seen, _evidence()):
        ref = weakref.ref(obj)
        assert ref() is obj
    watched = weakref.WeakValueDictionary({"m": st})
    assert watched["m"] is st


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_recent_and_evidence_pickle_at_every_protocol(protocol: int) -> None:
    """Protocols 0 and 1 pickled the dataclasses (copyreg's reconstructor); the C types refused them
    ('cannot pickle'). Each comes back equal, at every protocol, compiled or not."""
    for obj in (_recent(), _evidence()):
        back = pickle.loads(pickle.dumps(obj, protocol=protocol))
        assert type(back) is type(obj) and back == obj
        assert repr(back) == repr(obj)
    assert "b" in pickle.loads(pickle.dumps(_recent(), protocol=protocol))
    assert "a" not in pickle.loads(pickle.dumps(_recent(), protocol=protocol))  # bounded: evicted


# the digests of the dataclasses' pickles at protocols 2 to 5, taken with their code (a92b984): unchanged
DATACLASS_DIGESTS = {
    2: (
        "d4111cdf7986f80f56d1e6fab9b2064058a2a31a6ca09343b519b5f90949b7f4",
        "f4c1879814428ce303015f084a015ee4549c3ea0c642abb75365f7893e2de337",
    ),
    3: (
        "20598c2da4f84fab02ac804b4eb957249f66f279b93263e3a708553774c62f25",
        "4463dc39bf43817528a467de22f6a5876eeb35a9aee1e3525a173b8fb4d30049",
    ),
    4: (
        "31ddc53d3cb5b103969f66ce6d4df6a21ae1327d72ee1dccf5fe41047f12e111",
        "e697d22af449f0146b6177a68c3fbf8db3794e4bf96dc16901ac530957010818",
    ),
    5: (
        "2b942d141074b8634f30cdddab516c8f1b3bcc235fffc311f645372ed6298e20",
        "67f6344e28a8ecef0f92ebf78fc91f351042ffb27d4d4694e19baeb4d8b3246e",
    ),
}


def test_pickles_at_protocols_2_to_5_are_the_dataclasses_bytes() -> None:
    digests = {
        p: tuple(hashlib.sha256(pickle.dumps(o, protocol=p)).hexdigest() for o in (_recent(), _evidence()))
        for p in DATACLASS_DIGESTS
    }
    assert digests == DATACLASS_DIGESTS


def test_attributes_no_field_holds_can_be_set_as_on_the_dataclasses() -> None:
    """The dataclasses had an instance dict: ``ev.note = ...`` worked, and an Evidence pickled it (its
    ``__dict__``); the C types of Recent and Evidence had none (AttributeError compiled)."""
    recent, ev = _recent(), _evidence()
    recent.note = "free"  # type: ignore[attr-defined]
    ev.note = "kept"  # type: ignore[attr-defined]
    assert recent.note == "free" and ev.note == "kept"  # type: ignore[attr-defined]
    # the dataclass's pickle of it, digest taken with its code (a92b984)
    digest = hashlib.sha256(pickle.dumps(ev, protocol=5)).hexdigest()
    assert digest == "09058d211073c14881ca6fe9b8d3bcb37765b922bf8ae4e0a17e451adda23026"
    back = pickle.loads(pickle.dumps(ev))
    assert back.note == "kept" and back == _evidence()  # the dataclass compared its fields only


def test_equality_is_the_dataclasses() -> None:
    """A dataclass compares its fields only (not attributes set besides them), instances of one class
    (a subclass's too), and returns NotImplemented to other types (``mock.ANY`` then decides); the C
    types compared extra attributes, refused subclasses, and answered False."""
    st = new_state(SPEC, "m")
    other = copy.copy(st)
    other.note = "not a field"  # type: ignore[attr-defined]
    assert other == st and st == other
    assert st == mock.ANY and _evidence() == mock.ANY and _recent() == mock.ANY
    assert st != "m" and _evidence() != 7 and _recent() != {"a"}

    class Sub(Evidence):
        pass

    assert Sub(3) == Sub(3) and Sub(3) != Sub(4)
    assert Sub(3) != Evidence(3)  # another class: not equal, as a dataclass's subclass


# ---------------------------------------------------------------- hostile snapshots


class _Crafted:
    """Pickles as a ``cls`` whose ``__setstate__`` is given ``state``: what a snapshot with this content
    holds (the state cannot be built and pickled where it is compiled: its fields are typed)."""

    def __init__(self, cls: type, state: Any) -> None:
        self.cls, self.state = cls, state

    def __reduce__(self) -> tuple[Any, ...]:
        return _new, (self.cls,), self.state


def _new(cls: type) -> Any:
    return cls.__new__(cls)  # type: ignore[call-overload]


def _fields(**changes: Any) -> dict[str, Any]:
    fields = new_state(SPEC, "m").__getstate__()
    for key, value in changes.items():
        if value is _GONE:
            del fields[key]
        else:
            fields[key] = value
    return fields


_GONE = object()
HOSTILE: dict[str, Any] = {
    "pending a str": _fields(pending="x"),
    "pending None": _fields(pending=None),
    "counters a Counter": _fields(counters=Counter(_fields()["counters"])),
    "pending an OrderedDict": _fields(pending=OrderedDict()),
    "scoring a tuple": _fields(scoring=()),
    "seen None": _fields(seen=None),
    "seen a set": _fields(seen={"a"}),
    "no name": _fields(name=_GONE),
    "no model": _fields(model=_GONE),
    "name an int": _fields(name=3),
    "no learned counter": _fields(counters={"predicted": 0}),
    "a negative count": _fields(counters={**_fields()["counters"], "learned": -1}),
    "a count a float": _fields(counters={**_fields()["counters"], "learned": 1.5}),
    "a count a str": _fields(counters={**_fields()["counters"], "learned": "9"}),
    "evidence a dict": _fields(evidence={"n": 3}),
    "evidence negative": _fields(evidence=_Crafted(Evidence, {"n": -5})),
    "evidence nan": _fields(evidence=_Crafted(Evidence, {"n": 5, "incumbent_loss": float("nan")})),
    "evidence inf": _fields(evidence=_Crafted(Evidence, {"n": 5, "candidate_loss": float("-inf")})),
    "evidence more losses than records": _fields(
        evidence=_Crafted(Evidence, {"n": 2, "incumbent_loss": 9.0})
    ),
    "evidence n a bool": _fields(evidence=_Crafted(Evidence, {"n": True})),
    "evidence since a list": _fields(evidence=_Crafted(Evidence, {"since": []})),
    "recent order a str": _fields(seen=_Crafted(Recent, {"order": "abc"})),
    "recent order unhashable": _fields(seen=_Crafted(Recent, {"order": [["a"]]})),
    "recent without order": _fields(seen=_Crafted(Recent, {})),
    "not a dict": 42,
    "a list of pairs": [("name", "m")],
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_snapshot_with_a_hostile_state_is_refused_and_an_older_version_loads(case: str) -> None:
    """A signed snapshot whose state no Rivulet writes (a str where a dict field is, a field missing, a
    negative count, evidence that cannot be): compiled, unpickling it raised a TypeError out of
    ``load_latest`` (the learner's restore, serving's load: a crash); as Python, most loaded a state that
    failed later, record after record. Now refused like any bad snapshot, and the older version loads."""
    signer = generate()
    registry = MemoryRegistry(signer=signer)
    good = new_state(SPEC, "m")
    registry.save("m", good, {"n_learned": 0})
    registry.save("m", _Crafted(ModelState, HOSTILE[case]), {"n_learned": 0})
    with pytest.raises(SnapshotRejected, match="does not load"):
        registry.load("m", 2)
    opened, refused = registry.load_latest("m")
    assert opened.header["version"] == 1
    assert pickle.dumps(opened.state) == pickle.dumps(pickle.loads(pickle.dumps(good)))  # (strings unshared)
    assert len(refused) == 1 and "version 2" in refused[0] and "does not load" in refused[0]


def test_a_hostile_evidence_or_recent_is_refused_on_its_own() -> None:
    for cls, state in [
        (Evidence, {"n": -1}),
        (Evidence, {"n": 2**70, "incumbent_loss": float("nan")}),
        (Recent, {"order": None}),
    ]:
        with pytest.raises((TypeError, ValueError)):
            pickle.loads(pickle.dumps(_Crafted(cls, state)))


def test_snapshots_the_code_writes_or_wrote_still_load() -> None:
    """The checks refuse nothing a state of this code (or an older one: fields missing that defaults
    fill) holds: huge counts, extra fields (kept, as the dataclass kept them), a dict subclass as the
    snapshot's own dict."""
    fields = _fields(counters={**_fields()["counters"], "learned": 2**80})
    fields["note"] = "an attribute no field holds"
    for key in ("early", "rejected", "status", "quarantine", "classes", "kinds", "clock", "role"):
        del fields[key]
    back = pickle.loads(pickle.dumps(_Crafted(ModelState, OrderedDict(fields))))
    assert back.n_learned == 2**80 and back.note == "an attribute no field holds"
    assert back.role == "champion" and back.early == {} and back.status == "learning"
    state = {"n": 3, "incumbent_loss": 2, "candidate_loss": 1.5, "surprise": 1}
    ev = pickle.loads(pickle.dumps(_Crafted(Evidence, state)))
    assert ev == Evidence(3, 2, 1.5) and ev.surprise == 1  # type: ignore[attr-defined]


def test_a_learner_restarting_on_a_hostile_snapshot_restores_the_version_before_and_learns_on() -> None:
    """The learner's restore (``Learner.restore``): compiled, the TypeError out of ``pickle.loads`` stopped
    the restart (every restart, while the version is the newest); as Python, it restored a ``pending``
    that was a str (the first record left waiting for its label would fail on it). Now it is refused, logged
    (``rejected``), the version before is restored, the restore writes nothing, and it learns on."""
    from streaming.learning.router import TopicRoles
    from streaming.runtime.learner import Learner
    from tests.streaming.learning.test_restart import SPEC as LR
    from tests.streaming.learning.test_restart import records

    registry = MemoryRegistry(signer=generate())
    roles = TopicRoles("f", "l", "p")
    first = Learner([LR], registry, roles)
    for rec in records(0, 300):
        first.process(rec)
    first.checkpoint()
    opened, _ = registry.load_latest("lr")
    header = {k: v for k, v in opened.header.items() if k not in ("model", "version")}
    fields = {**opened.state.__getstate__(), "pending": "not a dict"}
    assert registry.save("lr", _Crafted(ModelState, fields), header) == 2

    second = Learner([LR], registry, roles)
    second.restore()
    assert [v.version for v in registry.versions("lr")] == [2, 1]  # the restore wrote nothing
    assert len(second.rejected) == 1 and "version 2" in second.rejected[0]
    assert "does not load" in second.rejected[0] and "pending" in second.rejected[0]
    assert second.core.models["lr"].n_learned == 300
    for rec in records(300, 200):
        second.process(rec)
    second.checkpoint()
    latest, refused = registry.load_latest("lr")
    assert refused == [] and latest.header["version"] == 3 and latest.state.n_learned == 500


# ---------------------------------------------------------------- None where a typed state is read

_NONE_CALLS = {
    "loss_drifted": "drifts.loss_drifted(None, 1, 1)",
    "drifted_features": "drifts.drifted_features(None, {})",
    "reject": "core.reject(None, Reason.MODEL_ERROR, 'x')",
    "admits": "core.admits(None, 1)",
    "_abstained": "core._abstained(None, 'k', 1)",
    "_predict": "core._predict(None, {})",
    "_settle": "core._settle(None, 'k', {}, 1, 1, None, 0, None)",
    "_inputs": "core._inputs(None, {})",
    "_kind_changed": "core._kind_changed(None, {})",
    "_learn": "core._learn(None, 'k', {}, 1, 1, None, 0, None)",
    "seen set to None": "core.models['m'].seen = None; core.on_record('k', 0, {'a': 1.0}, label=True)",
    "None among the models": "core.models = {'x': None, **core.models}; core.champion('m')",
}
_NONE_SETUP = """
from river import linear_model, metrics
from streaming.learning import drifts
from streaming.learning.core import LearnerCore
from streaming.learning.errors import Reason
from streaming.learning.evidence import PromotionPolicy
from streaming.learning.spec import ModelSpec
spec = ModelSpec("m", "binary", "v", linear_model.LogisticRegression, metrics=(metrics.Accuracy,),
                 promotion=PromotionPolicy())
core = LearnerCore([spec])
for name, call in CALLS.items():
    try:
        exec(call)
    except TypeError as exc:
        print(name, "TypeError", exc, flush=True)
"""


def test_none_as_a_typed_state_raises_and_never_crashes_the_process() -> None:
    """Compiled, a typed state (or ``Recent``) read as a C struct is not checked for None: each of these
    crashed the interpreter (SIGSEGV: a learner, a replay, the API gone without a word); as Python they
    raised AttributeError. Now a TypeError, compiled or not. In a child process: a crash is its exit code,
    not this test run's."""
    code = f"CALLS = {_NONE_CALLS!r}\n{_NONE_SETUP}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stdout[-1000:], done.stderr[-1000:])
    lines = done.stdout.splitlines()
    assert [line.split(" TypeError ")[0] for line in lines] == list(_NONE_CALLS)
    assert all(line.endswith("not None") for line in lines)
