"""``rivulet serve``: the scoring API under uvicorn, with the settings this command resolved."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from streaming.cli.common import settings_of, user_errors
from streaming.clients import keyring


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address (default RIVULET_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RIVULET_SERVE_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default RIVULET_SERVE_WORKERS).")
    ] = None,
) -> None:
    """Serve predictions, ingest and the model registry over HTTP (see /docs)."""
    settings = settings_of(ctx)
    with user_errors():
        ring = keyring(settings)  # refuses to start without verify keys
        from serving.auth import refuse_anonymous

        refuse_anonymous(settings, host)  # no API keys off loopback: refused unless RIVULET_ALLOW_ANONYMOUS
    # a reader holds public keys only: the private key, if this environment has one, goes no further
    settings = settings.model_copy(update={"signing_key": None, "verify_keys": [k.encoded for k in ring]})
    os.environ.pop("RIVULET_SIGNING_KEY", None)
    # worker processes build their settings from the environment: give them the keys resolved here
    os.environ["RIVULET_VERIFY_KEYS"] = ",".join(settings.verify_keys)
    n = workers or settings.serve_workers
    import uvicorn

    from serving.app import create_app

    uvicorn.run(
        create_app(settings) if n == 1 else "serving.app:create_app",
        factory=n > 1,
        host=host or settings.serve_host,
        port=port or settings.serve_port,
        workers=n,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
