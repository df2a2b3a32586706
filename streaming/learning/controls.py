"""Hand controls of the champion/challenger lifecycle, as signed records in the features topic.

``rivulet models challenge SPEC`` (start a challenger, fresh, retrained on the champion's last records, or of
another model), ``rivulet models promote-challenger NAME`` (make a running challenger the champion now,
whatever its evidence: probation and the policy's test still judge it) and ``rivulet models retire NAME``
do not talk to the learner: they publish a *control record* to the features topic, which the learner reads
like any other record. So a control takes effect at one position of the log, in the order the learner
merges it, and everything that reads the log sees it there: the live learner after a crash (the restored
checkpoint's positions are before it or after it: it is applied exactly once), ``rivulet replay`` and
``rivulet models verify`` (the same decision at the same record).

The record::

    {"control": "<the control's JSON, as signed>", "key_id": "<16 hex digits>", "sig": "<base64>"}

The control is an object ``{"action", "spec", "model", "warm", "challenger", "id", "ts"}`` (``model``:
the challenger a promotion or retirement names; ``warm``: records to retrain a challenger on, at most those
the champion keeps; ``challenger``: the challenger's model as YAML steps, as a spec's
``promotion.challenger``; ``id``: unique; ``ts``: when it was issued, ms; the decision it takes is dated
with the stream's event time where the learner meets it, as every decision). It is signed with an Ed25519 key
(:mod:`streaming.learning.keys`) over its exact bytes, and the learner applies it only if the key is in its
keyring (``RIVULET_VERIFY_KEYS`` and its own): anyone who can write the features topic can append a record,
not steer the lifecycle. A control's ``id`` is applied once (a signed control copied to a later offset
changes nothing), and a refused one is a dead letter with its reason (``control``), like any bad record.

A control's ``ts`` is the stream time it applies at: the merge takes it as the record's event time
(:func:`control_time`), so it is applied after the records before that time and before those after it, in
the live learner and in a replay of the log alike (``rivulet models challenge --at``; by default the wall
clock, which is "now" for a stream stamped with it). A control record that cannot be a control (not the
signed form, or its control malformed) has no time: it never holds back the records behind it. The
decision it takes is dated, as every decision, with the champion's latest event time there.

>>> from streaming.learning.keys import Keyring, generate
>>> key = generate()
>>> record = sign_control(key, "challenge", "fraud", warm=500, ts=1_700_000_000_000, control_id="c1")
>>> open_control(record, Keyring.of(key.public))
Control(action='challenge', spec='fraud', model=None, warm=500, challenger=None, id='c1', ts=1700000000000)
>>> open_control(record, Keyring.of(generate().public))
Traceback (most recent call last):
...
streaming.learning.controls.ControlRefused: signed by a key not in the learner's keyring
"""

from __future__ import annotations

import base64
import binascii
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from streaming.learning.errors import LearningError
from streaming.learning.evidence import MAX_WARM
from streaming.learning.keys import SIGNATURE_BYTES, Keyring, SigningKey
from streaming.learning.merge import is_id, is_time
from streaming.learning.spec import ModelSpec, SpecError, _pipeline

__all__ = [
    "ACTIONS",
    "CONTROL_FIELD",
    "Control",
    "ControlRefused",
    "challenger_model",
    "checked_for",
    "control_time",
    "is_control",
    "open_control",
    "sign_control",
]

CONTROL_FIELD = "control"
ACTIONS = ("challenge", "promote", "retire")
MAX_CONTROL_BYTES = 16_384  # the signed control: a few steps and their parameters
MAX_DEPTH = 16  # nesting of a challenger's steps and parameters
_DOMAIN = b"rivulet-control\x00"  # a control's signature is never a valid signature of anything else


class ControlRefused(LearningError, ValueError):
    """A control record the learner does not apply (its reason is the dead letter's detail)."""


@dataclass(frozen=True, slots=True)
class Control:
    action: str
    spec: str
    model: str | None
    warm: int | None
    challenger: Any
    id: str
    ts: int


