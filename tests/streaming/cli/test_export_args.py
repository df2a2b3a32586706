"""``rivulet export``'s arguments, refused before anything connects (no services: a Kafka address where
nothing listens, so a command that got as far as connecting would fail differently)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.streaming.cli.invoke import cli_env, run_cli

pytestmark = pytest.mark.unit


def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(
        tmp_path,
        RIVULET_KAFKA_BOOTSTRAP="127.0.0.1:1",
        RIVULET_FEATURES_MODULE="tests.support.feature_defs",
        RIVULET_MODELS_MODULE="tests.support.model_defs:TRIO",
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--partitions", "0,x"], "bad --partitions '0,x'"),
        (["--model", "t1", "--start", "12"], "'12' is ambiguous"),
        (["--model", "t1", "--labels-end", "soon"], "bad range bound 'soon'"),
        ([], "give --model: the specs are t1, t2, t3"),
        (["--model", "nope"], "no spec 'nope'"),
    ],
)
def test_bad_arguments_are_one_error_line(tmp_path: Path, args: list[str], says: str) -> None:
    out = tmp_path / "x.parquet"
    res = run_cli(["export", "topic", "--out", str(out), *args], env(tmp_path))
    assert res.exit_code == 1, res.output
    assert says in res.output and "Traceback" not in res.output
    assert not out.exists()
