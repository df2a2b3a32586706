"""The champion/challenger lifecycle under attack (issue 14, helper attack 14b): a spec name with '~', a
restart that restored challengers in string order, a quarantined champion, a challenger that gives no
prediction on the records it would lose, a crash between two models' versions of one checkpoint, and
terminal escapes from the registry in ``rivulet models list``. Each test fails on 643af25."""

from __future__ import annotations

import itertools
import math
import pickle
import random
from typing import Any

import orjson
import pytest
from river import base, linear_model, metrics, tree
from river.datasets import synth

from streaming.cli.models import _decision
from streaming.learning.core import LearnerCore
from streaming.learning.evidence import PromotionPolicy
from streaming.learning.keys import generate
from streaming.learning.merge import Positioned
from streaming.learning.registry import MemoryRegistry
from streaming.learning.router import TopicRoles
from streaming.learning.spec import CheckpointPolicy, DriftPolicy, ModelSpec, SpecError
from streaming.runtime.learner import Learner
from tests.support.learning import restored_without

pytestmark = pytest.mark.unit

ROLES = TopicRoles("f", "l", "p")


def ht() -> Any:
    return tree.HoeffdingTreeClassifier()


def spec(
    name: str = "m", policy: PromotionPolicy | None = None, model: Any = ht, task: str = "binary"
) -> ModelSpec:
    return ModelSpec(
        name, task, "v", model, metrics=(metrics.MAE if task == "regression" else metrics.Accuracy,),
        drift=DriftPolicy(reaction="challenger", max_challengers=2),
        promotion=policy if policy is not None else PromotionPolicy(),
        checkpoint=CheckpointPolicy(every_records=1_000_000, every_seconds=3600),
    )  # fmt: skip


def records(start: int, n: int) -> list[Positioned]:
    out = []
    for i, (x, y) in enumerate(itertools.islice(synth.Agrawal(seed=5), start, start + n), start=start):
        value = {"view": "v", "entity": f"e{i % 7}", "event": {"event_id": f"ev{i}", "ts": i, "label": y}}
        out.append(Positioned(i, 1, 0, i, "f", orjson.loads(orjson.dumps({**value, "features": x}))))
    return out


def test_a_spec_name_with_the_challengers_separator_is_refused() -> None:
    with pytest.raises(SpecError, match="'~'"):
        spec("churn~v2").check()
    # a state from before the lifecycle: its role from its spec, not from a '~' in its name
    core = LearnerCore([spec()])
    old = core.models["m"]
    old.name = old.spec = "a~b"  # a spec named so before it was refused
    assert restored_without(old, "role").role == "champion"
    old.name = "a~b~5"
    assert restored_without(old, "role").role == "challenger"


def test_a_restart_restores_challengers_in_the_order_they_started() -> None:
    def retired(restart: bool) -> list[str]:
        reg = MemoryRegistry(signer=generate())
        learner = Learner([spec()], reg, ROLES)
        for at in (900, 1000):
            for rec in records(at - 100, 100):
                learner.process(rec)
            learner.core.challenge("m", at)
        if restart:
            learner.checkpoint()
            learner = Learner([spec()], reg, ROLES)
            learner.restore()
        learner.core.challenge("m", 1100)  # at max_challengers: the oldest retires
        return [n for n, st in learner.core.models.items() if st.status == "retired"]

    assert retired(False) == retired(True) == ["m~900"]
    from streaming.runtime.learner import started

    assert sorted(["m~1000", "m~900", "m~x"], key=started) == ["m~900", "m~1000", "m~x"]


class Fragile(tree.HoeffdingTreeClassifier):
    def learn_one(self, x: Any, y: Any, **kw: Any) -> None:
        self._n = getattr(self, "_n", 0) + 1
        if self._n > 50:
            raise ValueError("boom")
        super().learn_one(x, y, **kw)


def fragile() -> Any:
    return Fragile()


def test_a_quarantined_champion_is_rolled_back() -> None:
    core = LearnerCore([spec(policy=PromotionPolicy(min_labelled=100, probation=1_000, challenger=fragile))])
    for i, (x, y) in enumerate(synth.Agrawal(seed=3).take(600)):
        if i == 200:
            name = core.challenge("m", i, i)
            assert name is not None
            core.promote(name, i, i)
        core.on_record(f"k{i}", i, x, label=bool(y), position=i)
    assert core.models[name].quarantined and core.models[name].role == "retired"
    assert core.champion("m") is core.models["m"]
    rollback = core.decisions[-1]
    assert (rollback.kind, rollback.model, rollback.champion) == ("rollback", "m", name)
    assert rollback.why == "the champion was quarantined"


