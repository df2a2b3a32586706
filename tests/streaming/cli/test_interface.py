"""The command line's shape: the settings are read once, in the root callback, before any command runs
(bad ones end every command with the same single line, and help still works); each kind of replay
source has its own command with only its own options, refused by the parser elsewhere; the form
``rivulet replay SOURCE`` still reaches the same command."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import typer
from typer.core import TyperGroup

import streaming.cli.common
from streaming.cli import app
from streaming.settings import Settings
from tests.streaming.cli.invoke import cli_env, run_cli

pytestmark = pytest.mark.unit

BAD = "error: invalid configuration: RIVULET_PARTITIONS: Input should be greater than or equal to 1"


def _leaves(group: TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            out += _leaves(command, (*path, name))
        else:
            out.append((*path, name))
    return out


LEAVES = _leaves(typer.main.get_group(app))


README = Path(__file__).resolve().parents[3] / "README.md"


def _readme_commands() -> list[str]:
    """Every ``rivulet ...`` line of the README's ``sh`` blocks, from ``rivulet`` on."""
    lines, block = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            block = line == "```sh"
        elif block and "rivulet " in (code := line.split("#")[0]):
            lines.append(code[code.index("rivulet ") :])
    return lines


def test_the_commands_are_where_the_readme_says() -> None:
    """Each command the README shows names a command of the app, not a group (an old path, a moved
    command or a typo would stop at a group or at an unknown word)."""
    commands = _readme_commands()
    assert len(commands) >= 15 and any(c.startswith("rivulet replay topic") for c in commands)
    root = typer.main.get_group(app)
    for line in commands:
        node, path = root, []
        for word in line.split()[1:]:
            if not isinstance(node, TyperGroup) or word not in node.commands:
                break
            node = node.commands[word]
            path.append(word)
        assert not isinstance(node, TyperGroup), f"README: {line!r} names no command ({path})"
        assert tuple(path) in LEAVES, line
    assert {("models", "verify"), ("replay", "topic"), ("replay", "file"), ("replay", "dataset")} <= set(
        LEAVES
    )


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_bad_settings_end_every_command_before_it_runs(tmp_path: Path, path: tuple[str, ...]) -> None:
    """The same one line whatever the command, before its own arguments are even parsed (none given
    here, though some are required): the root callback read the settings, not the command."""
    res = run_cli(list(path), cli_env(tmp_path, RIVULET_PARTITIONS="0"))
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert res.output.strip() == BAD


def test_a_command_with_bad_settings_has_no_effect(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("entity,ts,label,x\nu,1,1,2.0\n")
    res = run_cli(
        ["replay", "file", str(rows), "--out", str(tmp_path / "o")], cli_env(tmp_path, RIVULET_PARTITIONS="0")
    )
    assert res.output.strip() == BAD and not (tmp_path / "o").exists()
    # the control: with good settings the same command makes its output directory
    res = run_cli(["replay", "file", str(rows), "--out", str(tmp_path / "o"), "--quiet"], cli_env(tmp_path))
    assert (tmp_path / "o" / "replay.json").is_file(), res.output


@pytest.mark.parametrize("path", [["produce"], ["replay", "topic"], ["models", "verify"], ["replay"]])
def test_help_needs_no_settings(tmp_path: Path, path: list[str]) -> None:
    res = run_cli([*path, "--help"], cli_env(tmp_path, RIVULET_PARTITIONS="0"))
    assert res.exit_code == 0 and "Usage:" in res.output and "error:" not in res.output
    # a group without its command shows its help too (`rivulet replay` alone is a replay: see above)
    if len(path) == 2 and path[0] == "models":
        res = run_cli(path[:1], cli_env(tmp_path, RIVULET_PARTITIONS="0"))
        assert "Usage:" in res.output and "verify" in res.output and "error:" not in res.output


@pytest.mark.parametrize(
    "args", [["keys", "show"], ["replay", "dataset", "river:Phishing", "--limit", "20", "--quiet", "--out"]]
)
def test_settings_are_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    """Once per invocation, also where a command needs them completed (``keys show``: with the signer)."""
    made: list[Settings] = []

    class Counted(Settings):
        def __init__(self, **values: object) -> None:
            super().__init__(**values)  # type: ignore[arg-type]
            made.append(self)

    monkeypatch.setattr(streaming.cli.common, "Settings", Counted)
    res = run_cli([*args, str(tmp_path / "o")] if args[-1] == "--out" else args, cli_env(tmp_path))
    assert res.exit_code == 0, res.output
    assert len(made) == 1


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        (["replay", "topic", "events", "--entity-field", "user"], "--entity-field"),
        (["replay", "topic", "features", "--seed", "3"], "--seed"),
        (["replay", "file", "rows.csv", "--start", "offset:5"], "--start"),
        (["replay", "file", "rows.csv", "--drift-at", "5"], "--drift-at"),
        (["replay", "dataset", "river:Phishing", "--order", "kafka"], "--order"),
        (["replay", "dataset", "river:Phishing", "--ts-field", "t"], "--ts-field"),
        (["replay", "river:Phishing", "--labels-start", "offset:5"], "--labels-start"),  # the old form
        (["replay", "rows.csv", "--input", "events"], "--input"),
        (["replay", "events", "--step-ms", "5"], "--step-ms"),
    ],
)
def test_an_option_of_another_kind_of_source_is_refused_by_the_parser(
    tmp_path: Path, args: list[str], refused: str
) -> None:
    res = run_cli(args, cli_env(tmp_path))
    assert res.exit_code == 2, res.output  # a usage error, before the command runs
    assert f"No such option: {refused}" in res.output


def test_each_kind_takes_its_own_options(tmp_path: Path) -> None:
    rows = "user,when,label,salary\n" + "".join(f"u{i % 7},{1_000 * i},{i % 2},{i}.5\n" for i in range(60))
    (tmp_path / "rows.csv").write_text(rows)
    out = tmp_path / "f"
    args = ["replay", "file", str(tmp_path / "rows.csv"), "--entity-field", "user", "--ts-field", "when"]
    res = run_cli([*args, "--out", str(out), "--quiet"], cli_env(tmp_path))
    assert res.exit_code == 0, res.output
    result = orjson.loads((out / "replay.json").read_bytes())
    assert result["records"] == 60 and result["first_ts"] == 0 and result["last_ts"] == 59_000
    # without the mapping the rows have no entity and no time: nothing scores
    res = run_cli(
        ["replay", "file", str(tmp_path / "rows.csv"), "--out", str(tmp_path / "g"), "--quiet"],
        cli_env(tmp_path),
    )
    assert res.exit_code == 1 and "nothing was scored" in res.output


def test_the_old_form_runs_the_same_replay(tmp_path: Path) -> None:
    """``rivulet replay synth:drift ...`` is ``rivulet replay dataset synth:drift ...``: the same records,
    the same metrics; and another seed gives other data (the option reached the source)."""
    results = []
    for n, args in enumerate(
        (
            ["replay", "dataset", "synth:drift", "--seed", "3"],
            ["replay", "synth:drift", "--seed", "3"],
            ["replay", "dataset", "synth:drift", "--seed", "4"],
        )
    ):
        out = tmp_path / str(n)
        res = run_cli(
            [*args, "--drift-at", "100", "--limit", "300", "--out", str(out), "--quiet"], cli_env(tmp_path)
        )
        assert res.exit_code == 0, res.output
        result = orjson.loads((out / "replay.json").read_bytes())
        results.append({name: m["metrics"] for name, m in result["models"].items()})
        assert result["records"] == 300
    assert results[0] == results[1] and results[0] != results[2]
