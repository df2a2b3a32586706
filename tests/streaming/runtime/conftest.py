"""Fixtures of the runtime tests: ``topics``, the learner tests' topics and signing key (a module that needs
other topics, as the feature worker's, defines its own)."""

from tests.support.learning import topics  # noqa: F401 (a fixture)
