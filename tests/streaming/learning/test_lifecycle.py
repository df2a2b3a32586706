"""The champion/challenger lifecycle of the learner core (issue 14), pure: the paired anytime-valid test
(its false-promotion rate on differences of mean zero, its power), drift recovery on River's
ConceptDriftStream against the champion left alone and an oracle trained after the drift only, no promotion
on a stationary stream with challengers started every 5,000 records, a forced bad promotion rolled back on
probation, and the spec's options (``alert`` never starts a challenger, a feature drift of the champion
does, ``max_challengers`` retires the oldest)."""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterator
from typing import Any

import pytest
from river import linear_model, preprocessing, tree
from river.datasets import synth

from streaming.learning.core import LearnerCore
from streaming.learning.evidence import Decision, Evidence, PromotionPolicy, paired_loss
from streaming.learning.spec import DriftPolicy, ModelSpec, SpecError, load_specs
from tests.support.drifting import agrawal_drift
from tests.support.learning import restored_without

pytestmark = pytest.mark.unit

P = 10_000  # the record where the concept changes


def hoeffding_tree() -> Any:
    return tree.HoeffdingTreeClassifier()


def logistic() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def spec(
    model: Any = hoeffding_tree,
    reaction: str = "challenger",
    policy: PromotionPolicy | None = None,
    **drift: Any,
) -> ModelSpec:
    return ModelSpec(
        "m",
        "binary",
        "v",
        model,
        drift=DriftPolicy(reaction=reaction, **drift),  # type: ignore[arg-type]
        promotion=policy if policy is not None else PromotionPolicy(),
    )


# ------------------------------------------------------------------ the test itself


def _crossed(policy: PromotionPolicy, diffs: Iterator[tuple[float, float]]) -> int | None:
    ev = Evidence()
    for incumbent, candidate in diffs:
        ev.add(incumbent, candidate)
        if ev.decided(policy):
            return ev.n
    return None


def test_a_candidate_no_better_is_promoted_at_most_alpha_of_the_time() -> None:
    """300 sequences of 5,000 paired records where the two models are as good (each wrong on 30% of
    records, independently), looked at after every record: at most alpha = 5% of them promote (the
    binomial's 99.9% quantile at 300 x 0.05 is 27)."""
    policy = PromotionPolicy(min_labelled=1, confidence=0.95, horizon=500)
    rng = random.Random(14)

    def even() -> Iterator[tuple[float, float]]:
        for _ in range(5_000):
            yield float(rng.random() < 0.3), float(rng.random() < 0.3)

    crossed = sum(_crossed(policy, even()) is not None for _ in range(300))
    assert crossed <= 27, crossed


def test_a_better_candidate_is_promoted_and_the_margin_holds_back_a_slightly_better_one() -> None:
    rng = random.Random(15)

    def pair(a: float, b: float, n: int) -> Iterator[tuple[float, float]]:
        for _ in range(n):
            yield float(rng.random() < a), float(rng.random() < b)

    policy = PromotionPolicy(min_labelled=200)
    at = _crossed(policy, pair(0.4, 0.1, 5_000))
    assert at is not None and at <= 400, at
    assert _crossed(PromotionPolicy(min_labelled=200, margin=0.05), pair(0.25, 0.23, 20_000)) is None


def test_the_evidence_summary_and_p_value() -> None:
    policy = PromotionPolicy(min_labelled=10)
    ev = Evidence()
    for i in range(100):
        ev.add(1.0, 0.0, ("t", 0, i))
    s = ev.summary(policy)
    assert (s["n"], s["incumbent_loss"], s["candidate_loss"], s["first"], s["last"]) == (
        100, 1.0, 0.0, ("t", 0, 0), ("t", 0, 99)
    )  # fmt: skip
    assert s["statistic"] == 100.0 and s["statistic"] >= s["bound"] and s["p_value"] < policy.alpha
    assert Evidence().summary(policy)["p_value"] == 1.0


def test_paired_losses() -> None:
    assert paired_loss("multiclass", "a", "a", "b") == (0.0, 1.0)
    assert paired_loss("regression", 1.0, None, 1.0) == (1.0, 0.0)
    assert paired_loss("regression", 1.0, 1e300, 2.0) == (1.0, 0.0)  # one huge error counts once
    assert paired_loss("regression", 1.0, 0.0, 2.0) == (0.5, 0.5)


