"""``rivulet down`` signals only this stack's supervisor: a pid file naming another process named
supervisord (another stack's, after a pid was reused) is not ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.runtime.stack import Stack
from streaming.settings import Settings
from tests.support.processes import decoy

pytestmark = pytest.mark.unit


def test_a_pid_file_naming_another_supervisord_is_not_this_stack(tmp_path: Path) -> None:
    other = decoy("supervisord")  # another stack's supervisor (or any program so named) got the pid
    try:
        stack = Stack(Settings(data_dir=str(tmp_path)))
        stack.home.mkdir(parents=True)
        (stack.home / "supervisord.pid").write_text(str(other.pid))
        assert not stack.running()
        assert stack.down(timeout_s=2) is False  # nothing of ours ran: nothing signalled
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
