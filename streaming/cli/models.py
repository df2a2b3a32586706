"""``rivulet models list | show | versions | rollback | promote | resign | verify``: the model registry;
``rivulet models challenge | promote-challenger | retire``: the lifecycle by hand, through the log."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from streaming.cli.common import console, fail, progress_bar, settings_of, user_errors, with_stack_keys
from streaming.cli.options import ModelsModule, Quiet
from streaming.cli.specs import checked_specs, registry_of
from streaming.clients import registry_writer
from streaming.learning.header import CheckpointHeader
from streaming.learning.registry import RedisRegistry
from streaming.runtime.stack import kept_keys

app = typer.Typer(help="The model registry: versions, metrics, rollback, promotion.", no_args_is_help=True)

EXIT_DIFFERS = 3
At = Annotated[
    str | None,
    typer.Option(
        help="The stream (event) time it applies at: ISO 8601 or epoch ms; the learner applies it after the "
        "records before that time, and a replay at the same place (default: now, for a stream stamped with "
        "the wall clock)."
    ),
]


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every model with its current version, newest version, learned count and metrics."""
    reg = registry_of(settings_of(ctx))
    table = Table()
    for col in ("model", "role", "current", "newest", "learned", "metrics"):
        table.add_column(col)
    with user_errors():  # Redis unreachable
        names = reg.names()
        champions = {n: reg.champion(n) for n in names if "~" not in n}
        for name in names:
            versions = reg.versions(name)
            newest = versions[0] if versions else None
            h = CheckpointHeader.of(newest.header if newest else {})
            metrics = ", ".join(f"{k}={v:.4f}" for k, v in h.metrics.items() if v is not None)
            serving = champions.get(h.spec or name) == name
            table.add_row(
                escape(_printable(name)),
                escape(_printable((h.role or "") + (" (serving)" if serving and h.role else ""))),
                str(reg.current_version(name)),
                str(newest.version if newest else "-"),
                str(h.n_learned if h.n_learned is not None else "-"),
                metrics,
            )
    console.print(table)
    with user_errors():
        for spec in champions:
            for d in reg.decisions(spec)[-10:]:
                console.print(_decision(d), highlight=False, markup=False)


def _decision(d: dict[str, Any]) -> str:
    """One line of a spec's lifecycle: when, what, and the evidence of a promotion or a rollback."""
    ev = d.get("evidence") if isinstance(d.get("evidence"), dict) else None
    test = ""
    if ev:
        test = (
            f" (paired n {ev.get('n')}, losses {ev.get('incumbent_loss')} -> {ev.get('candidate_loss')}, "
            f"p {ev.get('p_value')})"
        )
    what = f"{d.get('kind')} {d.get('model')} (champion {d.get('champion')})"
    return _printable(f"{d.get('spec')}: {what} {d.get('why')}{test}")


