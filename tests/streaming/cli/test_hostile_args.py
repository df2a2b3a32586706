"""The ``rivulet`` command against careless or hostile arguments and settings: ``--help`` as a value, a
malformed service address, the older replay form with its options first, numbers that would drop or
reorder every row or overflow the report. Each ends in a usage error or one ``error:`` line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.streaming.cli.invoke import cli_env, run_cli

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "args",
    [
        ["replay", "file", "--", "--help"],
        ["models", "show", "--", "--help"],
        ["replay", "topic", "--start", "--help"],
    ],
)
def test_help_as_an_argument_value_is_not_a_help_request(tmp_path: Path, args: list[str]) -> None:
    result = run_cli(args, cli_env(tmp_path))
    assert result.exit_code == 1 and not isinstance(result.exception, RuntimeError), result.output
    assert result.output.count("error:") == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RIVULET_KAFKA_BOOTSTRAP", ""),
        ("RIVULET_KAFKA_BOOTSTRAP", "broker:abc"),
        ("RIVULET_REDIS_URL", "http://r/0"),
        ("RIVULET_REDIS_URL", "redis://r:bad/0"),
        ("RIVULET_REDIS_URL", "redis://r:70000/0"),
    ],
)
@pytest.mark.parametrize("command", [["topics", "list"], ["models", "list"], ["features", "status"]])
def test_a_malformed_service_address_is_a_settings_error(
    tmp_path: Path, name: str, value: str, command: list[str]
) -> None:
    result = run_cli(command, cli_env(tmp_path, **{name: value}))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert f"invalid configuration: {name}" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["replay", "--quiet", "--limit", "5", "{f}"],
        ["replay", "--", "{f}"],
        ["replay", "--model", "approval-lr", "{f}"],
    ],
)
def test_old_form_with_options_first_still_reads_the_file(tmp_path: Path, args: list[str]) -> None:
    rows = tmp_path / "missing.csv"
    result = run_cli([a.format(f=rows) for a in args], cli_env(tmp_path))
    assert "no such file" in result.output, result.output  # the file command, not a topic named so


def test_a_huge_limit_is_refused_by_the_parser(tmp_path: Path) -> None:
    result = run_cli(["replay", "dataset", "river:Phishing", "--limit", str(2**64)], cli_env(tmp_path))
    assert result.exit_code == 2, result.output


@pytest.mark.parametrize("option", [["--entities", "0"], ["--entities", "-3"], ["--step-ms", "-1"]])
def test_row_timing_that_drops_or_reorders_every_row_is_refused(tmp_path: Path, option: list[str]) -> None:
    result = run_cli(["replay", "dataset", "river:Phishing", "--quiet", *option], cli_env(tmp_path))
    assert result.exit_code == 2, result.output