def control_time(data: dict[str, Any], fallback: int) -> int:
    """The merge time of a control record: its control's ``ts``, or ``fallback`` for a record that is not a
    well-formed control (its signature is the router's to check)."""
    try:
        return _parse(_signed_form(data)[0]).ts
    except ControlRefused:
        return fallback


def _signed_form(data: dict[str, Any]) -> tuple[bytes, str, bytes]:
    """The control's bytes, key id and signature of a record in the signed form (not yet verified)."""
    text, kid, sig = data.get(CONTROL_FIELD), data.get("key_id"), data.get("sig")
    if type(text) is not str or type(kid) is not str or type(sig) is not str:
        raise ControlRefused("a control record has a control (a string), a key_id and a sig")
    try:
        raw = text.encode()
    except UnicodeEncodeError:  # a lone surrogate: no signature covers it
        raise ControlRefused("the control is not UTF-8") from None
    if len(raw) > MAX_CONTROL_BYTES:
        raise ControlRefused(f"a control is at most {MAX_CONTROL_BYTES} bytes")
    if len(kid) != 16 or any(c not in "0123456789abcdef" for c in kid):
        raise ControlRefused("key_id is a key id (16 hex digits)")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise ControlRefused("the signature is not base64") from None
    if len(signature) != SIGNATURE_BYTES:
        raise ControlRefused(f"the signature is not {SIGNATURE_BYTES} bytes")
    return raw, kid, signature


def is_control(data: Any) -> bool:
    """A record of the features topic that is a control rather than a features record (the merge reads its
    time by the same rule: :func:`~streaming.learning.merge.event_time`)."""
    return isinstance(data, dict) and CONTROL_FIELD in data and "event" not in data


def sign_control(
    key: SigningKey,
    action: str,
    spec: str,
    *,
    model: str | None = None,
    warm: int | None = None,
    challenger: Any = None,
    ts: int | None = None,
    control_id: str | None = None,
) -> dict[str, Any]:
    """The record that asks the learner for ``action`` on ``spec`` (checked as the learner will)."""
    body = {
        "action": action,
        "spec": spec,
        "model": model,
        "warm": warm,
        "challenger": challenger,
        "id": control_id or uuid.uuid4().hex,
        "ts": int(time.time() * 1000) if ts is None else ts,
    }
    plain(challenger, "challenger")  # what JSON carries as it is: no NaN, no sets, no 100-digit ints
    try:
        text = orjson.dumps(body)
    except TypeError as exc:  # orjson.JSONEncodeError too
        raise ControlRefused(f"the control cannot be written as JSON: {exc}") from None
    _parse(text)  # a control the learner would refuse is never sent
    return {
        CONTROL_FIELD: text.decode(),
        "key_id": key.key_id,
        "sig": base64.b64encode(key.sign(_DOMAIN + text)).decode(),
    }


def open_control(data: Any, keyring: Keyring | None) -> Control:
    """The control of a record, once its signature checks out against ``keyring``; ControlRefused says
    why not."""
    if not isinstance(data, dict):
        raise ControlRefused("not a control record")
    raw, kid, signature = _signed_form(data)
    if keyring is None or not len(keyring):
        raise ControlRefused("the learner has no keys to verify controls with")
    key = keyring.get(kid)
    if key is None:
        raise ControlRefused("signed by a key not in the learner's keyring")
    if not key.verify(signature, _DOMAIN + raw):
        raise ControlRefused("the signature does not match the control")
    return _parse(raw)


def checked_for(spec: ModelSpec, ctl: Control) -> Callable[[], Any] | None:
    """What the learner checks of a verified control against its spec (the CLI checks the same before it
    sends one); the model factory of a challenge's challenger (None: the policy's, or the spec's own)."""
    policy = spec.promotion
    if policy is None:
        raise ControlRefused(f"no spec {spec.name!r} with a promotion policy in this learner")
    if ctl.action != "challenge":
        return None
    if ctl.warm and not (policy.warm_records or policy.warm_ms):
        raise ControlRefused("warm: the spec's policy keeps no records to retrain on (warm_records)")
    return challenger_model(spec, ctl.challenger)