def _printable(text: str) -> str:
    """``text`` with its control and format characters escaped (``\\x1b``...): what the registry holds
    (anyone who can write Redis wrote it) never reaches the terminal as an escape sequence (rich keeps ESC
    with markup off) or reorders the line (bidi controls)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


@app.command()
def show(ctx: typer.Context, name: str, version: Annotated[int | None, typer.Argument()] = None) -> None:
    """A version's header (offsets, metrics, counters, versions of River and Python), verified."""
    reg = registry_of(settings_of(ctx))
    with user_errors():  # a refused snapshot, no valid version, Redis unreachable
        v = version if version is not None else reg.current_version(name)
        if v is None:
            fail(f"model {name!r} has no versions")
        opened = reg.load(name, v)
        lifecycle = (
            {"champion": reg.champion(name), "decisions": reg.decisions(name)[-50:]}
            if "~" not in name
            else {}
        )
    shown = {**opened.header, **({"lifecycle": lifecycle} if lifecycle.get("champion") else {})}
    console.print(
        orjson.dumps(shown, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode(),
        markup=False,
        highlight=False,
    )


@app.command()
def versions(ctx: typer.Context, name: str) -> None:
    """The versions kept for a model, newest first."""
    reg = registry_of(settings_of(ctx))
    with user_errors():
        infos = reg.versions(name)
    for info in infos:
        h = CheckpointHeader.of(info.header)
        mark = "*" if info.current else " "
        if info.refused:
            console.print(f"{mark} v{info.version}  REFUSED: {info.refused}", highlight=False)
            continue
        console.print(f"{mark} v{info.version}  learned={h.n_learned}  key={h.key_id}  offsets={h.offsets}")


@app.command()
def rollback(ctx: typer.Context, name: str) -> None:
    """Serve the version before the current one."""
    reg = registry_of(settings_of(ctx))
    with user_errors():
        current = reg.current_version(name)
        older = [i.version for i in reg.versions(name) if current is not None and i.version < current]
    if not older:
        fail(f"model {name!r} has no version before {current}")
    _set(reg, name, older[0])


@app.command()
def promote(ctx: typer.Context, name: str, version: int) -> None:
    """Serve a given version."""
    _set(registry_of(settings_of(ctx)), name, version)


def _set(reg: RedisRegistry, name: str, version: int) -> None:
    with user_errors():  # a refused snapshot, no valid version, Redis unreachable
        reg.set_current(name, version)
    console.print(f"{name}: serving version {version}")


@app.command()
def challenge(
    ctx: typer.Context,
    spec: Annotated[str, typer.Argument(help="The spec (with a promotion policy) to start a challenger of.")],
    warm: Annotated[
        int | None,
        typer.Option(
            min=0, help="Retrain it on the champion's last N records (at most those it keeps; 0: fresh)."
        ),
    ] = None,
    challenger: Annotated[
        str | None,
        typer.Option(
            help="Its model as YAML steps, as a spec's promotion.challenger: "
            "'[tree.HoeffdingTreeClassifier: {grace_period: 100}]' (default: the policy's, or the spec's)."
        ),
    ] = None,
    at: At = None,
    models_module: ModelsModule = None,
) -> None:
    """Start a challenger of SPEC in the live learner: a signed control record in the features topic, applied
    where the learner reads it (so a restart and a replay take the same decision there)."""
    steps = _steps(challenger)
    _control(ctx, "challenge", spec, models_module, at, warm=warm, challenger=steps)


@app.command("promote-challenger")
def promote_challenger(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The running challenger, <spec>~<ts>.")],
    at: At = None,
    models_module: ModelsModule = None,
) -> None:
    """Make a running challenger its spec's champion now, whatever its evidence: the former champion shadows
    it on probation, and the policy's test rolls the promotion back if it does worse."""
    _control(ctx, "promote", name.partition("~")[0], models_module, at, model=name)


@app.command()
def retire(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The running challenger, <spec>~<ts>.")],
    at: At = None,
    models_module: ModelsModule = None,
) -> None:
    """Retire a running challenger (it stops learning; its versions stay in the registry)."""
    _control(ctx, "retire", name.partition("~")[0], models_module, at, model=name)


def _steps(text: str | None) -> Any:
    if text is None:
        return None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        fail(f"--challenger is not YAML: {exc}")


def _control(
    ctx: typer.Context, action: str, spec_name: str, module: str | None, at: str | None, **fields: Any
) -> None:
    """Check the control as the learner will, sign it (RIVULET_SIGNING_KEY: a key in the learner's keyring)
    and publish it to the features topic, keyed by its spec, to apply at stream time ``at`` (default: now)."""
    from features.events import parse_ts
    from streaming.clients import signing_key
    from streaming.ingest.producer import Producer
    from streaming.learning.controls import ControlRefused, checked_for, open_control, sign_control
    from streaming.learning.keys import Keyring

    settings = with_stack_keys(settings_of(ctx), signing=True)
    with user_errors():  # a bad spec module, no key
        specs = {s.name: s for s in checked_specs(settings, module)}
        spec = specs.get(spec_name)
        if spec is None or spec.promotion is None:
            fail(f"no spec {spec_name!r} with a promotion policy (specs: {', '.join(sorted(specs))})")
        key = signing_key(settings)
        try:
            ts = None if at is None else parse_ts(at, "--at")
            record = sign_control(key, action, spec.name, ts=ts, **fields)
            # checked as the learner will read it: the signed JSON, not what was given
            checked_for(spec, open_control(record, Keyring.of(key.public)))
        except ControlRefused as exc:
            fail(str(exc))
        producer = Producer(settings)
        try:
            future = producer.send_record(settings.topics.features, orjson.dumps(record), spec.name.encode())
            producer.flush()
            meta = future.get(timeout=30)
        finally:
            producer.close()
    body = orjson.loads(record["control"])
    console.print(
        f"control {body['id']} ({action} {fields.get('model') or spec.name}) sent to "
        f"{meta.topic}[{meta.partition}] at offset {meta.offset}: the learner applies it when it reads it "
        f"(`rivulet models show {spec.name}` lists the decision)",
        highlight=False,
        markup=False,
    )


@app.command()
def resign(
    ctx: typer.Context,
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
    settings = with_stack_keys(settings_of(ctx), signing=True)
    legacy_secret = legacy_secret or kept_keys(settings).legacy_secret
    if not legacy_secret:
        fail("no legacy secret: set RIVULET_SIGNING_SECRET to the secret the old snapshots were signed with")
    with user_errors():
        reg = registry_writer(settings)
        for name in names or reg.names():
            done = reg.resign(name, legacy_secret.encode())
            console.print(f"{name}: re-signed {len(done)} version(s) with key {reg.signer_id}: {done}")


@app.command()
def verify(
    ctx: typer.Context,
    name: str,
    version: int,
    models: ModelsModule = None,
    from_version: Annotated[
        int | None, typer.Option(help="Rebuild from this retained version (default: the earliest possible).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Rebuild a model version from the log and check it equals the stored one.

    Exit code 0 when it does, 3 when it differs, 1 when it cannot be rebuilt.
    """
    from streaming.replay.verify import verify as rebuild

    settings = settings_of(ctx)
    with user_errors():  # a bad spec or view
        specs = checked_specs(settings, models)
    registry = registry_of(settings)
    progress = progress_bar("rebuilding", quiet=quiet)
    task = progress.add_task("verify", total=None)
    with user_errors(), progress:  # VerifyError: the version cannot be rebuilt
        result = rebuild(
            settings,
            registry,
            specs,
            name,
            version,
            from_version=from_version,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    for line in result.notes:
        console.print(f"  [dim]note[/]  {line}")
    for line in result.checks:
        console.print(f"  [green]ok[/]  {line}")
    for line in result.mismatches:
        console.print(f"  [red]differs[/]  {line}", markup=True)
    where = f"rebuilt from {result.base} over {result.records:,} records"
    if not result.ok:
        console.print(f"[bold red]NOT verified[/]: {name} v{version} differs from its rebuild ({where})")
        raise typer.Exit(EXIT_DIFFERS)
    console.print(f"[bold green]verified[/]: {name} v{version} ({result.method}; {where})")
