"""schemathesis against the running API's OpenAPI schema, on the real stack (Redis, Kafka): no 5xx, and
responses match the schema. Keys are configured for every scope, and each scope's routes are run with that
scope's key (schemathesis also checks that each keyed route refuses a request without it); the public
routes run without a key."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from river import metrics
from river.datasets import synth

from serving.app import create_app
from streaming import clients
from streaming.ingest.topics import TopicAdmin
from streaming.learning.core import LearnerCore
from streaming.learning.registry import RedisRegistry
from streaming.learning.spec import ModelSpec
from streaming.settings import Settings
from tests.serving.running import running
from tests.support.api_env import KEYS
from tests.support.model_defs import scaled_lr
from tests.support.serving_env import SIGNER, serving_settings

pytestmark = pytest.mark.integration


def test_schemathesis_all_checks(
    settings: Settings, kafka_up: str, redis_client: Any, tmp_path: Path
) -> None:
    # a body limit big enough for a too-long list to reach validation (422); 413 is tested in test_serving.py
    s = serving_settings(
        settings,
        max_request_bytes=16_000_000,
        scoring_api_keys=[KEYS["score"]],
        ingest_api_keys=[KEYS["ingest"]],
        read_api_keys=[KEYS["read"]],
        admin_api_keys=[KEYS["admin"]],
    )
    core = LearnerCore([ModelSpec("zipm", "binary", "zip", scaled_lr, metrics=(metrics.Accuracy,))])
    for i, (x, y) in enumerate(itertools.islice(synth.Agrawal(seed=1), 200)):
        core.on_record(str(i), i, {"count_lifetime": x["age"], "salary_mean_10m": x["salary"]}, label=y)
    RedisRegistry(clients.redis_client(s), s.redis_prefix, signer=SIGNER).save(
        "zipm", core.models["zipm"], {"offsets": {}, "view": "zip"}
    )
    with TopicAdmin(s) as admin:
        admin.create()
        try:
            with running(create_app(s)) as url:
                schema = tmp_path / "openapi.json"
                with urllib.request.urlopen(
                    urllib.request.Request(f"{url}/openapi.json", headers={"X-API-Key": KEYS["read"]})
                ) as got:
                    schema.write_bytes(got.read())
                tags = {
                    t
                    for ops in json.loads(schema.read_text())["paths"].values()
                    for o in ops.values()
                    for t in o["tags"]
                }
                assert tags == {"score", "ingest", "read", "admin", "ops"}, tags
                results = {t: _schemathesis(schema, url, t, KEYS.get(t), tmp_path) for t in sorted(tags)}
        finally:
            admin.delete(s.topics.all())
    for tag, result in results.items():
        assert result.returncode == 0, f"{tag}:\n{result.stdout[-12000:]}"
        assert "No issues found" in result.stdout or "passed" in result.stdout.lower(), result.stdout[-3000:]


def _schemathesis(
    schema: Path, url: str, tag: str, key: str | None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """schemathesis over the operations tagged ``tag``, with ``key`` (none for the public ones)."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        str(schema),
        "--url",
        url,
        "--include-tag",
        tag,
        "--checks",
        "all",
        "--max-examples",
        "30",
        "--workers",
        "1",
        "--seed",
        "1",
        "--no-color",
    ]
    if key is not None:
        command += ["--header", f"X-API-Key: {key}"]
    # a schema-valid body may be refused by design, which positive_data_acceptance would report: a label no
    # served model can take, an event the SDK's rules refuse, a stored vector beyond the learner's domain (400
    # naming the item), an integer literal beyond int64 where the schema allows any number (422)
    command += ["--exclude-checks", "positive_data_acceptance"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=cwd)