@pytest.mark.parametrize(
    "policy",
    [
        PromotionPolicy(min_labelled=0),
        PromotionPolicy(margin=1.0),
        PromotionPolicy(margin=float("nan")),
        PromotionPolicy(confidence=1.0),
        PromotionPolicy(confidence=0.3),
        PromotionPolicy(horizon=0),
        PromotionPolicy(probation=-1),
        PromotionPolicy(min_labelled=True),
    ],
)
def test_a_policy_that_cannot_work_is_refused(policy: PromotionPolicy) -> None:
    with pytest.raises(SpecError):
        spec(policy=policy).check()


def test_the_policy_from_yaml(tmp_path: Any) -> None:
    path = tmp_path / "specs.yaml"
    path.write_text(
        "models:\n  - name: m\n    view: v\n    model: [tree.HoeffdingTreeClassifier: {}]\n"
        "    drift: {reaction: challenger, max_challengers: 2}\n"
        "    promotion: {min_labelled: 300, margin: 0.01, confidence: 0.995, probation: 1000}\n"
    )
    (m,) = load_specs(str(path))
    assert m.promotion == PromotionPolicy(min_labelled=300, margin=0.01, confidence=0.995, probation=1_000)
    m.check()
    path.write_text("models:\n  - name: m\n    view: v\n    model: [tree.HoeffdingTreeClassifier: {}]\n"
                    "    promotion: {min_labelled: 300, nope: 1}\n")  # fmt: skip
    with pytest.raises(SpecError, match="malformed"):
        load_specs(str(path))


# ------------------------------------------------------------------ the lifecycle in the core


def run(
    core: LearnerCore, stream: Any, n: int, challenge_every: int = 0
) -> tuple[dict[str, float], list[Decision]]:
    """``n`` records through ``core`` with their labels; the served model's accuracy (the champion at each
    prediction) after P, beside the champion left alone and an oracle trained on the records after P only."""
    alone, oracle = core.specs["m"].new_model(), core.specs["m"].new_model()
    hits = {"served": 0, "alone": 0, "oracle": 0}
    after = 0
    for i, (x, y) in enumerate(stream.take(n)):
        if challenge_every and i and i % challenge_every == 0:
            core.challenge("m", 1_000 * i, i)
        champion = core.champion("m")
        assert champion is not None
        served = next(p.label for p in core.on_record(f"k{i}", 1_000 * i, x, label=bool(y), position=i)
                      if p.model == champion.name)  # fmt: skip
        alone_pred = alone.predict_one(x)
        alone.learn_one(x, bool(y))
        if i >= P:
            after += 1
            hits["served"] += served == bool(y)
            hits["alone"] += alone_pred == bool(y)
            hits["oracle"] += oracle.predict_one(x) == bool(y)
            oracle.learn_one(x, bool(y))
    return {k: v / after for k, v in hits.items()} if after else {}, list(core.decisions)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_concept_change_is_followed_by_a_promotion_and_the_served_accuracy_of_an_oracle(seed: int) -> None:
    """Agrawal function 0, then 4 from record P (River's ConceptDriftStream): the champion's loss drifts, a
    challenger starts, and the evidence promotes it within 5,000 records of P; over the records after P
    the served model is within 2 points of a model trained on them alone."""
    stream = agrawal_drift(seed, P)
    core = LearnerCore([spec(max_challengers=2)])
    accuracy, decisions = run(core, stream, 20_000)
    kinds = [d.kind for d in decisions]
    assert kinds[:2] == ["challenger", "promotion"], kinds
    start, promotion = decisions[0], decisions[1]
    assert start.why == "drift:loss" and promotion.model == start.model and promotion.champion == "m"
    assert P <= promotion.position <= P + 5_000, promotion
    ev = promotion.evidence
    assert ev is not None and ev["n"] >= 500 and ev["statistic"] >= ev["bound"] and ev["p_value"] < 0.01
    assert ev["candidate_loss"] < ev["incumbent_loss"]
    assert accuracy["served"] >= accuracy["oracle"] - 0.02, accuracy
    assert "rollback" not in kinds
    # the former champion shadowed the new one on probation, then retired
    assert ("retirement", "m") in [(d.kind, d.model) for d in decisions]
    assert core.models["m"].status == "retired" and core.champion("m") is core.models[promotion.model]


