"""``rivulet serve``: the scoring API under uvicorn (uvloop and httptools, from ``uvicorn[standard]``), or
under granian (``--server granian``, the ``granian`` extra: its HTTP layer is Rust; in
``scripts/bench_serve.py`` it served more than uvicorn with 2 workers, less with 1 on a loaded VM: see
BENCHMARKS.md, issue 16), with the settings this command resolved."""

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
    server: Annotated[
        str, typer.Option(help="The ASGI server: uvicorn, or granian (pip install 'rivulet[granian]').")
    ] = "uvicorn",
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
    if server == "granian":
        _granian(host or settings.serve_host, port or settings.serve_port, n, settings.log_level)
        return
    if server != "uvicorn":
        raise typer.BadParameter(f"unknown server {server!r}: uvicorn or granian", param_hint="--server")
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


def _granian(host: str, port: int, workers: int, log_level: str) -> None:
    """The API under granian: each worker builds its app (and its settings) from the environment, as
    uvicorn's workers do; one event loop thread per worker (uvloop), no websockets, no access log."""
    try:
        from granian import Granian
        from granian.constants import Interfaces, Loops
        from granian.log import LogLevels
    except ImportError:
        raise typer.BadParameter("granian is not installed: pip install 'rivulet[granian]'") from None
    Granian(
        "serving.app:create_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        websockets=False,
        log_level=LogLevels(log_level.lower()),
        log_access=False,
    ).serve()
