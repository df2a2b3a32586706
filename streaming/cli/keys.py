"""``rivulet keys generate | show``: Ed25519 key pairs that sign and verify model snapshots."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer

from streaming.cli.common import console, settings_of, user_errors, with_stack_keys
from streaming.clients import keyring, signing_key
from streaming.learning.keys import generate as new_pair

app = typer.Typer(
    help="Keys that sign (learner) and verify (everyone else) model snapshots.", no_args_is_help=True
)


@app.command()
def generate(
    export: Annotated[
        bool, typer.Option(help="Prefix each line with `export ` (for eval in a shell).")
    ] = False,
    api_keys: Annotated[
        bool,
        typer.Option(
            "--api-keys",
            help="Also print one new random API key per scope (score, ingest, read, admin), and the read key "
            "again for Prometheus: `(umask 077; rivulet keys generate --api-keys >> .env)` sets up Compose.",
        ),
    ] = False,
) -> None:
    """Print a new key pair as environment lines: RIVULET_SIGNING_KEY (private: the learner's alone) and
    RIVULET_VERIFY_KEYS (public: every reader). To rotate, append the new public key to the readers' ring.
    With --api-keys, API keys too (secrets: give each client only its scope's)."""
    pair = new_pair()
    prefix = "export " if export else ""
    print(f"# key id {pair.key_id}")
    print(f"{prefix}RIVULET_SIGNING_KEY={pair.encoded}")
    print(f"{prefix}RIVULET_VERIFY_KEYS={pair.public.encoded}")
    if api_keys:
        keys = {scope: secrets.token_urlsafe(32) for scope in ("SCORING", "INGEST", "READ", "ADMIN")}
        print(
            "# API keys, one per scope (comma separate more); Prometheus scrapes /metrics with the read key"
        )
        for scope, key in keys.items():
            print(f"{prefix}RIVULET_{scope}_API_KEYS={key}")
        print(f"{prefix}RIVULET_PROMETHEUS_API_KEY={keys['READ']}")


@app.command()
def show(ctx: typer.Context) -> None:
    """The key ids this environment signs with and accepts (never the private key)."""
    settings = with_stack_keys(settings_of(ctx), signing=True)
    with user_errors():
        if settings.signing_key is not None:
            console.print(f"signs with: {signing_key(settings).key_id}")
        else:
            console.print("signs with: nothing (no RIVULET_SIGNING_KEY: a reader)")
        ring = keyring(settings)
    for key in ring:
        console.print(f"accepts:    {key.key_id}  {key.encoded}")