def test_no_promotion_on_a_stationary_stream() -> None:
    """30,000 records of one concept (Agrawal function 4, perturbed) with a fresh challenger started every
    3,000: none is promoted (each is no better than the champion, which learned from more records).
    scripts/bench_lifecycle.py measures 50,000 records, two streams, three seeds."""
    core = LearnerCore([spec(max_challengers=2)])
    _, decisions = run(
        core, synth.Agrawal(classification_function=4, seed=7, perturbation=0.1), 30_000, 3_000
    )
    kinds = [d.kind for d in decisions]
    assert kinds.count("challenger") == 9 and "promotion" not in kinds, kinds
    assert core.champion("m") is core.models["m"]
    # at most max_challengers running; the oldest retired for each new one
    assert len(core.challengers("m")) == 2
    retired = [d.model for d in decisions if d.kind == "retirement"]
    started = [d.model for d in decisions if d.kind == "challenger"]
    assert retired == started[:7]


def test_a_bad_promotion_is_rolled_back_on_probation() -> None:
    """A challenger forced through promotion 100 records after it started, against a champion that learned
    for 5,000: the former champion, on probation, shows it worse and serves again."""
    core = LearnerCore([spec(policy=PromotionPolicy(min_labelled=200, probation=5_000))])
    stream = iter(synth.Agrawal(classification_function=2, seed=3).take(20_000))
    i = 0
    for i, (x, y) in enumerate(stream):
        if i == 5_000:
            name = core.challenge("m", i, i)
        if i == 5_100:
            forced = core.promote(name, i, i)
            assert forced.why == "by hand" and core.champion("m") is core.models[name]
            assert core.models["m"].role == "probation"
        core.on_record(f"k{i}", i, x, label=bool(y), position=i)
        if core.champion("m") is core.models["m"] and i > 5_100:
            break
    rollback = core.decisions[-1]
    assert rollback.kind == "rollback" and rollback.model == "m" and rollback.champion == name
    assert (
        rollback.evidence is not None
        and rollback.evidence["incumbent_loss"] > rollback.evidence["candidate_loss"]
    )
    assert i < 5_100 + 2_000, i
    assert core.models[name].status == "retired" and core.models["m"].role == "champion"


def test_alert_never_starts_a_challenger_and_only_the_champions_drifts_do() -> None:
    stream = agrawal_drift(1, 3_000)
    records = list(stream.take(8_000))
    alert = LearnerCore([spec(reaction="alert")])
    for i, (x, y) in enumerate(records):
        alert.on_record(f"k{i}", i, x, label=bool(y))
    assert alert.models["m"].counters["drifts"] > 0 and list(alert.decisions) == [] and len(alert.models) == 1

    # a shifted input drifts the champion's feature detector: a challenger starts; a challenger's own
    # drifts start none
    watched = LearnerCore([spec(model=logistic, features=("salary",), max_challengers=5)])
    for i in range(4_000):
        watched.on_record(f"k{i}", i, {"salary": 1.0 if i < 2_000 else 1e6, "age": 1.0}, label=i % 2 == 0)
    started = [d for d in watched.decisions if d.kind == "challenger"]
    assert started and all(d.why == "drift:feature:salary" for d in started)
    stable = LearnerCore([spec(model=logistic, features=("salary",))])
    for i in range(4_000):
        stable.on_record(f"k{i}", i, {"salary": float(i % 7), "age": 1.0}, label=i % 2 == 0)
    assert list(stable.decisions) == []


def test_a_challengers_own_drift_starts_no_other() -> None:
    core = LearnerCore([spec(model=logistic, features=("salary",), max_challengers=5)])
    name = core.challenge("m", 0)
    assert name is not None
    for i in range(4_000):  # the shift comes after both have watched the input: both detectors fire
        core.on_record(f"k{i}", i + 1, {"salary": 1.0 if i < 2_000 else 1e6}, label=i % 2 == 0)
    assert core.models[name].counters["drifts"] > 0
    started = [d for d in core.decisions if d.kind == "challenger"]
    assert (
        len(started) == 1 + core.models["m"].counters["drifts"]
    )  # the hand-started one, then the champion's


