"""Fencing in the real registry, on Redis and on the one-node Redis Cluster: leases with epochs, every write
of a learner whose lease was taken over refused (and nothing changed in Redis), the new holder's fence raise
covering the models the zombie was about to write, and version numbers without gaps."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from streaming.learning.fencing import Fenced
from streaming.learning.keys import SigningKey
from streaming.learning.leases import RedisLeases
from streaming.learning.registry import RedisRegistry
from streaming.settings import Settings
from tests.features.test_redis_cluster import cluster  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

SIGNER = SigningKey(bytes(range(7, 39)))
TTL_MS = 300


@pytest.fixture(params=["redis", "cluster"])
def client(request: pytest.FixtureRequest) -> redis.Redis:
    """A client of the test's Redis: the single node, or the Redis Cluster's only node (all slots)."""
    return request.getfixturevalue("redis_client" if request.param == "redis" else "cluster")


def everything(client: redis.Redis, prefix: str) -> dict[bytes, Any]:
    """Every key under ``prefix`` with its serialised value (DUMP: independent of TTLs)."""
    return {k: client.dump(k) for k in sorted(client.scan_iter(match=f"{prefix}*", count=1000))}


def take_over(leases: RedisLeases, spec: str) -> int:
    """Acquire ``spec`` once the other holder's lease lapses (it is not renewed)."""
    deadline = time.monotonic() + 30
    while (epoch := leases.acquire(spec)) is None:
        assert time.monotonic() < deadline, "the lapsed lease was never free"
        time.sleep(0.02)
    return epoch


def decision(i: int) -> dict[str, Any]:
    return {"id": f"d{i}", "ts": 1_000 + i, "kind": "challenger"}


def test_leases_have_one_holder_and_a_new_epoch_per_acquisition(
    client: redis.Redis, settings: Settings
) -> None:
    p = settings.redis_prefix
    a, b = RedisLeases(client, p, TTL_MS, owner="a"), RedisLeases(client, p, TTL_MS, owner="b")
    assert a.acquire("m") == 1
    assert b.acquire("m") is None and not b.renew("m")  # held by a; b never held it
    b.release("m")  # not b's: nothing happens
    assert a.holder("m") == "a#1" and a.renew("m")
    a.release("m")
    assert a.holder("m") is None
    assert b.acquire("m") == 2 and b.holder("m") == "b#2"
    assert take_over(a, "m") == 3  # b stopped renewing
    assert not b.renew("m")  # its lease is a's now
    assert a.acquire("other") == 1  # epochs are per spec


def test_every_write_of_a_stale_epoch_is_refused_and_changes_nothing(
    client: redis.Redis, settings: Settings
) -> None:
    p = settings.redis_prefix
    zombie_leases = RedisLeases(client, p, TTL_MS, owner="zombie")
    zombie = RedisRegistry(client, p, signer=SIGNER)
    zombie.hold("m", zombie_leases.acquire("m") or 0)
    for i in range(3):
        zombie.save("m", {"w": i}, {"n": i})
    zombie.save("m~100", {"w": 0}, {})
    zombie.record("m", {"t": 1})
    zombie.record_decision("m", decision(0))
    zombie.set_champion("m", "m~100")
    zombie.fences.write("m~400", [])  # born under its epoch, not written yet

    heir = RedisRegistry(client, p, signer=SIGNER)
    epoch = take_over(RedisLeases(client, p, TTL_MS, owner="heir"), "m")
    assert epoch == 2
    heir.hold("m", epoch)  # raises the fences of m, m~100 (listed) and m~400 (a member) to 2
    before = everything(client, p)

    writes = {
        "save": lambda: zombie.save("m", {"w": 9}, {}),
        "save challenger": lambda: zombie.save("m~100", {"w": 9}, {}),
        "save born challenger": lambda: zombie.save("m~400", {"w": 9}, {}),
        "save new challenger": lambda: zombie.save("m~500", {"w": 9}, {}),  # born after the takeover
        "record": lambda: zombie.record("m", {"t": 2}),
        "decision": lambda: zombie.record_decision("m", decision(1)),
        "champion": lambda: zombie.set_champion("m", "m"),
        "set current": lambda: zombie.set_current("m", 1),
        "delete": lambda: zombie.delete("m~100"),
        "replace": lambda: zombie._replace("m", 1, zombie._blob("m", 2) or b""),
    }
    for what, write in writes.items():
        with pytest.raises(Fenced) as refused:
            write()
        assert refused.value.epoch == 1, what
        assert "is fenced" in str(refused.value) and "another learner owns it" in str(refused.value)
        assert everything(client, p) == before, f"{what}: a refused write changed Redis"

    # the heir writes; the versions go on from the zombie's last one, without a gap
    assert heir.save("m", {"w": 3}, {"n": 3}) == 4
    assert heir.save("m~400", {"w": 1}, {}) == 1
    assert [(v.version, v.header["epoch"]) for v in heir.versions("m")] == [(4, 2), (3, 1), (2, 1), (1, 1)]
    assert heir.load("m", 4).state == {"w": 3}
    heir.record_decision("m", decision(2))
    assert [d["id"] for d in heir.decisions("m")] == ["d0", "d2"]
    heir.set_champion("m", "m")
    assert heir.champion("m") == "m"
    heir.delete("m~100")
    assert "m~100" not in heir.names()
    assert not client.sismember(f"{p}model:{{m}}:members", "m~100")


def test_a_writer_that_holds_no_lease_is_refused(client: redis.Redis, settings: Settings) -> None:
    p = settings.redis_prefix
    reg = RedisRegistry(client, p, signer=SIGNER)
    reg.hold("m", 1)
    with pytest.raises(Fenced, match="holds no lease"):
        reg.save("other", {}, {})
    reg.release("m")
    with pytest.raises(Fenced, match="holds no lease"):
        reg.save("m", {}, {})
    assert everything(client, p) == {f"{p}model:{{m}}:fence".encode(): client.dump(f"{p}model:{{m}}:fence")}


def test_an_unfenced_registry_writes_as_before(client: redis.Redis, settings: Settings) -> None:
    """An operator's registry (``rivulet models ...``) holds no spec: its writes are not fenced."""
    reg = RedisRegistry(client, settings.redis_prefix, signer=SIGNER)
    assert [reg.save("m", {"w": i}, {}) for i in range(3)] == [1, 2, 3]
    reg.set_current("m", 2)
    assert reg.current_version("m") == 2 and "epoch" not in reg.versions("m")[0].header
