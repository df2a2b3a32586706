"""The API on the embedded services (in-memory registry, store and log: no Kafka, no Redis), with one key
per scope, for the API tests that need neither: auth, hosts, limits, numbers, labels, the dashboard."""

from __future__ import annotations

import itertools
import socket
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from river import metrics
from river.datasets import synth

from serving.app import create_app
from serving.embedded import EmbeddedServices
from streaming.learning.core import LearnerCore, ModelState
from streaming.learning.spec import ModelSpec
from streaming.runtime.embedded import EmbeddedStack
from streaming.settings import Settings
from tests.support.feature_defs import ALL, ZIP
from tests.support.model_defs import scaled_lr
from tests.support.serving_env import SIGNER

SPEC = ModelSpec("zipm", "binary", "zip", scaled_lr, metrics=(metrics.Accuracy,))
KEYS = {"score": "score-key", "ingest": "ingest-key", "read": "read-key", "admin": "admin-key"}


def keyed(settings: Settings, **update: Any) -> Settings:
    """The test's settings with one key per scope, the test feature views and the signer's public key."""
    return settings.model_copy(
        update={
            "features_module": "tests.support.feature_defs",
            "verify_keys": [SIGNER.public.encoded],
            "scoring_api_keys": [KEYS["score"]],
            "ingest_api_keys": [KEYS["ingest"]],
            "read_api_keys": [KEYS["read"]],
            "admin_api_keys": [KEYS["admin"]],
            **update,
        }
    )


def trained(n: int = 100) -> ModelState:
    """A binary model of the ``zip`` view after ``n`` records of River's Agrawal stream."""
    core = LearnerCore([SPEC])
    for i, (x, y) in enumerate(itertools.islice(synth.Agrawal(seed=1), n)):
        vector = {"count_lifetime": x["age"], "salary_mean_10m": x["salary"], "loan_max_lifetime": x["loan"]}
        core.on_record(str(i), i, vector, label=y)
    return core.models["zipm"]


class Embedded:
    """The embedded stack's store, registry and log, and the API's services over them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = EmbeddedStack(settings, [ZIP, ALL], [SPEC], SIGNER)  # ALL takes request fields
        self.registry = self.stack.registry
        self.log = self.stack.log

    def save(self, name: str = "zipm", header: dict[str, Any] | None = None, state: Any = None) -> int:
        """A version signed with the test's key, as the learner writes one (of the ``zip`` view unless the
        header names another)."""
        return self.registry.save(
            name, state if state is not None else trained(), {"offsets": {}, "view": "zip", **(header or {})}
        )

    def app(self) -> FastAPI:
        return create_app(self.settings, EmbeddedServices(self.settings, self.stack))

    def client(self, key: str | None = None) -> TestClient:
        """A TestClient (as a trusted host), with the key of a scope (``score``...) or a literal key."""
        headers = {"X-API-Key": KEYS.get(key, key)} if key else {}
        return TestClient(self.app(), base_url="http://localhost", headers=headers)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call (the one helper every test takes ports from)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