def test_the_lifecycle_survives_a_checkpoint() -> None:
    """Roles, evidence and decisions are part of each model's pickled state; a state from before the
    lifecycle (no role) is a champion, or a challenger when named ``<spec>~<ts>``."""
    core = LearnerCore([spec()])
    name = core.challenge("m", 5)
    assert name is not None
    for i in range(300):
        core.on_record(f"k{i}", i, {"a": float(i % 3)}, label=i % 3 == 0, position=i)
    restored = LearnerCore([spec()])
    restored.models = {n: pickle.loads(pickle.dumps(st)) for n, st in core.models.items()}
    ev, back = core.models[name].evidence, restored.models[name].evidence
    assert ev is not None and back is not None and back == ev and back.n == 300
    assert restored.champion("m") is restored.models["m"] and restored.challengers("m") == [
        restored.models[name]
    ]
    assert restored.models[name].decisions == core.models[name].decisions
    again = restored_without(core.models[name], "role", "evidence", "decisions")
    assert (again.role, again.evidence, again.decisions) == ("challenger", None, [])


def test_a_promotion_by_hand_is_refused_for_what_is_not_a_running_challenger() -> None:
    core = LearnerCore([spec()])
    with pytest.raises(ValueError, match="not a running challenger"):
        core.promote("m", 0)
    with pytest.raises(KeyError):
        core.promote("nope", 0)
    plain = LearnerCore([ModelSpec("p", "binary", "v", logistic)])
    assert plain.specs["p"].promotion is None
    with pytest.raises(ValueError, match="not a running challenger"):
        plain.promote("p", 0)


def test_a_challenger_of_another_model_class_from_the_policy() -> None:
    """The challenger the logistic regression's drift starts is the policy's Hoeffding tree, promoted on
    evidence; served after the change, it is within 2 points of a logistic regression trained after it."""
    stream = agrawal_drift(4, P)
    core = LearnerCore([spec(model=logistic, policy=PromotionPolicy(challenger=hoeffding_tree))])
    accuracy, decisions = run(core, stream, 20_000)
    promotion = next(d for d in decisions if d.kind == "promotion")
    assert type(core.models[promotion.model].model).__name__ == "HoeffdingTreeClassifier"
    assert type(core.models["m"].model).__name__ == "Pipeline"
    assert P <= promotion.position <= P + 5_000 and accuracy["served"] >= accuracy["oracle"] - 0.02, accuracy


def test_the_challengers_model_from_yaml(tmp_path: Any) -> None:
    path = tmp_path / "specs.yaml"
    path.write_text(
        "models:\n  - name: m\n    view: v\n"
        "    model: [preprocessing.StandardScaler: {}, linear_model.LogisticRegression: {}]\n"
        "    drift: {reaction: challenger}\n"
        "    promotion: {challenger: [tree.HoeffdingTreeClassifier: {grace_period: 50}]}\n"
    )
    (m,) = load_specs(str(path))
    m.check()
    assert m.promotion is not None and m.promotion.challenger is not None
    built = m.promotion.challenger()
    assert type(built).__name__ == "HoeffdingTreeClassifier" and built.grace_period == 50
    path.write_text(
        "models:\n  - name: m\n    view: v\n    model: [linear_model.LogisticRegression: {}]\n"
        "    promotion: {challenger: [linear_model.LinearRegression: {}]}\n"
    )
    with pytest.raises(SpecError, match="needs a classifier"):
        load_specs(str(path))[0].check()


def test_challengers_on_a_schedule() -> None:
    """Every 1,000 records the champion learns, or every 90 s of event time; a drift never needed."""
    by_count = LearnerCore(
        [spec(reaction="alert", policy=PromotionPolicy(every_records=1_000), max_challengers=9)]
    )
    by_time = LearnerCore(
        [spec(reaction="alert", policy=PromotionPolicy(every_ms=90_000), max_challengers=9)]
    )
    for i, (x, y) in enumerate(synth.Agrawal(classification_function=0, seed=2).take(3_500)):
        by_count.on_record(f"k{i}", 1_000 * i, x, label=bool(y), position=i)
        by_time.on_record(f"k{i}", 1_000 * i, x, label=bool(y), position=i)
    started = [(d.position, d.why) for d in by_count.decisions if d.kind == "challenger"]
    assert started == [(999, "schedule"), (1_999, "schedule"), (2_999, "schedule")]
    # one second a record: the first at 90 s after the champion's first record, then every 90 s
    assert [d.position for d in by_time.decisions if d.kind == "challenger"] == list(range(90, 3_500, 90))
    assert len(by_time.challengers("m")) == 9  # the oldest retired for each one past nine
    assert PromotionPolicy(every_records=0).check() and PromotionPolicy(every_ms=True).check()


