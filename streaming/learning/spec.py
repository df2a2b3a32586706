"""Model specs: what a model is, what it reads, how it is measured and checkpointed.

A spec is declared in Python (a module with a ``MODELS`` list) and checked before anything runs: unknown
features, a pipeline that cannot be pickled (a lambda), a metric that does not fit the task each raise a
:class:`SpecError` naming the spec.

>>> from river import linear_model, metrics, preprocessing
>>> spec = ModelSpec(
...     name="churn-lr",
...     task="binary",
...     view="customer",
...     model=lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
...     metrics=(metrics.Accuracy, metrics.LogLoss),
... )
>>> spec.check({"salary", "age"})
>>> type(spec.new_model()).__name__
'Pipeline'
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from river import base, metrics

from streaming.learning.errors import LearningError
from streaming.learning.evidence import PromotionPolicy

__all__ = ["CheckpointPolicy", "DriftPolicy", "ModelSpec", "SpecError", "load_specs"]

Task = Literal["binary", "multiclass", "regression"]


class SpecError(LearningError, ValueError):
    """A model spec that cannot work; the message names the spec."""

    def __init__(self, spec: str, problem: str) -> None:
        self.spec = spec
        super().__init__(f"model spec {spec!r}: {problem}")


@dataclass(frozen=True)
class CheckpointPolicy:
    """Checkpoint every ``every_records`` learned or ``every_seconds``, and at shutdown; keep ``keep``."""

    every_records: int = 1_000
    every_seconds: float = 5.0
    keep: int = 10


@dataclass(frozen=True)
class DriftPolicy:
    """River drift detectors on the model's loss and on input features.

    ``reaction``: ``alert`` records the drift; ``challenger`` also starts a fresh model from that point, while
    fewer than ``max_challengers`` challengers of the spec exist (with a promotion policy: on the champion's
    drifts only, of its loss or a watched feature, and the worst challenger retires to make room).
    """

    detector: Callable[[], Any] | None = None  # default: drift.ADWIN()
    features: tuple[str, ...] = ()
    reaction: Literal["alert", "challenger"] = "alert"
    max_challengers: int = 3  # challengers started beside the champion, at most (later drifts only alert)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: Task
    view: str
    model: Callable[[], base.Estimator]
    metrics: Sequence[Callable[[], Any]] = ()  # metric classes (or factories), e.g. metrics.Accuracy
    features: tuple[str, ...] | None = None  # None: every feature of the view
    rolling_window: int = 1_000
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    # the class labels a classifier may learn (binary: exactly two); None: any label the task takes
    # (streaming.learning.labels.check_label says which)
    classes: tuple[Any, ...] | None = None
    # the champion/challenger lifecycle (streaming.learning.evidence): None, no challenger is ever promoted
    promotion: PromotionPolicy | None = None

    def check_label(self, label: Any) -> Any:
        """``label`` normalised for this model, or :class:`~streaming.learning.errors.InvalidLabel`.

        >>> from river import linear_model
        >>> ModelSpec("m", "binary", "v", linear_model.LogisticRegression).check_label(1)
        True
        """
        from streaming.learning.labels import check_label

        return check_label(self.task, label, self.classes)

    def new_model(self) -> base.Estimator:
        return self.model()

    def metric_factories(self) -> list[Callable[[], Any]]:
        return list(self.metrics) or [metrics.MAE if self.task == "regression" else metrics.Accuracy]

    def new_metrics(self) -> list[Any]:
        return [m() for m in self.metric_factories()]

    def check(self, known_features: Collection[str] | None = None) -> None:
        """Raise :class:`SpecError` if the spec cannot work (see the module docstring)."""
        if not self.name or "/" in self.name or ":" in self.name or "~" in self.name:
            # '~' separates a spec's name from its challengers' (<spec>~<ts>): the learner's restore, the
            # champion pointer, serving and the API tell a challenger from a spec by it
            raise SpecError(self.name, "a name needs letters or digits and no '/', ':' or '~'")
        try:
            model = self.new_model()
        except Exception as exc:
            raise SpecError(self.name, f"building the model failed: {exc}") from exc
        if not isinstance(model, base.Estimator):
            raise SpecError(self.name, f"{type(model).__name__} is not a River estimator")
        want_classifier = self.task in ("binary", "multiclass")
        if want_classifier and not isinstance(model, base.Classifier):
            raise SpecError(self.name, f"task {self.task!r} needs a classifier, got {model}")
        if self.task == "regression" and not isinstance(model, base.Regressor):
            raise SpecError(self.name, f"task 'regression' needs a regressor, got {model}")
        try:
            pickle.dumps(model)
        except Exception as exc:
            raise SpecError(
                self.name,
                f"the model cannot be pickled ({exc}); lambdas inside a pipeline "
                "cannot be checkpointed: use a named function",
            ) from exc
        for metric in self.new_metrics():
            if not metric.works_with(model):
                raise SpecError(self.name, f"metric {type(metric).__name__} does not fit task {self.task!r}")
        if known_features is not None and self.features is not None:
            unknown = sorted(set(self.features) - set(known_features))
            if unknown:
                raise SpecError(
                    self.name, f"unknown features {unknown} (view {self.view!r} has {sorted(known_features)})"
                )
        if self.rolling_window < 1:
            raise SpecError(self.name, "rolling_window must be at least 1")
        if type(self.drift.max_challengers) is not int or self.drift.max_challengers < 0:
            raise SpecError(self.name, "drift.max_challengers is a count (0 or more)")
        if self.promotion is not None:
            if not isinstance(self.promotion, PromotionPolicy):
                raise SpecError(self.name, "promotion is a PromotionPolicy")
            problem = self.promotion.check()
            if problem is not None:
                raise SpecError(self.name, problem)
            if self.promotion.challenger is not None:  # the challengers' model, checked as the spec's own
                replace(self, model=self.promotion.challenger, promotion=None).check(known_features)
        self._check_classes()
        self._check_learns_classes()

    def _check_learns_classes(self) -> None:
        """A fresh model learns each declared class, then predicts. River's binary linear models learn
        booleans only: ``LogisticRegression`` with ``classes=("approved", "refused")`` raised on the first
        good label (``int('approved')``) and was quarantined; now the spec is refused before anything runs.

        >>> from river import linear_model
        >>> ModelSpec("m", "binary", "v", linear_model.LogisticRegression, classes=("no", "yes")).check()
        ...     # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        streaming.learning.spec.SpecError: model spec 'm': the model cannot learn the declared classes ...
        """
        if not self.classes:
            return
        x = dict.fromkeys(self.features or (), 0.0)
        model: Any = self.new_model()
        try:
            for c in self.classes:
                model.learn_one(dict(x), c)
            model.predict_proba_one(dict(x))
        except Exception as exc:
            hint = (
                "; River's binary linear models learn booleans: declare classes [false, true], or none"
                if self.task == "binary"
                else ""
            )
            raise SpecError(
                self.name,
                f"the model cannot learn the declared classes {list(self.classes)} "
                f"({type(exc).__name__}: {exc}){hint}",
            ) from exc

    def _check_classes(self) -> None:
        if self.task not in ("binary", "multiclass", "regression"):
            raise SpecError(self.name, f"unknown task {self.task!r}")
        if self.classes is None:
            return
        from streaming.learning.labels import same_class

        classes = self.classes
        if self.task == "regression":
            raise SpecError(self.name, "a regression model has no classes")
        if not isinstance(classes, tuple) or not classes:
            raise SpecError(self.name, "classes must be a non-empty tuple")
        for i, c in enumerate(classes):
            if isinstance(c, float) or not isinstance(c, str | int):
                raise SpecError(self.name, f"class {c!r} is not a string, an int or a bool")
            if any(same_class(c, d) for d in classes[:i]):
                raise SpecError(self.name, f"class {c!r} is declared twice")
        if self.task == "binary" and len(classes) != 2:
            raise SpecError(self.name, f"a binary model declares exactly two classes, got {list(classes)}")
        if len({type(c) for c in classes}) > 1:
            # River keeps classes as dict keys (True and 1 are one key) and some models sort them
            # ('<' between a str and an int raises on every later prediction)
            raise SpecError(self.name, f"classes are all strings, all ints or all bools, got {list(classes)}")


def load_specs(spec: str) -> list[ModelSpec]:
    """Model specs from ``pkg.module`` (its ``MODELS`` list), ``pkg.module:ATTR``, or a YAML file."""
    if spec.endswith((".yaml", ".yml")):
        return _from_yaml(spec)
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(spec, f"cannot import {module_name!r}: {exc}") from exc
    found = getattr(module, attr or "MODELS", None)
    if found is None:
        raise SpecError(spec, f"{module_name!r} has no {attr or 'MODELS'!r}")
    specs = [found] if isinstance(found, ModelSpec) else list(found)
    if not specs or not all(isinstance(s, ModelSpec) for s in specs):
        raise SpecError(spec, "expected a ModelSpec or a list of them")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SpecError(spec, f"model names repeat: {names}")
    return specs


def _river(path: str, spec: str, kind: type = base.Estimator) -> Any:
    """``linear_model.LogisticRegression`` -> the class in ``river.linear_model``."""
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(f"river.{module}" if module else "river"), name)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise SpecError(spec, f"no River class {path!r}") from exc
    # a class of River's estimators only: any other callable of a river module (a function that writes a
    # directory, say) was called with the step's parameters before the spec was refused
    if not (isinstance(found, type) and issubclass(found, kind)):
        raise SpecError(spec, f"{path!r} is not a River {kind.__name__} class")
    return found


def _from_yaml(path: str) -> list[ModelSpec]:
    """YAML specs::

    models:
      - name: approval-lr
        task: binary
        view: customer
        features: [salary, age]          # optional: every feature of the view
        model:                           # a pipeline, step by step: River class -> parameters
          - preprocessing.StandardScaler: {}
          - linear_model.LogisticRegression: {l2: 0.001}
        metrics: [Accuracy, LogLoss]     # classes of river.metrics
        checkpoint: {every_records: 1000, every_seconds: 5, keep: 10}
        classes: [approved, refused]     # optional: the only labels the model learns
        drift: {features: [salary], reaction: alert}
        promotion: {min_labelled: 500, margin: 0.0, confidence: 0.99, horizon: 2000, probation: 2000}
    """
    import yaml

    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(path, f"cannot read: {exc}") from exc
    entries = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SpecError(path, "expected a top-level 'models' list")
    specs = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise SpecError(path, f"each entry of 'models' is a mapping, got {entry!r}")
        try:
            specs.append(_yaml_entry(entry))
        except (TypeError, ValueError, AttributeError, StopIteration) as exc:  # a malformed YAML entry
            if isinstance(exc, SpecError):
                raise
            raise SpecError(str(entry.get("name", path)), f"malformed entry: {exc!r}") from exc
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SpecError(path, f"model names repeat: {names}")
    return specs


def _yaml_entry(entry: dict[str, Any]) -> ModelSpec:
    """One entry of a YAML spec file (TypeError, ValueError... on a malformed one)."""

    name = str(entry.get("name", ""))
    return ModelSpec(
        name=name,
        task=entry.get("task", "binary"),
        view=entry.get("view", ""),
        model=_pipeline(entry.get("model"), name, "model"),
        metrics=tuple(_river(f"metrics.{m}", name, metrics.base.Metric) for m in entry.get("metrics", [])),
        features=tuple(entry["features"]) if entry.get("features") else None,
        rolling_window=int(entry.get("rolling_window", 1_000)),
        drift=DriftPolicy(
            features=tuple((entry.get("drift") or {}).get("features", ())),
            reaction=(entry.get("drift") or {}).get("reaction", "alert"),
            max_challengers=(entry.get("drift") or {}).get("max_challengers", 3),
        ),
        checkpoint=CheckpointPolicy(**(entry.get("checkpoint") or {})),
        classes=_classes(entry.get("classes"), name),
        promotion=_promotion(entry.get("promotion"), name),
    )


def _promotion(value: Any, spec: str) -> PromotionPolicy | None:
    if value is None:
        return None
    if value is True:
        return PromotionPolicy()
    if not isinstance(value, dict):
        raise SpecError(spec, f"promotion is a mapping, got {value!r}")
    options = dict(value)
    if "challenger" in options:  # steps, as ``model``
        options["challenger"] = _pipeline(options["challenger"], spec, "promotion.challenger")
    return PromotionPolicy(**options)


def _pipeline(steps: Any, spec: str, what: str) -> Any:
    """A model factory from YAML steps (River class -> parameters)."""
    import functools

    if isinstance(steps, dict | str):
        steps = [steps]
    if not isinstance(steps, list) or not steps:
        raise SpecError(
            spec, f"'{what}' must list River classes, e.g. - linear_model.LogisticRegression: {{}}"
        )
    built = []
    for step in steps:
        cls_path, params = (step, {}) if isinstance(step, str) else next(iter(step.items()))
        built.append((_river(cls_path, spec), params or {}))
    return functools.partial(_build, tuple((c, tuple(sorted(p.items()))) for c, p in built))


def _classes(value: Any, spec: str) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise SpecError(spec, f"classes must be a list, got {value!r}")
    return tuple(value)


def _build(steps: tuple[tuple[Any, tuple[tuple[str, Any], ...]], ...]) -> Any:
    model = None
    for cls, params in steps:
        step = cls(**dict(params))
        model = step if model is None else model | step
    return model
