"""schemathesis against the running API's OpenAPI schema: no 5xx, and responses match the schema."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis
import uvicorn
from river import metrics
from river.datasets import synth

from serving.app import create_app
from streaming.learning.core import LearnerCore
from streaming.learning.registry import ModelRegistry
from streaming.learning.spec import ModelSpec
from streaming.settings import Settings
from streaming.topics import TopicAdmin
from tests.integration.serving_env import SIGNER, serving_settings
from tests.model_defs import scaled_lr


def test_schemathesis_all_checks(
    settings: Settings, kafka_up: str, redis_client: Any, tmp_path: Path
) -> None:
    # a body limit big enough for a too-long list to reach validation (422); 413 is tested in test_serving.py
    s = serving_settings(settings, max_request_bytes=16_000_000)
    core = LearnerCore([ModelSpec("zipm", "binary", "zip", scaled_lr, metrics=(metrics.Accuracy,))])
    for i, (x, y) in enumerate(itertools.islice(synth.Agrawal(seed=1), 200)):
        core.on_record(str(i), i, {"count_lifetime": x["age"], "salary_mean_10m": x["salary"]}, label=y)
    ModelRegistry(redis.Redis.from_url(s.redis_url), s.redis_prefix, signer=SIGNER).save(
        "zipm", core.models["zipm"], {"offsets": {}, "view": "zip"}
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with TopicAdmin(s) as admin:
        admin.create()
        server = uvicorn.Server(
            uvicorn.Config(create_app(s), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            result = subprocess.run(
                [
                    str(Path(sys.executable).parent / "schemathesis"),
                    "run",
                    f"http://127.0.0.1:{port}/openapi.json",
                    "--checks",
                    "all",
                    "--max-examples",
                    "30",
                    "--workers",
                    "1",
                    "--seed",
                    "1",
                    "--no-color",
                    "--header",
                    "X-API-Key: admin-key",  # admin routes too (401/403 are tested in test_serving.py)
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
                cwd=tmp_path,
            )
        finally:
            server.should_exit = True
            thread.join(10)
            admin.delete(s.topics.all())
    assert result.returncode == 0, result.stdout[-6000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout.lower(), result.stdout[-3000:]
