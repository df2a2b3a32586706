"""MLflow URIs that can never work, refused when the settings are read (one line at start, not a tracker
retrying forever). Pure: no MLflow import (MLflow is an optional extra), only the names MLflow resolves a
store by (its schemes, and those a plugin installs through the entry points ``mlflow.tracking_store`` and
``mlflow.model_registry_store``) and the local paths a store would be in.

What can only be known by MLflow itself (a file store, which MLflow 3 refuses unless
``MLFLOW_ALLOW_FILE_STORE`` is set; a database driver not installed) is refused by the tracker when it
connects: counted, never retried (:mod:`streaming.tracking.tracker`).

>>> check_uri(" http://127.0.0.1:5000 ")
'http://127.0.0.1:5000'
>>> check_uri("sqlite:///mlflow.db"), check_uri("postgresql+psycopg2://u@db/mlflow"), check_uri("databricks")
('sqlite:///mlflow.db', 'postgresql+psycopg2://u@db/mlflow', 'databricks')
>>> check_uri("databricks-uc", registry=True)
'databricks-uc'
>>> try:
...     check_uri("foo://x")
... except ValueError as exc:
...     print(str(exc).split(" (")[0])
'foo://x': MLflow has no store for the scheme 'foo'
>>> check_uri("  ")
Traceback (most recent call last):
...
ValueError: empty: unset it to log nothing to MLflow, or give one such as http://host:5000 or sqlite:///mlflow.db
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["check_uri"]

_BUILTIN = frozenset({"http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks"})
_UNITY = frozenset({"databricks-uc", "uc"})  # registries only (MLflow 3.17 refuses them for tracking)
_SQLITE_MAGIC = b"SQLite format 3\x00"
_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")


def check_uri(uri: str, *, registry: bool = False) -> str:
    """``uri`` without surrounding blanks, or a ``ValueError`` saying why MLflow could never use it as a
    tracking (``registry``: a model registry) store."""
    text = uri.strip()
    if not text:
        raise ValueError(
            "empty: unset it to log nothing to MLflow, or give one such as http://host:5000 or "
            "sqlite:///mlflow.db"
        )
    if text == "databricks" or (registry and text in _UNITY):
        return text
    if text in _UNITY or text.startswith("uc:"):
        raise ValueError(f"{text!r}: Unity Catalog is a model registry only: set it as the registry URI")
    try:
        parsed = urlparse(text)
    except ValueError as exc:  # an unbalanced [ in the host
        raise ValueError(f"{text!r}: {exc}") from None
    scheme = parsed.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter: a path, as MLflow reads it
        scheme = ""
    if scheme in ("", "file"):
        _local_directory(text, Path(unquote(parsed.path) if scheme else text))
        return text
    if scheme.count("+") > 1:
        raise ValueError(f"{text!r}: a database URI names at most one driver (scheme+driver://)")
    base = scheme.split("+", 1)[0]
    if base in ("http", "https") and "+" not in scheme:
        try:
            port = parsed.port
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if not parsed.hostname or port == 0:
            raise ValueError(f"{text!r}: no host to reach (http://host:port)")
        return text
    if base == "sqlite":
        db = unquote(parsed.path)[1:]  # sqlite:///rel.db, sqlite:////abs.db; empty: in memory
        if db and db != ":memory:":
            _database_file(text, Path(db))
        return text
    if base in _DATABASES:
        return text
    known = _BUILTIN | (_UNITY if registry else set()) | _plugins(registry)
    if scheme in known and "+" not in scheme:
        return text
    raise ValueError(
        f"{text!r}: MLflow has no store for the scheme {scheme!r} (it knows {', '.join(sorted(known))})"
    )


def _plugins(registry: bool) -> set[str]:
    group = "mlflow.model_registry_store" if registry else "mlflow.tracking_store"
    try:
        return {ep.name for ep in importlib.metadata.entry_points(group=group)}
    except Exception:  # a broken distribution's metadata: no plugin known
        return set()


def _blocked(path: Path) -> Path | None:
    """The first existing component of ``path`` that is not a directory (a file where a directory must
    be), or None."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
    return None


def _local_directory(text: str, path: Path) -> None:
    """A file store: a directory, or one that can be made."""
    if (found := _blocked(path)) is not None:
        raise ValueError(
            f"{text!r}: {found} is a file, not a directory (an MLflow file store is a directory)"
        )


def _database_file(text: str, path: Path) -> None:
    """A SQLite database: a file (existing or to be made) whose parents are directories."""
    if path.is_dir():
        raise ValueError(f"{text!r}: {path} is a directory, not a SQLite database file")
    if (found := _blocked(path.parent)) is not None:
        raise ValueError(f"{text!r}: {found} is a file, not a directory")
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError:  # not there yet (MLflow makes it), or not readable here: MLflow says
        return
    if head and head != _SQLITE_MAGIC:
        raise ValueError(f"{text!r}: {path} is not a SQLite database")