def challenger_model(spec: ModelSpec, steps: Any) -> Callable[[], Any] | None:
    """The model factory of a challenge's ``challenger`` steps (None: none given), checked as the spec's
    own model would be (a model of its task, picklable, taking its classes)."""
    if steps is None:
        return None
    try:
        model = _pipeline(steps, spec.name, "challenger")
        replace(spec, model=model, promotion=None).check()
    except SpecError as exc:
        raise ControlRefused(f"challenger: {exc}") from None
    except Exception as exc:  # a parameter River refuses in a way nobody foresaw
        raise ControlRefused(f"challenger: {type(exc).__name__}: {exc}"[:500]) from None
    return model


def plain(value: Any, what: str, depth: int = 0) -> None:
    """ControlRefused unless ``value`` is plain JSON within bounds: at most :data:`MAX_DEPTH` levels deep
    (deeper, pickling the model's state at a checkpoint raised RecursionError, and whether the check passed
    depended on the caller's stack), finite numbers, ints within 32 bits, short strings."""
    if depth > MAX_DEPTH:
        raise ControlRefused(f"{what} is nested more than {MAX_DEPTH} levels deep")
    if value is None or type(value) is bool:
        return
    if type(value) is int:
        if not -(2**31) <= value < 2**31:
            raise ControlRefused(f"{what}: {value} is not a 32-bit int")
    elif type(value) is float:
        if not math.isfinite(value):
            raise ControlRefused(f"{what}: {value} is not a finite number")
    elif type(value) is str:
        if len(value) > 200:
            raise ControlRefused(f"{what}: a string of {len(value)} characters (at most 200)")
    elif type(value) is list:
        for item in value:
            plain(item, what, depth + 1)
    elif type(value) is dict:
        for k, item in value.items():
            if type(k) is not str:
                raise ControlRefused(f"{what}: a key that is not a string ({type(k).__name__})")
            plain(item, what, depth + 1)
    else:
        raise ControlRefused(f"{what}: a {type(value).__name__} is not JSON")


def _parse(raw: bytes) -> Control:
    if len(raw) > MAX_CONTROL_BYTES:
        raise ControlRefused(f"a control is at most {MAX_CONTROL_BYTES} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ControlRefused("the control is not JSON") from None
    if not isinstance(body, dict):
        raise ControlRefused("the control is not a JSON object")
    action, spec, model = body.get("action"), body.get("spec"), body.get("model")
    warm, cid, ts = body.get("warm"), body.get("id"), body.get("ts")
    if action not in ACTIONS:
        raise ControlRefused(f"action is one of {', '.join(ACTIONS)}")
    if not is_id(spec) or "~" in spec:
        raise ControlRefused("spec is a spec's name")
    if not is_id(cid):
        raise ControlRefused("id is a string of 1-200 characters")
    if not is_time(ts):
        raise ControlRefused("ts is a time in ms (an int)")
    if action == "challenge":
        if model is not None:
            raise ControlRefused("a challenge names no model (its challenger is named <spec>~<ts>)")
        if warm is not None and (type(warm) is not int or not 0 <= warm <= MAX_WARM):
            raise ControlRefused(f"warm is a count of records (0 to {MAX_WARM:,})")
        plain(body.get("challenger"), "challenger")
    else:
        if not is_id(model) or model.partition("~")[0] != spec or "~" not in model:
            raise ControlRefused(f"{action} names one of the spec's challengers: model is <spec>~<ts>")
        if warm is not None or body.get("challenger") is not None:
            raise ControlRefused(f"warm and challenger are for a challenge, not a {action}")
    return Control(action, spec, model, warm, body.get("challenger"), cid, ts)
