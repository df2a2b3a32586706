"""Every mistake a user can make on the command line ends as one ``error:`` line and exit code 1, never a
traceback: bad settings, a bad spec, a bad source or row mapping, a bad range option, a bad key, Kafka or
Redis unreachable. And a bug (a plain ``ValueError`` raised by code, not by the user) is not swallowed into
a friendly message: ``user_errors`` catches only the packages' roots and the clients' own errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import Result

import streaming.cli.keys
from features.errors import FeaturesError, InvalidEvent
from streaming.cli.common import user_errors
from streaming.errors import SourceError, StreamingError
from streaming.learning.errors import LearningError
from streaming.learning.header import HeaderError
from streaming.learning.spec import SpecError, load_specs
from streaming.replay.champion import ChampionError
from streaming.replay.kafka import RangeError, parse_bound
from streaming.replay.verify import VerifyError
from streaming.runtime.stack import Stack, StackError, kept_keys
from streaming.settings import Settings
from tests.streaming.cli.invoke import cli_env, run_cli

pytestmark = pytest.mark.unit

GOOD_YAML = """\
models:
  - name: m
    view: customer
    model:
      - linear_model.LogisticRegression: {}
"""


def _one_error_line(res: Result, *expected: str) -> str:
    """The command exited 1 through ``fail`` (SystemExit, not an exception) with one ``error:`` line."""
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def test_every_cli_error_is_in_a_package_tree_and_some_stay_value_errors() -> None:
    for cls in (SourceError, RangeError, ChampionError, VerifyError, StackError, SpecError, HeaderError):
        assert issubclass(cls, StreamingError), cls
    assert issubclass(SpecError, LearningError)
    for cls in (SourceError, RangeError, ChampionError, SpecError):  # callers catch them as ValueError
        assert issubclass(cls, ValueError), cls


def test_bad_settings(tmp_path: Path) -> None:
    res = run_cli(["topics", "list"], cli_env(tmp_path, RIVULET_PARTITIONS="0"))
    _one_error_line(res, "invalid configuration: RIVULET_PARTITIONS: Input should be greater than or equal")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("models: [3]\n", "each entry of 'models' is a mapping"),
        (GOOD_YAML + "    rolling_window: lots\n", "malformed entry"),  # int('lots'): a ValueError before
        (GOOD_YAML + "    checkpoint: {every: 3}\n", "malformed entry"),  # a TypeError: a traceback before
        (GOOD_YAML + "    drift: [salary]\n", "malformed entry"),  # an AttributeError: a traceback before
        (GOOD_YAML.replace("linear_model.LogisticRegression", "linear_model.Nope"), "no River class"),
        ("models: {}\n", "top-level 'models' list"),
    ],
)
def test_a_bad_spec_file(tmp_path: Path, body: str, says: str) -> None:
    spec = tmp_path / "models.yaml"
    spec.write_text(body)
    with pytest.raises(SpecError, match=says):
        load_specs(str(spec))
    _one_error_line(run_cli(["learn", "run", "--models", str(spec)], cli_env(tmp_path)), "model spec", says)
    res = run_cli(["replay", "river:Phishing", "--models", str(spec), "--quiet"], cli_env(tmp_path))
    _one_error_line(res, "model spec", says)


def test_a_bad_spec_module(tmp_path: Path) -> None:
    res = run_cli(["learn", "run", "--models", "no_such_module_here"], cli_env(tmp_path))
    _one_error_line(res, "cannot import 'no_such_module_here'")


@pytest.mark.parametrize("shard", ["3/3", "1", "a/b", "-1/2", "1/0"])
def test_a_bad_shard(tmp_path: Path, shard: str) -> None:
    """``--shard`` and ``RIVULET_LEARNER_SHARD`` refuse what is not I/N with 0 <= I < N, before any
    connection (a learner of no shard would take nothing of its own)."""
    res = run_cli(["learn", "run", "--shard", shard], cli_env(tmp_path))
    _one_error_line(res, "--shard", "a shard is I/N with 0 <= I < N", repr(shard))
    res = run_cli(["learn", "run"], cli_env(tmp_path, RIVULET_LEARNER_SHARD=shard))
    _one_error_line(res, "RIVULET_LEARNER_SHARD", "a shard is I/N")


def test_a_bad_source(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    out = ["--out", str(tmp_path / "o"), "--quiet"]
    _one_error_line(run_cli(["replay", str(tmp_path / "none.csv"), *out], env), "none.csv: no such file")
    _one_error_line(run_cli(["replay", "river:NoSuchSet", *out], env), "unknown River dataset 'NoSuchSet'")
    (tmp_path / "rows.txt").write_text("a\n")
    _one_error_line(run_cli(["replay", str(tmp_path / "rows.txt"), *out], env), "unknown file type '.txt'")
    res = run_cli(["produce", str(tmp_path / "none.jsonl"), "--quiet"], env)
    _one_error_line(res, "none.jsonl: no such file")


def test_a_bad_row_mapping(tmp_path: Path) -> None:
    res = run_cli(["replay", "river:Phishing", "--start-ts", "yesterday-ish", "--quiet"], cli_env(tmp_path))
    _one_error_line(res, "--start-ts")


@pytest.mark.parametrize("option", ["--start", "--end", "--labels-start"])
@pytest.mark.parametrize("bound", ["offset:-1", "12345", "time:soon", "0:x"])
def test_a_bad_range_option_fails_before_anything_connects(tmp_path: Path, option: str, bound: str) -> None:
    with pytest.raises(RangeError):
        parse_bound(bound)
    # Kafka at a closed port: the option is refused at once, not after a bootstrap timeout
    env = cli_env(tmp_path, RIVULET_KAFKA_BOOTSTRAP="127.0.0.1:1")
    _one_error_line(run_cli(["replay", "events", option, bound, "--quiet"], env), repr(bound))


def test_bad_keys(tmp_path: Path) -> None:
    res = run_cli(["keys", "show"], cli_env(tmp_path, RIVULET_VERIFY_KEYS="not-a-key"))
    _one_error_line(res, "RIVULET_VERIFY_KEYS entry 1 is not valid base64")
    res = run_cli(["keys", "show"], cli_env(tmp_path, RIVULET_SIGNING_KEY="c2hvcnQ="))  # base64 of "short"
    _one_error_line(res, "RIVULET_SIGNING_KEY")
    res = run_cli(["models", "list"], cli_env(tmp_path, RIVULET_VERIFY_KEYS="", RIVULET_SIGNING_KEY=""))
    _one_error_line(res, "RIVULET_VERIFY_KEYS is not set")


def test_redis_unreachable(tmp_path: Path) -> None:
    env = cli_env(tmp_path, RIVULET_REDIS_URL="redis://127.0.0.1:1/0", RIVULET_REDIS_CONNECT_TIMEOUT_S="0.5")
    for args in (
        ["models", "list"],
        ["models", "versions", "m"],
        ["models", "show", "m"],
        ["features", "status"],
        ["models", "verify", "m", "1", "--quiet"],
    ):
        _one_error_line(run_cli(args, env), "127.0.0.1:1")


def test_kafka_unreachable(tmp_path: Path) -> None:
    # the admin client's bootstrap waits max_block_ms (at least 1 s) for a broker: 1 s, not the default 10
    env = cli_env(
        tmp_path,
        RIVULET_KAFKA_BOOTSTRAP="127.0.0.1:1",
        RIVULET_KAFKA_REQUEST_TIMEOUT_MS="1000",
        RIVULET_KAFKA_MAX_BLOCK_MS="1000",
    )
    _one_error_line(run_cli(["topics", "list"], env), "Kafka is not reachable at 127.0.0.1:1")


def test_user_errors_reports_the_roots_and_lets_a_bug_through() -> None:
    for exc in (SourceError("x"), InvalidEvent("f", "bad"), SpecError("m", "bad"), OSError("disk")):
        with pytest.raises(typer.Exit) as exited, user_errors():
            raise exc
        assert exited.value.exit_code == 1
    for bug in (ValueError("a bug"), KeyError("k"), TypeError("t")):
        with pytest.raises(type(bug)), user_errors():
            raise bug
    assert not issubclass(ValueError, (StreamingError, FeaturesError))


def test_a_bug_in_a_command_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain ValueError from code (here: the keyring builder, made to fail) is not a user's mistake: the
    command does not turn it into an ``error:`` line (the old ``user_errors`` caught every ValueError)."""

    def broken(settings: object) -> object:
        raise ValueError("a bug, not a user's mistake")

    monkeypatch.setattr(streaming.cli.keys, "keyring", broken)
    res = run_cli(["keys", "show"], cli_env(tmp_path))
    assert isinstance(res.exception, ValueError) and "a bug" in str(res.exception)
    assert "error:" not in res.output


@pytest.mark.parametrize("command", ["up", "down"])
def test_a_stack_error_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """``rivulet up`` / ``down`` report a :class:`StackError` through ``user_errors`` (no inner catch)."""

    def refuse(self: Stack) -> None:
        raise StackError("supervisord would not start")

    monkeypatch.setattr(Stack, "ensure_services", refuse)
    monkeypatch.setattr(Stack, "down", refuse)
    _one_error_line(run_cli([command], cli_env(tmp_path)), "supervisord would not start")


def test_models_resign_takes_the_legacy_secret_an_older_rivulet_up_kept(tmp_path: Path) -> None:
    env = cli_env(tmp_path, RIVULET_SIGNING_KEY="")  # stops at the signing key, before any Redis
    _one_error_line(run_cli(["models", "resign"], env), "no legacy secret")
    home = tmp_path / "data" / "stack"
    home.mkdir(parents=True)
    (home / "signing-secret").write_text("old-hmac-secret\n")
    assert kept_keys(Settings(data_dir=str(tmp_path / "data"))).legacy_secret == "old-hmac-secret"
    _one_error_line(run_cli(["models", "resign"], env), "RIVULET_SIGNING_KEY")  # past the secret's check
