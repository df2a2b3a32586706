"""``rivulet serve``: the scoring API under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from streaming.cli.common import load_settings


def serve(
    host: Annotated[str | None, typer.Option(help="Address (default RIVULET_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RIVULET_SERVE_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default RIVULET_SERVE_WORKERS).")
    ] = None,
) -> None:
    """Serve predictions, ingest and the model registry over HTTP (see /docs)."""
    settings = load_settings()
    import uvicorn

    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host or settings.serve_host,
        port=port or settings.serve_port,
        workers=workers or settings.serve_workers,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
