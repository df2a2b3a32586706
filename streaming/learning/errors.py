"""Errors of the ``streaming.learning`` package, and the reason codes of what the learner rejects.

The tree::

    StreamingError (streaming.errors)
    └── LearningError                  root of this package's errors
        ├── InvalidLabel               a label that does not fit a model's task (reason, detail; a ValueError)
        ├── OutOfDomain                a number outside the numeric domain (reason, detail; a ValueError)
        ├── SpecError                  spec: a model spec that cannot work (spec; a ValueError)
        ├── HeaderError                header: positions of the wrong type in a checkpoint header
        ├── SnapshotRejected           snapshot: a snapshot that failed verification (header, reason)
        ├── NoValidVersion             registry: a model with no version that verifies (name, rejected)
        ├── Fenced                     fencing: a write refused, a newer learner owns the model (model, epoch)
        └── LeaseLost                  fencing: a learner lost the lease of every spec it ran (specs, why)

(``SpecError``, ``HeaderError``, ``SnapshotRejected``, ``NoValidVersion``, ``Fenced`` and ``LeaseLost`` live
beside the code that raises them.)

A rejected record is data, not an error: the router turns these exceptions into a :class:`Rejection`
carrying a :class:`Reason`, which goes to the dead-letter topic and is counted per model.

>>> e = InvalidLabel(Reason.LABEL_CLASS, "'banana' is not one of the declared classes [0, 1]")
>>> e.reason, str(e)
(<Reason.LABEL_CLASS: 'label_class'>, "label_class: 'banana' is not one of the declared classes [0, 1]")
>>> isinstance(e, LearningError)
True
"""

from __future__ import annotations

from enum import StrEnum

from streaming.errors import StreamingError

__all__ = ["InvalidLabel", "LearningError", "OutOfDomain", "Reason"]


class Reason(StrEnum):
    """Why the learner rejected a record (its ``reason`` on the dead-letter topic and in the counters)."""

    UNDECODABLE = "undecodable"  # the bytes are not a JSON object
    MALFORMED_FEATURES = "malformed_features"  # a features record without a vector, an event id or a time
    MALFORMED_PREDICTION = "malformed_prediction"  # a served prediction without id, features dict or time
    MALFORMED_LABEL = "malformed_label"  # not a label (Label.parse refused it)
    LABEL_TYPE = "label_type"  # a label of a type the model's task cannot take
    LABEL_CLASS = "label_class"  # a class label the model's spec does not declare
    LABEL_DOMAIN = "label_domain"  # a numeric label outside the numeric domain
    VALUE_DOMAIN = "value_domain"  # a feature value outside the numeric domain (or not a scalar)
    FEATURE_TYPE = "feature_type"  # a declared feature that was a number is a string, or the other way
    MODEL_ERROR = "model_error"  # the model raised while predicting on the record (or predicted inf/NaN)
    LEARN_ERROR = "learn_error"  # the model raised in learn_one on the record: it is quarantined
    CONTROL = "control"  # a control record the learner does not apply (unsigned, unknown key, refused)
    ERROR = "error"  # anything else raised while routing the record (a defect): its models are quarantined


class LearningError(StreamingError):
    """Root of every error raised by ``streaming.learning``."""


class _Rejected(LearningError, ValueError):
    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = Reason(reason)
        self.detail = detail
        super().__init__(f"{self.reason.value}: {detail}")

    def __reduce__(self) -> tuple[type[_Rejected], tuple[str, str]]:
        return (type(self), (self.reason.value, self.detail))


class InvalidLabel(_Rejected):
    """A label that does not fit a model's task; ``reason`` is one of the ``LABEL_*`` reasons."""


class OutOfDomain(_Rejected):
    """A value outside the numeric domain (see :mod:`streaming.learning.domain`)."""
