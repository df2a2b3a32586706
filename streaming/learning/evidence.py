"""Paired evidence between two models that predict on and learn the same records, and the test that decides
a promotion or a rollback on it (issue 14). Pure: the learner core feeds it, the registry records what it
decides.

**Paired losses.** For every record both models predicted on before learning its label, the difference of
their losses ``d = loss(incumbent) - loss(candidate)``, in ``[-1, 1]``: the 0/1 errors for a classifier, and
the sign of the difference of the absolute errors for a regressor (a paired sign test: bounded whatever the
errors' scale, so one huge error cannot decide). The candidate is better by more than the policy's
``margin`` when the mean of ``d`` is above it.

**An anytime-valid test.** The learner looks at the evidence after every record, so a fixed-sample test (a
t-test at each look) would promote a model that is no better far more often than its level says. Here
``S_n = sum(d_i - margin)`` is a sum of increments in an interval of width 2, each 1-sub-Gaussian
(Hoeffding's lemma); while the candidate is no better than the margin (``E[d_i - margin | past] <= 0``) the
normal-mixture process ``M_n = sqrt(rho / (n + rho)) * exp(S_n**2 / (2 * (n + rho)))`` is a nonnegative
supermartingale, so by Ville's inequality it ever reaches ``1 / alpha`` with probability at most ``alpha``
(Robbins 1970; Howard, Ramdas, McAuliffe and Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic
confidence sequences", the normal mixture boundary). The test decides once ``n >= min_labelled`` and
``S_n >= sqrt((n + rho) * log((n + rho) / (rho * alpha**2)))``, the same event as ``M_n >= 1 / alpha`` with
``S_n > 0``: whenever it is looked at, a candidate no better than the margin is promoted with probability at
most ``alpha = 1 - confidence``. ``rho`` makes the boundary tightest near ``horizon`` paired records. The
p-value reported, ``min(1, 1 / M_n)`` (1 while ``S_n <= 0``), is valid at any stopping time.

>>> policy = PromotionPolicy(min_labelled=100, confidence=0.99)
>>> ev = Evidence()
>>> for i in range(400):  # the candidate right on 3 records in 4 the incumbent got wrong, never worse
...     ev.add(1.0 if i % 4 else 0.0, 0.0)
>>> ev.n, round(ev.mean, 2), ev.decided(policy)
(400, 0.75, True)
>>> even = Evidence()
>>> for i in range(400):
...     even.add(float(i % 2), float((i + 1) % 2))  # as often right as the other
>>> even.decided(policy), even.summary(policy)["p_value"]
(False, 1.0)
"""

from __future__ import annotations

import copyreg
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, SupportsIndex

import cython

__all__ = ["MAX_WARM", "Decision", "Evidence", "PromotionPolicy", "decision_record", "paired_loss"]

MAX_WARM = 100_000  # records a champion keeps for warm-started challengers, at most


