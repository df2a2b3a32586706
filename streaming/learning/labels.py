"""Is this label one that a model of this task can learn from? One pure check, used at ingest (API, SDK,
``rivulet produce``) and again by the learner's router, per model.

The rules, by task:

- ``binary``: a bool, the ints ``0``/``1`` or the floats ``0.0``/``1.0`` (normalised to ``False``/``True``),
  or, when the spec declares its two ``classes``, one of them (returned as declared);
- ``multiclass``: one of the declared ``classes`` when the spec declares them; otherwise a string (of at
  most 200 characters), an int (within int64) or a bool; a float is not a class (and the learner keeps a
  model to the type of its first class, and to 1,000 classes: ``LearnerCore.admits``);
- ``regression``: a number (not a bool) in the numeric domain (:mod:`streaming.learning.domain`: finite,
  ``|y| <= 1e150``, ints within int64).

A declared class matches a label of the same kind only (a bool is not the int ``1``, a string is not a
number), so ``"1"`` or ``True`` never sneak in as a third class of ``[0, 1, 2]``.

>>> check_label("binary", 1), check_label("binary", 0.0), check_label("binary", False)
(True, False, False)
>>> try:
...     check_label("binary", "banana")
... except InvalidLabel as exc:
...     print(exc.reason, "|", exc.detail)
label_type | a binary label is a bool, 0/1 or a declared class, got 'banana'
>>> check_label("binary", "yes", classes=("no", "yes"))
'yes'
>>> check_label("multiclass", "cat"), check_label("multiclass", 3)
('cat', 3)
>>> check_label("multiclass", "banana", classes=("cat", "dog"))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streaming.learning.errors.InvalidLabel: label_class: 'banana' is not one of the declared classes [...]
>>> check_label("regression", 2.5), check_label("regression", 7)
(2.5, 7)
>>> check_label("regression", 1e308)
Traceback (most recent call last):
...
streaming.learning.errors.InvalidLabel: label_domain: 1e+308 is beyond the numeric domain (|x| <= 1e+150)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from streaming.learning.domain import INT64_MAX, INT64_MIN, check_number, in_domain
from streaming.learning.errors import InvalidLabel, OutOfDomain, Reason

__all__ = ["TASKS", "LabelCheck", "check_label", "same_class", "taken_by_any"]

TASKS = ("binary", "multiclass", "regression")
MAX_CLASS_CHARS = 200  # a class name of a multiclass model without declared classes


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    if isinstance(value, int | float):
        return "number"
    return None


def same_class(a: Any, b: Any) -> bool:
    """Equal and of the same kind (bool, str or number).

    >>> same_class(1, 1.0), same_class(1, True), same_class("1", 1)
    (True, False, False)
    """
    ka = _kind(a)
    return ka is not None and ka == _kind(b) and a == b


def _declared(label: Any, classes: Sequence[Any]) -> Any:
    for c in classes:
        if same_class(label, c):
            return c
    raise InvalidLabel(Reason.LABEL_CLASS, f"{label!r} is not one of the declared classes {list(classes)}")


def check_label(task: str, label: Any, classes: Sequence[Any] | None = None) -> Any:
    """The label normalised for ``task``, or :class:`~streaming.learning.errors.InvalidLabel` with a
    reason code (``label_type``, ``label_class`` or ``label_domain``); see the module docstring."""
    if task == "regression":
        if isinstance(label, bool) or not isinstance(label, int | float):
            raise InvalidLabel(Reason.LABEL_TYPE, f"a regression label is a number, got {label!r}")
        if not in_domain(label):
            try:
                check_number(label, reason=Reason.LABEL_DOMAIN)
            except OutOfDomain as exc:
                raise InvalidLabel(Reason.LABEL_DOMAIN, exc.detail) from None
        return label
    if task == "binary":
        number = isinstance(label, int | float) and not isinstance(label, bool)
        if classes:
            if _kind(label) is None:
                raise InvalidLabel(Reason.LABEL_TYPE, f"a binary label is a scalar, got {label!r}")
            if number and label in (0, 1) and all(isinstance(c, bool) for c in classes):
                return label == 1  # declared as booleans: 0/1 are False/True as without classes
            return _declared(label, classes)
        if isinstance(label, bool):
            return label
        if number and label in (0, 1):
            return label == 1
        raise InvalidLabel(
            Reason.LABEL_TYPE, f"a binary label is a bool, 0/1 or a declared class, got {label!r}"
        )
    if task == "multiclass":
        kind = _kind(label)
        if classes:
            if kind is None:
                raise InvalidLabel(Reason.LABEL_TYPE, f"a class label is a scalar, got {label!r}")
            return _declared(label, classes)
        if kind == "str":
            if len(label) > MAX_CLASS_CHARS:
                raise InvalidLabel(
                    Reason.LABEL_CLASS,
                    f"a class name is at most {MAX_CLASS_CHARS} characters, got {len(label)}",
                )
            return label
        if kind == "bool":
            return label
        if isinstance(label, int):
            if not INT64_MIN <= label <= INT64_MAX:
                raise InvalidLabel(Reason.LABEL_DOMAIN, f"{label} is outside int64")
            return label
        raise InvalidLabel(
            Reason.LABEL_TYPE, f"a multiclass label is a string, an int or a bool, got {label!r}"
        )
    raise InvalidLabel(Reason.LABEL_TYPE, f"unknown task {task!r} (expected one of {list(TASKS)})")


class LabelCheck:
    """The label rules of one task, or of every model of a models module (a label must suit each): what
    the producer SDK and ``rivulet produce`` check labels with before they are sent.

    >>> LabelCheck.for_task("binary")(1)
    True
    >>> from river import linear_model
    >>> from streaming.learning.spec import ModelSpec
    >>> check = LabelCheck.for_specs([ModelSpec("m", "multiclass", "v", linear_model.SoftmaxRegression,
    ...                                         classes=("a", "b"))])
    >>> check("c")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streaming.learning.errors.InvalidLabel: label_class: model 'm': 'c' is not one of the declared classes ...
    """

    def __init__(self, rules: Sequence[tuple[str, str, tuple[Any, ...] | None]]) -> None:
        self.rules = tuple(rules)  # (model or "", task, classes)
        for _, task, _ in self.rules:
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r} (expected one of {list(TASKS)})")

    @classmethod
    def for_task(cls, task: str, classes: Sequence[Any] | None = None) -> LabelCheck:
        return cls([("", task, tuple(classes) if classes is not None else None)])

    @classmethod
    def for_specs(cls, specs: Sequence[Any]) -> LabelCheck:
        """Every spec's task and classes (``ModelSpec``)."""
        return cls([(s.name, s.task, s.classes) for s in specs])

    def __call__(self, label: Any) -> Any:
        """``label`` normalised by the first rule (all must accept it), or :class:`InvalidLabel`."""
        out = label
        for i, (model, task, classes) in enumerate(self.rules):
            try:
                y = check_label(task, label, classes)
            except InvalidLabel as exc:
                if not model:
                    raise
                raise InvalidLabel(exc.reason, f"model {model!r}: {exc.detail}") from None
            if i == 0:
                out = y
        return out


def taken_by_any(specs: Sequence[Any]) -> Callable[[Any], bool]:
    """Whether some spec's task (with its declared classes) takes a label: what the learner's merge asks of
    a label before it orders it by its time (a label every model refuses is released at once, so it never
    holds back the good records behind it). The rules are the specs' alone, never a model's state, so the
    live learner, the demo and replay of the same specs order the same records the same way.

    >>> from river import linear_model
    >>> from streaming.learning.spec import ModelSpec
    >>> takes = taken_by_any([ModelSpec("m", "binary", "v", linear_model.LogisticRegression)])
    >>> takes(True), takes(1), takes("banana"), taken_by_any([])("banana")
    (True, True, False, True)
    """
    rules = [(s.task, s.classes) for s in specs]
    if not rules:
        return lambda label: True

    def takes(label: Any) -> bool:
        for task, classes in rules:
            try:
                check_label(task, label, classes)
            except InvalidLabel:
                continue
            return True
        return False

    return takes
