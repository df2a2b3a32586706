"""The learner's lease keeper on real Redis and the one-node Redis Cluster: a lease that lapsed while nobody
took it is kept (the epoch moves by one), one another learner held meanwhile is lost; a standby takes an
orphan only once it has been free for half a TTL and nobody wants it; a spec held as a standby is given
back when its own learner wants it. The keepers' clock is the test's; the leases' TTLs are Redis's own."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from streaming.learning.leases import RedisLeases
from streaming.learning.registry import RedisRegistry
from streaming.runtime.lease_keeper import LeaseKeeper
from streaming.settings import Settings
from tests.features.test_redis_cluster import cluster  # noqa: F401 (a fixture)
from tests.support.learning import SIGNER

pytestmark = pytest.mark.integration

SHORT, LONG = 300, 60_000  # a lease the test lets lapse; one that never lapses within a test


@pytest.fixture(params=["redis", "cluster"])
def client(request: pytest.FixtureRequest) -> redis.Redis:
    return request.getfixturevalue("redis_client" if request.param == "redis" else "cluster")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def keeper(
    client: redis.Redis, prefix: str, owner: str, specs: list[str], clock: Clock, ttl: int = LONG, **kw: Any
) -> LeaseKeeper:
    leases = RedisLeases(client, prefix, ttl, owner=owner)
    return LeaseKeeper(leases, RedisRegistry(client, prefix, signer=SIGNER), specs, clock=clock, **kw)


def lapse(client: redis.Redis, prefix: str, spec: str) -> None:
    """Wait (Redis's clock) until ``spec``'s lease expired, its holder not renewing."""
    deadline = time.monotonic() + 30
    while client.exists(f"{prefix}model:{{{spec}}}:lease"):
        assert time.monotonic() < deadline, "the lease never lapsed"
        time.sleep(0.02)


def fence(client: redis.Redis, prefix: str, name: str) -> int:
    return int(client.get(f"{prefix}model:{{{name}}}:fence") or 0)


def test_a_lapsed_lease_nobody_took_is_kept_one_another_held_is_lost(
    client: redis.Redis, settings: Settings
) -> None:
    p, clock = settings.redis_prefix, Clock()
    a = keeper(client, p, "a", ["x", "y"], clock, SHORT)
    assert a.turn(0).taken == ["x", "y"] and a.held == {"x": 1, "y": 1}
    lapse(client, p, "x")
    lapse(client, p, "y")
    b = keeper(client, p, "b", ["x"], clock)
    assert b.turn(0).taken == ["x"]  # x: b's now (epoch 2); y: nobody's
    turn = a.turn(1)
    assert list(turn.lost) == ["x"] and "b#2" in turn.lost["x"]  # another learner holds it
    assert a.held == {"y": 2}  # y again, epoch + 1: nobody held it in between, a's state is the newest
    assert fence(client, p, "y") == 2 and fence(client, p, "x") == 2
    assert turn.taken == []  # x is not taken again in the turn that lost it (its state is dropped first)

    b.release("x")
    lapse(client, p, "y")  # and now y is taken by another learner in between, then given up
    c = keeper(client, p, "c", ["y"], clock)
    assert c.turn(1).taken == ["y"]
    c.release("y")
    turn = a.turn(2)
    assert "y" in turn.lost and "epochs 3..3" in turn.lost["y"]  # c's epoch came between: a's state is stale
    assert turn.taken == ["x"] and a.held == {"x": 3}  # x free again: a's own, taken at once


def test_a_standby_takes_an_orphan_after_a_whole_ttl_and_gives_it_back_when_wanted(
    client: redis.Redis, settings: Settings
) -> None:
    p, clock = settings.redis_prefix, Clock()
    ttl = LONG / 1000  # the grace, on the keepers' clock
    standby = keeper(client, p, "s", ["x", "y"], clock, own={"x"})
    assert standby.turn(0).taken == ["x"]  # its own at once; y (the other shard's) only as an orphan
    assert standby.turn(ttl * 0.45).taken == []  # y free, but not for half a TTL yet
    assert standby.turn(ttl * 0.5).taken == ["y"]
    assert standby.turn(ttl * 1.5).give_back == []  # nobody wants y

    owner = keeper(client, p, "o", ["x", "y"], clock, own={"y"})
    assert owner.turn(2).taken == []  # y is held: it says it wants it
    assert standby.turn(3).give_back == ["y"]  # y is not the standby's own: it gives it back
    standby.release("y")
    assert owner.turn(3).taken == ["y"]
    assert standby.turn(4).taken == [] and "y" not in standby.held

    # an orphan that its own learner wants is left to it, however long it has been free
    owner.release("y")
    client.set(f"{p}model:{{y}}:wanted", "o", px=LONG)  # as owner.leases.want("y"), for longer
    lonely = keeper(client, p, "l", ["y"], clock, own=set())
    assert lonely.turn(10).taken == [] and lonely.turn(10 + 2 * ttl).taken == []
    assert standby.turn(5).taken == [] and standby.turn(5 + 2 * ttl).taken == []


def test_without_standby_a_learner_takes_only_its_own(client: redis.Redis, settings: Settings) -> None:
    p, clock = settings.redis_prefix, Clock()
    k = keeper(client, p, "k", ["x", "y"], clock, own={"x"}, standby=False)
    assert k.turn(0).taken == ["x"]
    assert k.turn(1000).taken == [] and k.held == {"x": 1}  # y free for ever: not its own
