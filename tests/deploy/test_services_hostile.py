"""``scripts/services`` under hostile settings and pid files: it signals only its own servers and starts
nothing for an address that is not local."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.processes import decoy

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from services_redis import RedisNode

pytestmark = pytest.mark.unit


def test_a_pid_file_naming_another_redis_server_is_not_ours(tmp_path: Path) -> None:
    other = decoy("redis-server 127.0.0.1:6379")  # someone else's Redis
    try:
        node = RedisNode(tmp_path / "redis", port=16399)
        node.home.mkdir(parents=True)
        node.pidfile.write_text(str(other.pid))
        assert not node.running()
        node.stop(grace_s=1)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_services_up_starts_nothing_for_an_address_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import localservices

    started: list[list[str]] = []
    monkeypatch.setattr(localservices, "STATE", tmp_path)
    monkeypatch.setattr(localservices, "docker_available", lambda: False)
    monkeypatch.setattr(localservices, "start_local", lambda need, *_: started.append(need))
    monkeypatch.setattr(localservices, "wait_for", lambda *a, **k: None)
    monkeypatch.setattr(localservices, "cluster_up", lambda: None)
    monkeypatch.setenv("RIVULET_KAFKA_BOOTSTRAP", "nonexistent.invalid:19092")
    monkeypatch.setenv("RIVULET_REDIS_URL", "redis://nonexistent.invalid:16399/0")
    with pytest.raises(SystemExit, match=r"nonexistent\.invalid"):
        localservices.up()
    assert started == []
