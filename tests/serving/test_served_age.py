"""The API exports when the version it serves was checkpointed (issue 18: the RivuletServedModelStale alert
reads it): the verified header's ``saved_at`` of the version in use."""

from __future__ import annotations

import pytest

from streaming.settings import Settings
from tests.support.api_env import Embedded, keyed

pytestmark = pytest.mark.unit


def _saved(text: str, model: str) -> float:
    prefix = f'rivulet_serving_model_saved_timestamp_seconds{{model="{model}"}} '
    [line] = [x for x in text.splitlines() if x.startswith(prefix)]
    return float(line.removeprefix(prefix))


def test_metrics_export_the_served_versions_checkpoint_time(settings: Settings) -> None:
    emb = Embedded(keyed(settings))
    emb.save("agem", header={"saved_at": 1_000.5})
    with emb.client("read") as client:
        assert client.get("/v1/models/agem").status_code == 200
        assert _saved(client.get("/metrics").text, "agem") == 1_000.5
    emb.save("agem", header={"saved_at": 2_000.25})
    with emb.client("read") as client:  # a replica started now serves the newer version
        assert client.get("/v1/models/agem").status_code == 200
        assert _saved(client.get("/metrics").text, "agem") == 2_000.25