class HalfOracle(base.Regressor):
    """Exact on x < 0 (y = 3|x|), NaN on x >= 0."""

    def learn_one(self, x: dict, y: float) -> None:
        pass

    def predict_one(self, x: dict) -> float:
        return -3.0 * x["x"] if x["x"] < 0 else math.nan


def half() -> Any:
    return HalfOracle()


def lr() -> Any:
    return linear_model.LinearRegression()


@pytest.mark.parametrize("late", [False, True])
def test_a_challenger_without_a_prediction_on_the_records_it_would_lose_is_not_promoted(late: bool) -> None:
    core = LearnerCore(
        [spec("r", PromotionPolicy(min_labelled=200, probation=0, challenger=half), lr, "regression")]
    )
    rng = random.Random(0)
    name = None
    for i in range(4_000):
        x = {"x": rng.uniform(-1, 1)}
        y = 3.0 * abs(x["x"]) + rng.gauss(0, 0.01)
        if i == 500:
            name = core.challenge("r", i, i)
        if late:
            core.on_record(f"k{i}", i, x, position=i)
            core.on_label(f"k{i}", y, i, position=i)
        else:
            core.on_record(f"k{i}", i, x, label=y, position=i)
    challenger = core.models[name]
    assert challenger.rejected["model_error"] > 1_000
    assert core.champion("r") is core.models["r"], list(core.decisions)
    # its abstentions are in the evidence: paired on every record the champion learned since it started
    assert challenger.evidence is not None and challenger.evidence.n == 3_500
    assert challenger.abstained == {}


class Crash(Exception):
    pass


class CrashingRegistry(MemoryRegistry):
    saves: int | None = None

    def save(self, name: str, state: Any, header: dict[str, Any], *, keep: int = 10) -> int:
        if self.saves is not None:
            self.saves -= 1
            if self.saves < 0:
                raise Crash(name)
        return super().save(name, state, header, keep=keep)


def test_a_crash_between_two_models_of_a_checkpoint_leaves_the_spec_a_champion() -> None:
    the_spec = spec(policy=PromotionPolicy(min_labelled=100))
    reg = CrashingRegistry(signer=generate())
    learner = Learner([the_spec], reg, ROLES)
    for rec in records(0, 300):
        learner.process(rec)
    name = learner.core.challenge("m", 300)
    for rec in records(300, 300):
        learner.process(rec)
    learner.checkpoint()
    learner.core.promote(name, 600)
    for rec in records(600, 100):
        learner.process(rec)
    reg.saves = 1  # "m" (on probation) written, the promoted challenger not
    with pytest.raises(Crash):
        learner.checkpoint()
    reg.saves = None
    again = Learner([the_spec], reg, ROLES)
    again.restore()
    assert again.core.champion("m") is again.core.models[name]
    assert again.core.models["m"].role == "probation"
    for rec in records(600, 150):  # each model from its own offsets
        again.process(rec)
    again.checkpoint()
    assert reg.champion("m") == name
    assert [d["kind"] for d in reg.decisions("m")][-1] == "promotion"

    # the other way round: a rolled-back model's previous version, still a champion, beside the former one
    both = LearnerCore([the_spec])
    other = both.challenge("m", 1)
    assert other is not None
    both.promote(other, 2)
    stale = pickle.loads(pickle.dumps(both.models[other]))  # its version before the rollback
    both._roll_back(the_spec.promotion, both.models[other], both.models["m"], 3, None)  # type: ignore[arg-type]
    both.models[other] = stale
    assert [d.kind for d in both.reconcile()] == ["retirement"]
    assert both.champion("m") is both.models["m"] and both.models[other].role == "retired"


def test_the_cli_prints_no_terminal_escape_from_the_registry() -> None:
    line = _decision(
        {"spec": "m", "kind": "promotion", "model": "m~5\u202e", "champion": "m", "ts": 1,
         "why": "evidence\x1b[2J\x07", "evidence": {"n": 1, "p_value": "\x1b[31m"}}
    )  # fmt: skip
    assert line.isprintable() and "\x1b" not in line
    assert "\\x1b[2J" in line and "\\u202e" in line