def test_a_challenger_retrained_on_the_champions_last_records() -> None:
    """``warm_records``: the challenger's model is the spec's model trained on the champion's last N records
    (an oracle trained on the same slice predicts the same), its metrics and evidence start after; the
    records are kept with the champion's checkpoint, so a restored core starts the same challenger."""
    records = [(x, bool(y)) for x, y in synth.Agrawal(classification_function=2, seed=9).take(3_000)]
    core = LearnerCore([spec(reaction="alert", policy=PromotionPolicy(warm_records=1_000))])
    for i, (x, y) in enumerate(records[:2_500]):
        core.on_record(f"k{i}", i, x, label=y, position=i)
    restored = LearnerCore([spec(reaction="alert", policy=PromotionPolicy(warm_records=1_000))])
    restored.models = {n: pickle.loads(pickle.dumps(st)) for n, st in core.models.items()}
    name = core.challenge("m", 2_500, 2_499)
    assert name is not None and restored.challenge("m", 2_500, 2_499) == name
    assert core.decisions[-1].why == "by hand, warm 1000"
    oracle = hoeffding_tree()
    for x, y in records[1_500:2_500]:
        oracle.learn_one(x, y)
    warm, again = core.models[name], restored.models[name]
    probes = [x for x, _ in records[2_500:]]
    assert [warm.model.predict_proba_one(x) for x in probes] == [oracle.predict_proba_one(x) for x in probes]
    assert [again.model.predict_proba_one(x) for x in probes] == [oracle.predict_proba_one(x) for x in probes]
    assert warm.n_learned == 0 and warm.evidence is not None and warm.evidence.n == 0
    assert len(core.models["m"].recent_xy or ()) == 1_000
    assert PromotionPolicy(warm_records=10**6).check() is not None


def test_a_challenger_retrained_on_the_champions_last_event_time() -> None:
    """``warm_ms``: the records of the last T ms of event time (here 800 ms, one record a millisecond)."""
    records = [(x, bool(y)) for x, y in synth.Agrawal(classification_function=2, seed=9).take(2_600)]
    core = LearnerCore([spec(reaction="alert", policy=PromotionPolicy(warm_ms=800))])
    for i, (x, y) in enumerate(records[:2_500]):
        core.on_record(f"k{i}", i, x, label=y, position=i)
    name = core.challenge("m", 2_500, 2_499)
    assert name is not None and core.decisions[-1].why == "by hand, warm 801"  # event times 1,699 to 2,499
    oracle = hoeffding_tree()
    for x, y in records[1_699:2_500]:
        oracle.learn_one(x, y)
    probes = [x for x, _ in records[2_500:]]
    warm = core.models[name].model
    assert [warm.predict_proba_one(x) for x in probes] == [oracle.predict_proba_one(x) for x in probes]


def test_a_call_that_raised_half_way_pairs_nothing_later() -> None:
    """A record whose processing raised after a model learned (the router quarantines its models) leaves
    no paired loss behind for the next record to take."""
    core = LearnerCore([spec(model=logistic)])
    name = core.challenge("m", 0)
    assert name is not None
    core.on_record("a", 1, {"x": 1.0}, label=True)
    core._round["m"] = (True, False)  # what a call that raised after the champion learned leaves
    core.on_record("b", 3, {"x": 2.0}, label=True, only=[name])  # the challenger alone learns this one
    core._round["m"] = (True, False)
    core.on_label("nope", True, 4)  # a label for nothing
    assert core.models[name].evidence is not None and core.models[name].evidence.n == 1


def test_a_restart_does_not_load_retired_challengers() -> None:
    """Retired challengers add up (one per drift or schedule) and learn nothing more: the learner restores
    the spec's own model and the running challengers, not them (their signed header says retired)."""
    from streaming.learning.keys import generate
    from streaming.learning.registry import MemoryRegistry
    from streaming.learning.router import TopicRoles
    from streaming.runtime.learner import Learner

    the_spec = spec()
    registry = MemoryRegistry(signer=generate())
    core = LearnerCore([the_spec])
    old, new = core.challenge("m", 5), core.challenge("m", 7)
    assert old is not None and new is not None
    core._retire(core.models[old], core.models["m"], 8, None, "made room")
    for name, state in core.models.items():
        header = {"offsets": {}, "spec": "m", **({"status": "retired"} if state.status == "retired" else {})}
        registry.save(name, state, header)
    learner = Learner([the_spec], registry, TopicRoles("f", "l", "p"))
    learner.restore()
    assert set(learner.core.models) == {"m", new}
    assert (
        learner.core.champion("m") is learner.core.models["m"]
        and learner.core.challengers("m")[0].name == new
    )
