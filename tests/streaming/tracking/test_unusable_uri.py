"""Tracking URIs MLflow can never use (a scheme it has no store for, a file where a store's
directory or database must be, a file store MLflow 3 refuses, a database driver not installed): refused at
start with one line (the settings, ``rivulet learn run``, ``rivulet replay``), or by the tracker when only
connecting tells: counted as refused, never retried, never a traceback."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from streaming.learning.keys import generate
from streaming.learning.registry import MemoryRegistry
from streaming.settings import Settings
from streaming.tracking import tracker_for
from tests.streaming.cli.invoke import cli_env, run_cli
from tests.streaming.cli.test_errors import _one_error_line
from tests.streaming.tracking.test_tracker import spec, versions
from tests.support.mlflow_server import sqlite_uri, tracked

pytestmark = pytest.mark.unit


def bad_uris(tmp: Path) -> dict[str, str]:
    """Each a URI that can never work, by name; what they point at made in ``tmp``."""
    (tmp / "a-file").write_text("x")
    (tmp / "garbage.db").write_bytes(bytes(range(200)))
    (tmp / "a-dir").mkdir()
    return {
        "unknown scheme": "foo://somewhere",
        "unknown scheme, no host": "foo://",
        "a file as the file store": str(tmp / "a-file"),
        "a file URI to a file": (tmp / "a-file").as_uri(),
        "under a file": str(tmp / "a-file" / "mlruns"),
        "sqlite at a directory": f"sqlite:///{tmp / 'a-dir'}",
        "sqlite under a file": f"sqlite:///{tmp / 'a-file' / 'm.db'}",
        "sqlite not a database": f"sqlite:///{tmp / 'garbage.db'}",
        "http without a host": "http://",
        "http bad port": "http://127.0.0.1:99999",
        "a registry as tracking": "databricks-uc",
        "two drivers": "postgresql+a+b://u@h/db",
    }


NAMES = [
    "unknown scheme",
    "unknown scheme, no host",
    "a file as the file store",
    "a file URI to a file",
    "under a file",
    "sqlite at a directory",
    "sqlite under a file",
    "sqlite not a database",
    "http without a host",
    "http bad port",
    "a registry as tracking",
    "two drivers",
]
REGISTRY_TAKES = {"a registry as tracking"}  # a registry URI


@pytest.mark.parametrize("name", NAMES)
def test_a_uri_that_can_never_work_is_a_settings_error(tmp_path: Path, name: str) -> None:
    uris = bad_uris(tmp_path)
    assert set(uris) == set(NAMES)
    with pytest.raises(ValidationError, match="mlflow_tracking_uri") as caught:
        Settings(mlflow_tracking_uri=uris[name])
    assert len(caught.value.errors()) == 1
    if name not in REGISTRY_TAKES:
        with pytest.raises(ValidationError, match="mlflow_registry_uri"):
            Settings(mlflow_registry_uri=uris[name])


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:5000",
        " https://mlflow.example.com ",
        "sqlite:///mlflow.db",
        "postgresql+psycopg2://user@db:5432/mlflow",
        "mysql://user@db/mlflow",
        "databricks",
        "{tmp}/new-store",
        "{tmp}",
    ],
)
def test_uris_that_may_work_are_taken(tmp_path: Path, uri: str) -> None:
    given = uri.format(tmp=tmp_path)
    assert Settings(mlflow_tracking_uri=given).mlflow_tracking_uri == given.strip()
    assert Settings(mlflow_tracking_uri=sqlite_uri(tmp_path)).mlflow_tracking_uri == sqlite_uri(tmp_path)
    assert Settings(mlflow_registry_uri="databricks-uc").mlflow_registry_uri == "databricks-uc"
    assert Settings(mlflow_registry_uri="").mlflow_registry_uri is None  # empty: the tracking URI's


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_uri_is_unset(empty: str) -> None:
    """``RIVULET_MLFLOW_TRACKING_URI=`` (a Compose ``${VAR:-}``, a pod spec's empty value) turns tracking
    off, as an empty signing key is no key; it is not a URI that can never work."""
    assert Settings(mlflow_tracking_uri=empty).mlflow_tracking_uri is None
    assert Settings(mlflow_registry_uri=empty).mlflow_registry_uri is None


@pytest.mark.parametrize(
    "args",
    [
        ["learn", "run", "--idle-exit", "0.1"],
        ["replay", "dataset", "river:Phishing", "--limit", "50", "--quiet", "--out", "{tmp}/out"],
    ],
)
def test_the_learner_and_replay_refuse_it_at_start(tmp_path: Path, args: list[str]) -> None:
    env = cli_env(tmp_path, RIVULET_MLFLOW_TRACKING_URI="foo://x")
    res = run_cli([a.format(tmp=tmp_path) for a in args], env)
    _one_error_line(res, "invalid configuration: RIVULET_MLFLOW_TRACKING_URI", "'foo'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("what", ["file store", "driver"])
def test_replay_refuses_what_only_mlflow_can_tell_before_replaying(
    tmp_path: Path, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file store (a directory: MLflow 3 refuses it unless ``MLFLOW_ALLOW_FILE_STORE``) and a database
    whose driver is not installed pass the settings; ``rivulet replay`` builds the client first and refuses
    with one line, nothing replayed (it replayed, then said the run was not logged)."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = str(tmp_path / "store") if what == "file store" else "mssql://u@127.0.0.1:1/db"
    env = cli_env(tmp_path, RIVULET_MLFLOW_TRACKING_URI=uri)
    env["RIVULET_MODELS_MODULE"] = "streaming.learning.examples"
    out = tmp_path / "out"
    res = run_cli(["replay", "dataset", "river:Phishing", "--limit", "50", "--quiet", "--out", str(out)], env)
    _one_error_line(res, "RIVULET_MLFLOW_TRACKING_URI", uri, "cannot be used")
    assert not out.exists()


@pytest.mark.parametrize("what", ["file store", "unknown scheme", "driver"])
def test_the_tracker_gives_up_on_a_uri_it_can_never_reach(
    tmp_path: Path, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings built without validation (``model_copy``) or a store only MLflow refuses: the first attempt
    to connect fails for good, every version (waiting or notified later) is counted as refused once, nothing
    is retried, and a flush does not wait for what will never be logged."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = {"file store": str(tmp_path / "store"), "unknown scheme": "foo://x", "driver": "mssql://u@h/db"}
    reg = MemoryRegistry(signer=generate())
    s = spec()
    _, saved = versions(reg, s, 6)
    settings = tracked(Settings(), uri[what], mlflow_retry_s=0.01)
    t = tracker_for(settings, reg, [s])
    assert t is not None
    for each in saved[:3]:
        t.notify(each)
    t.start()
    assert t.flush(60)
    for each in saved[3:]:  # after it gave up
        t.notify(each)
    assert t._thread is not None
    t._thread.join(60)
    assert not t._thread.is_alive()  # it stopped trying
    t.close(0.1)
    stats = t.stats()
    assert stats.refused == 6 and stats.errors == 1
    assert stats.pending == stats.missed == stats.logged == 0
    fixed = tracker_for(tracked(Settings(), sqlite_uri(tmp_path), tmp_path / "artifacts"), reg, [s])
    assert fixed is not None  # the URI fixed: the next learner logs what the registry holds
    fixed.start()
    assert fixed.flush(120)
    fixed.close(5)
    assert fixed.stats().logged == 6


def test_every_nth_counts_only_the_versions_it_would_log(tmp_path: Path) -> None:
    reg = MemoryRegistry(signer=generate())
    s = spec()
    _, saved = versions(reg, s, 6)
    t = tracker_for(tracked(Settings(), "foo://x", mlflow_every=2), reg, [s])
    assert t is not None
    t.start()
    assert t.flush(60)
    for each in saved:
        t.notify(each)
    t.close(0.1)
    assert t.stats().refused == math.floor(6 / 2)
