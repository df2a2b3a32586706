"""Measure the champion/challenger lifecycle of the learner core (issue 14), pure (no Kafka, no Redis: the
same core the live learner, replay and the demo run; tests/serving/test_lifecycle_serving.py runs it on
real Kafka and Redis):

1. ``drift``: a stream with a known concept change at record P (River's ``ConceptDriftStream``): Agrawal
   function 0 to 4, Sine 0 to 2, SEA variant 0 to 3, three seeds each, a Hoeffding tree champion whose loss
   drift starts a fresh challenger. Prints the records from P until the promotion, and the served model's
   accuracy over the records after P (the champion at each prediction) beside the champion left alone and
   an oracle trained on the records after P only. Goals: promotion within 5,000 records of P, served
   accuracy within 2 points of the oracle's.
2. ``stationary``: 50,000 records of one concept (Agrawal function 4 perturbed, Sine 0), three seeds, a fresh
   challenger started every 5,000 records: the promotions (goal: none), and the test's bound on them.

    .venv/bin/python scripts/bench_lifecycle.py
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from river import tree
from river.datasets import synth

from streaming.learning.core import LearnerCore, select_inputs
from streaming.learning.evidence import PromotionPolicy
from streaming.learning.spec import DriftPolicy, ModelSpec

P, N = 10_000, 25_000


def spec() -> ModelSpec:
    return ModelSpec(
        "m",
        "binary",
        "v",
        tree.HoeffdingTreeClassifier,
        drift=DriftPolicy(reaction="challenger", max_challengers=2),
        promotion=PromotionPolicy(),
    )


def drifting(name: str, seed: int) -> Any:
    before, after = {
        "agrawal 0->4": (
            synth.Agrawal(classification_function=0, seed=seed),
            synth.Agrawal(classification_function=4, seed=seed),
        ),
        "sine 0->2": (
            synth.Sine(classification_function=0, seed=seed),
            synth.Sine(classification_function=2, seed=seed),
        ),
        "sea 0->3": (synth.SEA(variant=0, seed=seed), synth.SEA(variant=3, seed=seed)),
    }[name]
    return synth.ConceptDriftStream(stream=before, drift_stream=after, position=P, width=100, seed=seed)


def stationary(name: str, seed: int) -> Any:
    if name == "agrawal 4":
        return synth.Agrawal(classification_function=4, seed=seed, perturbation=0.1)
    return synth.Sine(classification_function=0, seed=seed)


def run(stream: Any, n: int, challenge_every: int = 0) -> tuple[LearnerCore, dict[str, float]]:
    core = LearnerCore([spec()])
    alone, oracle = tree.HoeffdingTreeClassifier(), tree.HoeffdingTreeClassifier()
    hits = {"served": 0, "alone": 0, "oracle": 0}
    after = 0
    for i, (x, y) in enumerate(stream.take(n)):
        if challenge_every and i and i % challenge_every == 0:
            core.challenge("m", i, i)
        y = bool(y)
        champion = core.champion("m").name  # type: ignore[union-attr]
        served = next(
            p.label for p in core.on_record(f"k{i}", i, x, label=y, position=i) if p.model == champion
        )
        x = select_inputs(x, None)  # what the core's models take: the numbers of the vector
        guess = alone.predict_one(x)
        alone.learn_one(x, y)
        if i >= P:
            after += 1
            hits["served"] += served == y
            hits["alone"] += guess == y
            hits["oracle"] += oracle.predict_one(x) == y
            oracle.learn_one(x, y)
    return core, {k: v / after for k, v in hits.items()}


def bench_drift() -> None:
    print(f"drift: concept change at record {P:,} of {N:,}; Hoeffding tree champion, fresh challengers")
    print(f"  {'stream':<13} seed  promoted after P  served  alone   oracle  served-oracle")
    for name in ("agrawal 0->4", "sine 0->2", "sea 0->3"):
        for seed in (1, 2, 3):
            core, acc = run(drifting(name, seed), N)
            after = [d.position - P for d in core.decisions if d.kind == "promotion" and d.position >= P]
            first = f"{after[0]:,}" if after else "none"
            gap = (acc["served"] - acc["oracle"]) * 100
            print(
                f"  {name:<13} {seed:>4}  {first:>16}  {acc['served']:.4f}  {acc['alone']:.4f}  "
                f"{acc['oracle']:.4f}  {gap:+.2f} pts"
            )


def bench_stationary() -> None:
    policy = PromotionPolicy()
    print(
        "stationary: 50,000 records, a fresh challenger every 5,000 (at most 2 running), "
        f"confidence {policy.confidence}: each challenger no better is promoted with probability <= "
        f"{policy.alpha:.2f}"
    )
    for name in ("agrawal 4", "sine 0"):
        for seed in (1, 2, 3):
            t0 = time.perf_counter()
            core, _ = run(stationary(name, seed), 50_000, 5_000)
            kinds = [d.kind for d in core.decisions]
            print(
                f"  {name:<10} seed {seed}: {kinds.count('challenger')} challengers, "
                f"{kinds.count('promotion')} promotions, {kinds.count('rollback')} rollbacks "
                f"({time.perf_counter() - t0:.0f} s)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["drift", "stationary"])
    args = parser.parse_args()
    if args.only in (None, "drift"):
        bench_drift()
    if args.only in (None, "stationary"):
        bench_stationary()


if __name__ == "__main__":
    main()
