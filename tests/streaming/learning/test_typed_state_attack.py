"""Attacks on the learner's typed per-model state (``ModelState``, ``Recent``, ``Evidence``: C types where
compiled, state.pxd / evidence.pxd), as a hostile caller: what the dataclasses they replaced allowed (weak
references, any pickle protocol, attributes no field holds, equality), and snapshots whose content is not a
state this code writes (wrong field types, missing fields, impossible counts). Each test failed on the code
before its fix, compiled (and the snapshot ones as pure Python too)."""

from __future__ import annotations

import copy
import hashlib
import pickle
import weakref
from unittest import mock

import pytest
from river import linear_model, metrics

from streaming.learning.evidence import Evidence
from streaming.learning.spec import ModelSpec
from streaming.learning.state import Recent, new_state

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
