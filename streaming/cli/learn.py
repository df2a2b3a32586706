"""``rivulet learn run`` and ``rivulet models list | show | versions | rollback | promote``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from streaming.cli.common import console, fail, load_settings, user_errors
from streaming.clients import registry_reader, registry_writer
from streaming.errors import StreamingError
from streaming.learning.header import CheckpointHeader
from streaming.learning.registry import RedisRegistry
from streaming.learning.spec import ModelSpec, SpecError, load_specs
from streaming.settings import Settings

learn_app = typer.Typer(help="Run the learner: River models on the features stream.", no_args_is_help=True)
models_app = typer.Typer(
    help="The model registry: versions, metrics, rollback, promotion.", no_args_is_help=True
)


def registry_of(settings: Settings) -> RedisRegistry:
    """The registry as a reader (verifies with RIVULET_VERIFY_KEYS, cannot sign); exits clearly without."""
    try:
        return registry_reader(settings)
    except StreamingError as exc:  # no verify keys, a bad key
        fail(str(exc))


def checked_specs(settings: Settings, module: str | None = None) -> list[ModelSpec]:
    """The model specs of ``module`` (default RIVULET_MODELS_MODULE), checked against the feature views."""
    from features.definitions import load_views

    specs = load_specs(module or settings.models_module)
    known = {v.name: v for v in load_views(settings.features_module)}
    for spec in specs:
        view = known.get(spec.view)
        if view is None:
            raise SpecError(spec.name, f"unknown view {spec.view!r}; views: {sorted(known)}")
        declared = [*(d.name for d in view.derived), *view.feature_names]
        # a view that includes the events' own fields has names only the data knows: they are checked on
        # the first record
        spec.check(None if view.include_fields else declared)
    return specs


@learn_app.command()
def run(
    models: Annotated[
        str | None, typer.Option(help="Module with model specs (default RIVULET_MODELS_MODULE).")
    ] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without records.")
    ] = None,
    heartbeat: Annotated[
        Path | None, typer.Option(help="Touch this file every 2 s while running (for health checks).")
    ] = None,
) -> None:
    """Learn continuously; checkpoint every N records or T seconds and at shutdown (SIGTERM, Ctrl-C)."""
    settings = load_settings(signing=True)
    with user_errors():  # a bad spec or feature view
        specs = checked_specs(settings, models)
    from streaming.runtime.learner import LearnerWorker

    with user_errors():
        registry = registry_writer(settings)
        _restorable(registry, specs)
        worker = LearnerWorker(settings, specs, registry=registry)
        worker.run(max_idle_s=idle_exit, heartbeat=heartbeat)


def _restorable(registry: RedisRegistry, specs: list[ModelSpec]) -> None:
    """A model with versions of which none verifies (signed by a key outside the ring, or in the HMAC
    format) is not silently started afresh: the learner refuses to start and says what to do."""
    for spec in specs:
        infos = registry.versions(spec.name)
        if infos and all(i.refused for i in infos):
            fail(
                f"model {spec.name!r} has {len(infos)} version(s) and none verifies ({infos[0].refused}); "
                "add its signer's public key to RIVULET_VERIFY_KEYS, migrate HMAC snapshots with `rivulet "
                "models resign`, or delete the model's versions to start it afresh"
            )


@models_app.command("list")
def list_() -> None:
    """Every model with its current version, newest version, learned count and metrics."""
    settings = load_settings()
    reg = registry_of(settings)
    table = Table()
    for col in ("model", "current", "newest", "learned", "metrics"):
        table.add_column(col)
    with user_errors():  # Redis unreachable
        for name in reg.names():
            versions = reg.versions(name)
            newest = versions[0] if versions else None
            h = CheckpointHeader.of(newest.header if newest else {})
            metrics = ", ".join(f"{k}={v:.4f}" for k, v in h.metrics.items() if v is not None)
            table.add_row(
                name,
                str(reg.current_version(name)),
                str(newest.version if newest else "-"),
                str(h.n_learned if h.n_learned is not None else "-"),
                metrics,
            )
    console.print(table)


@models_app.command()
def show(name: str, version: Annotated[int | None, typer.Argument()] = None) -> None:
    """A version's header (offsets, metrics, counters, versions of River and Python), verified."""
    reg = registry_of(load_settings())
    with user_errors():  # a refused snapshot, no valid version, Redis unreachable
        v = version if version is not None else reg.current_version(name)
        if v is None:
            fail(f"model {name!r} has no versions")
        opened = reg.load(name, v)
    console.print(orjson.dumps(opened.header, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@models_app.command()
def versions(name: str) -> None:
    """The versions kept for a model, newest first."""
    reg = registry_of(load_settings())
    with user_errors():
        infos = reg.versions(name)
    for info in infos:
        h = CheckpointHeader.of(info.header)
        mark = "*" if info.current else " "
        if info.refused:
            console.print(f"{mark} v{info.version}  REFUSED: {info.refused}", highlight=False)
            continue
        console.print(f"{mark} v{info.version}  learned={h.n_learned}  key={h.key_id}  offsets={h.offsets}")


@models_app.command()
def rollback(name: str) -> None:
    """Serve the version before the current one."""
    reg = registry_of(load_settings())
    with user_errors():
        current = reg.current_version(name)
        older = [i.version for i in reg.versions(name) if current is not None and i.version < current]
    if not older:
        fail(f"model {name!r} has no version before {current}")
    _set(reg, name, older[0])


@models_app.command()
def promote(name: str, version: int) -> None:
    """Serve a given version."""
    _set(registry_of(load_settings()), name, version)


def _set(reg: RedisRegistry, name: str, version: int) -> None:
    with user_errors():  # a refused snapshot, no valid version, Redis unreachable
        reg.set_current(name, version)
    console.print(f"{name}: serving version {version}")


@models_app.command()
def resign(
    names: Annotated[list[str] | None, typer.Argument(help="Models to migrate (default: all).")] = None,
    legacy_secret: Annotated[
        str | None,
        typer.Option(
            envvar="RIVULET_SIGNING_SECRET",
            help="The old HMAC secret (default: RIVULET_SIGNING_SECRET, or the one rivulet up kept).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Migrate format-1 (HMAC) snapshots: check each with the old secret, sign it again with
    RIVULET_SIGNING_KEY. Payloads are re-signed as they are, never unpickled."""
    settings = load_settings(signing=True)
    if not legacy_secret:
        kept = Path(settings.data_dir) / "stack" / "signing-secret"
        legacy_secret = kept.read_text().strip() if kept.is_file() else None
    if not legacy_secret:
        fail("no legacy secret: set RIVULET_SIGNING_SECRET to the secret the old snapshots were signed with")
    with user_errors():
        reg = registry_writer(settings)
        for name in names or reg.names():
            done = reg.resign(name, legacy_secret.encode())
            console.print(f"{name}: re-signed {len(done)} version(s) with key {reg.signer_id}: {done}")