@dataclass(frozen=True)
class PromotionPolicy:
    """When a challenger replaces the champion, and when a promotion is undone.

    ``min_labelled``: paired records before any decision; ``margin``: how much better (in mean paired loss:
    accuracy points for a classifier, net share of records with the smaller error for a regressor) the
    candidate must be; ``confidence``: ``1 - alpha`` of the test (module docstring); ``horizon``: the paired
    records the boundary is tuned for; ``probation``: paired records the former champion keeps running as
    a shadow of the new one after a promotion (the same test, roles swapped, rolls the promotion back);
    ``challenger``: the model a challenger starts as (another model class, or the same one otherwise
    configured), fresh; by default the spec's own; ``every_records``, ``every_ms``: start one on a schedule
    too (every N records the champion learns, or T ms of event time), as a batch system retrains
    periodically, beside those the champion's drifts start; ``warm_records`` (or ``warm_ms``): a
    challenger first learns the last N records the champion learned (or those of the last T ms of event
    time, at most :data:`MAX_WARM`; their features and labels, in order; kept with the champion's
    checkpoint, so a restart starts the same challenger), then predicts and is compared from the next
    record on; ``keep_retired``: the retired challengers whose versions stay in the registry (the newest;
    the learner deletes older ones, their decisions stay)."""

    min_labelled: int = 500
    margin: float = 0.0
    confidence: float = 0.99
    horizon: int = 2_000
    probation: int = 2_000
    # what a challenger is: a factory of River models of the spec's task (None: the spec's own model, fresh)
    challenger: Callable[[], Any] | None = None
    # challengers on a schedule too: every N records the champion learns, or every T ms of event time
    every_records: int | None = None
    every_ms: int | None = None
    # a challenger retrained rather than fresh: it learns the champion's last N labelled records first, or
    # those of the last T ms of event time (at most MAX_WARM of them)
    warm_records: int | None = None
    warm_ms: int | None = None
    # the retired challengers of the spec whose versions the registry keeps (the newest; older ones are
    # deleted after a checkpoint, their decisions kept): one retires per drift or schedule
    keep_retired: int = 10

    def check(self) -> str | None:
        """Why the policy cannot work (None: it can)."""
        if type(self.min_labelled) is not int or self.min_labelled < 1:
            return "promotion.min_labelled is a count (1 or more)"
        if type(self.horizon) is not int or self.horizon < 1:
            return "promotion.horizon is a count (1 or more)"
        if type(self.probation) is not int or self.probation < 0:
            return "promotion.probation is a count (0 or more)"
        if not isinstance(self.margin, int | float) or not 0.0 <= self.margin < 1.0:
            return "promotion.margin is a number in [0, 1)"
        if not isinstance(self.confidence, int | float) or not 0.5 <= self.confidence < 1.0:
            return "promotion.confidence is a number in [0.5, 1)"
        if type(self.keep_retired) is not int or self.keep_retired < 0:
            return "promotion.keep_retired is a count (0 or more)"
        for name in ("every_records", "every_ms", "warm_records", "warm_ms"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                return f"promotion.{name} is a count (1 or more) or null"
        if self.warm_records is not None and self.warm_records > MAX_WARM:
            return f"promotion.warm_records is at most {MAX_WARM:,} (they are kept with the champion)"
        return None

    @property
    def warm(self) -> int:
        """The records a champion keeps for warm starts (0: none)."""
        if self.warm_records:
            return min(self.warm_records, MAX_WARM)
        return MAX_WARM if self.warm_ms else 0

    @cached_property
    def alpha(self) -> float:
        return 1.0 - float(self.confidence)

    @cached_property
    def rho(self) -> float:
        """The mixture's precision, tuned so the boundary is tightest near ``horizon`` records (Howard et
        al. 2021, the choice of rho for a target intrinsic time)."""
        a = 2.0 * math.log(1.0 / self.alpha)
        return self.horizon / (a + math.log(1.0 + a))

    def bound(self, n: int) -> float:
        """The value ``S_n`` must reach after ``n`` paired records."""
        rho = self.rho
        return math.sqrt((n + rho) * math.log((n + rho) / (rho * self.alpha**2)))


def paired_loss(task: str, y: Any, incumbent: Any, candidate: Any) -> tuple[float, float]:
    """The two models' losses on one record, as the test compares them (module docstring): 0/1 errors for a
    classifier; for a regressor 1.0 to the one with the larger absolute error, 0.5 each on a tie (a model
    without a prediction yet has the larger error).

    >>> paired_loss("binary", True, False, True), paired_loss("regression", 10.0, 7.0, 12.0)
    ((1.0, 0.0), (1.0, 0.0))
    """
    if task != "regression":
        return (0.0 if incumbent == y else 1.0), (0.0 if candidate == y else 1.0)
    a = abs(y - incumbent) if incumbent is not None else math.inf
    b = abs(y - candidate) if candidate is not None else math.inf
    if a == b:
        return 0.5, 0.5
    return (1.0, 0.0) if a > b else (0.0, 1.0)


@cython.cclass
class Evidence:
    """The paired losses of a candidate against an incumbent since the candidate started (picklable: it is
    checkpointed with the candidate's state). ``first`` and ``last``: the source positions of the first and
    latest paired records. A C type where this module is compiled (``evidence.pxd``: the core adds to it on
    every paired record); it pickles as the dataclass it was, to the same bytes."""

    n: int
    incumbent_loss: float
    candidate_loss: float
    first: Any
    last: Any
    since: dict[str, Any]  # what the evidence is of (the incumbent's name...)

    def __init__(
        self,
        n: int = 0,
        incumbent_loss: float = 0.0,
        candidate_loss: float = 0.0,
        first: Any = None,
        last: Any = None,
        since: dict[str, Any] | None = None,
    ) -> None:
        self.n, self.incumbent_loss, self.candidate_loss = n, incumbent_loss, candidate_loss
        self.first, self.last = first, last
        self.since = {} if since is None else since

    def _fields(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "incumbent_loss": self.incumbent_loss,
            "candidate_loss": self.candidate_loss,
            "first": self.first,
            "last": self.last,
            "since": self.since,
        }

    def __repr__(self) -> str:
        return f"Evidence({', '.join(f'{k}={v!r}' for k, v in self._fields().items())})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):  # as a dataclass compares: its own class only, its fields only
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        # copyreg.__newobj__ at every protocol (state._reduce, not imported: state imports this module)
        return copyreg.__newobj__, (type(self),), self.__getstate__()  # type: ignore[attr-defined]

    def __getstate__(self) -> dict[str, Any]:
        out = self._fields()
        out.update(vars(self))  # attributes no field holds, as the dataclass's __dict__ held them
        return out

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.__init__(**{k: state.pop(k) for k in _FIELDS if k in state})  # type: ignore[misc]
        for key, value in state.items():
            setattr(self, key, value)
        # what add() can have made (refused otherwise, compiled or not, when a snapshot is opened: a negative
        # count broke the bound's square root on every record, a NaN loss silenced the test for good)
        n = self.n
        if type(n) is not int or n < 0:
            raise ValueError(f"an Evidence's n is a count, not {n!r:.50}")
        for loss in (self.incumbent_loss, self.candidate_loss):
            if type(loss) not in (int, float) or not 0 <= loss <= n:
                raise ValueError(f"an Evidence's losses are numbers in [0, n={n}], not {loss!r:.50}")
        if type(self.since) is not dict:
            raise TypeError(f"an Evidence's since is a dict, not {type(self.since).__name__}")

    def add(self, incumbent: float, candidate: float, position: Any = None) -> None:
        self.n += 1
        self.incumbent_loss += incumbent
        self.candidate_loss += candidate
        if self.first is None:
            self.first = position
        self.last = position

    @property
    def mean(self) -> float:
        """The mean paired difference (incumbent's loss minus candidate's)."""
        return (self.incumbent_loss - self.candidate_loss) / self.n if self.n else 0.0

    def statistic(self, policy: PromotionPolicy) -> float:
        return self.incumbent_loss - self.candidate_loss - policy.margin * self.n

    def decided(self, policy: PromotionPolicy) -> bool:
        """Is the candidate better than the incumbent by more than the margin, at the policy's confidence?"""
        if self.n < policy.min_labelled:
            return False
        s = self.statistic(policy)
        return s > 0.0 and s >= policy.bound(self.n)

    def p_value(self, policy: PromotionPolicy) -> float:
        s = self.statistic(policy)
        if s <= 0.0:
            return 1.0
        v = self.n + policy.rho
        log_m = 0.5 * math.log(policy.rho / v) + s * s / (2.0 * v)
        return 1.0 if log_m <= 0.0 else math.exp(-log_m)

    def summary(self, policy: PromotionPolicy) -> dict[str, Any]:
        """What a decision records: n, both models' mean losses, the statistic, its bound, the p-value, the
        confidence and margin, and the positions of the first and latest paired records."""
        n = self.n
        return {
            "n": n,
            "incumbent_loss": self.incumbent_loss / n if n else None,
            "candidate_loss": self.candidate_loss / n if n else None,
            "statistic": self.statistic(policy),
            "bound": policy.bound(n),
            "p_value": self.p_value(policy),
            "confidence": policy.confidence,
            "margin": policy.margin,
            "first": self.first,
            "last": self.last,
        }


_FIELDS = ("n", "incumbent_loss", "candidate_loss", "first", "last", "since")


@dataclass(frozen=True, slots=True)
class Decision:
    """A step of a spec's champion/challenger lifecycle. ``kind``: ``challenger`` (``model`` started, ``why``
    says by what), ``promotion`` (``model`` replaced ``champion``), ``rollback`` (``model``, the former
    champion, replaced ``champion`` again during its probation) or ``retirement`` (``model`` stopped: its
    probation passed, or a newer challenger took its place); at event time ``ts``, after the record at
    ``position``; ``evidence``: :meth:`Evidence.summary` for a promotion or a rollback."""

    kind: str
    spec: str
    champion: str
    model: str
    ts: int
    position: Any = None
    why: str = ""
    evidence: dict[str, Any] | None = None


def decision_record(d: Decision) -> dict[str, Any]:
    """A decision as the registry keeps it and the API shows it (``id``: one per kind, model and time, so
    the same decision taken again after a restart replaces itself).

    >>> decision_record(Decision("promotion", "m", "m", "m~5", 9, ("t", 0, 8)))["id"]
    'promotion:m~5:9'
    """
    return {
        "id": f"{d.kind}:{d.model}:{d.ts}",
        "kind": d.kind,
        "spec": d.spec,
        "champion": d.champion,
        "model": d.model,
        "ts": d.ts,
        "position": d.position,
        "why": d.why,
        "evidence": d.evidence,
    }
