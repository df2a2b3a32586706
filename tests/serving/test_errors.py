"""The API's error tree answers with the status codes and ``error`` codes the README's "HTTP errors" table
promises (written out here, independently of the classes), and a subclass inherits what it does not state."""

from __future__ import annotations

import pytest

from serving import errors

pytestmark = pytest.mark.unit

# the README's table (status, code), per class
PROMISED = {
    "ServingError": (500, "internal"),
    "AnonymousApi": (500, "internal"),  # refused at start, never an answer
    "BadRequest": (400, "bad_request"),
    "InvalidLabelRequest": (400, "invalid_label"),
    "Unscorable": (400, "unscorable"),
    "Unauthorized": (401, "unauthorized"),
    "Forbidden": (403, "forbidden"),
    "ModelNotFound": (404, "model_not_found"),
    "Conflict": (409, "conflict"),
    "BodyTooLarge": (413, "too_large"),
    "Unavailable": (503, "unavailable"),
    "NoModelLoaded": (503, "model_not_loaded"),
    "FeatureStoreUnavailable": (503, "feature_store_unavailable"),
    "RegistryUnavailable": (503, "registry_unavailable"),
    "KafkaUnavailable": (503, "kafka_unavailable"),
}


def test_every_error_answers_as_promised() -> None:
    assert set(errors.__all__) == set(PROMISED)
    answers = {name: (getattr(errors, name).status_code, getattr(errors, name).code) for name in PROMISED}
    assert answers == PROMISED
    for name in PROMISED:
        assert issubclass(getattr(errors, name), errors.ServingError), name


def test_a_subclass_states_or_inherits_its_answer_and_its_parents_keep_theirs() -> None:
    class Gone(errors.ServingError, status_code=410, code="gone"):
        pass

    class Stale(Gone, code="stale"):
        pass

    class Worse(Stale):
        pass

    assert (Gone.status_code, Gone.code) == (410, "gone")
    assert (Stale.status_code, Stale.code) == (410, "stale")
    assert (Worse.status_code, Worse.code) == (410, "stale")
    assert (errors.ServingError.status_code, errors.ServingError.code) == (500, "internal")
    e = Stale("it moved")
    assert (e.detail, str(e)) == ("it moved", "it moved")
