"""The feature worker's Faust app (built, not run: no broker is contacted)."""

from __future__ import annotations

from pathlib import Path

import mode

from features.definitions import load_views
from streaming.features_worker import create_app
from streaming.settings import Settings


def test_an_agent_crash_ends_the_process_for_its_supervisor(tmp_path: Path) -> None:
    """Faust's default restarts a crashed agent in place; one that crashed in its batching after a
    rebalance came back consuming nothing while the process looked alive. The worker exits instead, and
    supervisord or Compose restarts it (a restart double counts nothing: tests/integration)."""
    settings = Settings(data_dir=str(tmp_path))
    app = create_app(settings, load_views(settings.features_module))
    assert app.conf.agent_supervisor is mode.CrashingSupervisor
