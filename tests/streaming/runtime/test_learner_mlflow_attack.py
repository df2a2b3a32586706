"""The learner against an MLflow that can never be used, on real Kafka and Redis: a tracking URI MLflow
refuses is given up at the first attempt (its versions counted as refused, not retried forever) and the
models are those of a run without MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.settings import Settings
from tests.streaming.runtime.test_learner_mlflow import learn, publish, state_summary
from tests.support.learning import registry
from tests.support.mlflow_server import tracked
from tests.support.model_defs import LR

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("what", ["file store", "unknown scheme"])
def test_a_uri_mlflow_refuses_is_given_up_and_the_models_are_unchanged(
    topics: Settings, tmp_path: Path, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory (a file store, which MLflow 3 refuses) and ``foo://`` (settings built without validation,
    as ``model_copy`` does): one failed attempt, every version written counted as refused once."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = str(tmp_path / "store") if what == "file store" else "foo://x"
    xs = publish(topics, 1_500, drift_at=10_000)
    plain = learn(topics, [LR], prefix=f"{topics.redis_prefix}plain:")
    s = tracked(topics, uri, mlflow_retry_s=0.01, mlflow_flush_s=0.5)
    worker = learn(s, [LR], prefix=f"{topics.redis_prefix}bad:")
    assert state_summary(worker.core.models["lr"], xs[:200]) == state_summary(
        plain.core.models["lr"], xs[:200]
    )
    written = len(registry(topics, f"{topics.redis_prefix}bad:").versions("lr"))
    stats = worker.mlflow_stats()
    assert stats is not None and written >= 5
    assert stats.refused == written and stats.errors == 1
    assert stats.pending == stats.missed == stats.logged == 0
