"""Running ``rivulet`` in-process for the CLI tests: an environment of its own per test (data dir, a fresh
key pair) and the app invoked through typer's runner."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from streaming.cli import app
from streaming.learning.keys import generate


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    pair = generate()
    return {
        "RIVULET_DATA_DIR": str(tmp_path / "data"),
        "RIVULET_SIGNING_KEY": pair.encoded,
        "RIVULET_VERIFY_KEYS": pair.public.encoded,
        **extra,
    }


def run_cli(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(app, args, env=env)
