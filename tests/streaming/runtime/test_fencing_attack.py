"""Hostile values in a spec's lease, epoch, fence and wanted keys, and hostile lease settings, against the
lease keeper on real Redis and the one-node Redis Cluster: a spec whose keys hold garbage is not taken and
nothing is written over them, the learner's other specs go on, no exception leaves a turn, and a lease key
that would never expire (no TTL) lapses after one lease period, so no spec stays orphaned."""

from __future__ import annotations

import pydantic
import pytest
import redis

from streaming.clients import redis_client
from streaming.learning.fencing import Command, Fenced, Fences
from streaming.learning.leases import RedisLeases
from streaming.runtime.learner import LearnerWorker
from streaming.settings import Settings
from tests.features.test_redis_cluster import cluster  # noqa: F401 (a fixture)
from tests.streaming.runtime.test_lease_keeper import SHORT, Clock, fence, keeper, lapse
from tests.support.fencing_drill import send
from tests.support.learning import LEARNER_IDLE_S, delayed_stream, registry
from tests.support.model_defs import TRIO

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", "cluster"])
def client(request: pytest.FixtureRequest) -> redis.Redis:
    return request.getfixturevalue("redis_client" if request.param == "redis" else "cluster")


def key(prefix: str, spec: str, suffix: str) -> str:
    return f"{prefix}model:{{{spec}}}:{suffix}"


def test_a_fence_holding_garbage_is_refused_not_overwritten(client: redis.Redis, settings: Settings) -> None:
    p = settings.redis_prefix
    client.set(key(p, "x", "fence"), "garbage")
    a = keeper(client, p, "a", ["x", "y"], Clock())
    turn = a.turn(0)
    assert turn.taken == ["y"] and a.held == {"y": 1}  # x refused, y goes on
    assert client.get(key(p, "x", "fence")) == b"garbage"  # nothing written over it
    assert not client.exists(key(p, "x", "lease"))  # the lease taken for x was given back at once


def test_a_spec_whose_fence_holds_garbage_costs_one_epoch_per_lease_period_until_repaired(
    client: redis.Redis, settings: Settings
) -> None:
    """Before, every turn (a third of a TTL; a second while it held nothing) took x's lease again, a new
    epoch each time, and logged that a newer holder existed: the epoch counter ran up for as long as the
    garbage stayed. Now x is tried again once per lease period, and taken once its fence is repaired."""
    p, clock = settings.redis_prefix, Clock()
    client.set(key(p, "x", "fence"), "garbage")
    a = keeper(client, p, "a", ["x", "y"], clock, SHORT)
    for now in (0.0, 0.1, 0.2, 0.29):
        assert a.turn(now).taken == ([] if now else ["y"]) and "x" not in a.held
        assert client.get(key(p, "x", "epoch")) == b"1"  # one take, not one per turn
    assert a.turn(0.3).taken == [] and client.get(key(p, "x", "epoch")) == b"2"  # a lease period later
    client.delete(key(p, "x", "fence"))  # repaired
    assert a.turn(0.4).taken == [] and client.get(key(p, "x", "epoch")) == b"2"
    assert a.turn(0.6).taken == ["x"] and a.held["x"] == 3 and fence(client, p, "x") == 3


def test_a_fence_of_the_wrong_type_is_refused(client: redis.Redis, settings: Settings) -> None:
    p = settings.redis_prefix
    client.hset(key(p, "x", "fence"), "f", "1")
    a = keeper(client, p, "a", ["x", "y"], Clock())
    assert a.turn(0).taken == ["y"] and "x" not in a.held
    assert client.type(key(p, "x", "fence")) == b"hash"


@pytest.mark.parametrize("epoch", ["abc", "-3", "1.5", "9007199254740991", "99999999999999999999"])
def test_an_epoch_counter_holding_garbage_is_not_taken(
    client: redis.Redis, settings: Settings, epoch: str
) -> None:
    p = settings.redis_prefix
    client.set(key(p, "x", "epoch"), epoch)
    a = keeper(client, p, "a", ["x", "y"], Clock())
    assert a.turn(0).taken == ["y"] and "x" not in a.held
    assert client.get(key(p, "x", "epoch")) == epoch.encode()  # not incremented
    assert not client.exists(key(p, "x", "lease"))


def test_an_epoch_counter_of_the_wrong_type_is_not_taken(client: redis.Redis, settings: Settings) -> None:
    p = settings.redis_prefix
    client.rpush(key(p, "x", "epoch"), "1")
    a = keeper(client, p, "a", ["x", "y"], Clock())
    assert a.turn(0).taken == ["y"] and "x" not in a.held


def test_a_large_epoch_is_held_and_renewed(client: redis.Redis, settings: Settings) -> None:
    """Lua writes a number >= 1e14 as ``1e+14``: the lease's value must still be the one its holder renews."""
    p = settings.redis_prefix
    client.set(key(p, "x", "epoch"), str(10**15 - 1))
    a = keeper(client, p, "a", ["x"], Clock())
    assert a.turn(0).taken == ["x"] and a.held == {"x": 10**15}
    assert client.get(key(p, "x", "lease")) == f"a#{10**15}".encode()
    turn = a.turn(100)
    assert not turn.lost and a.held == {"x": 10**15}  # renewed, not lost
    assert fence(client, p, "x") == 10**15


def test_a_lease_of_the_wrong_type_neither_crashes_nor_orphans_the_spec(
    client: redis.Redis, settings: Settings
) -> None:
    p = settings.redis_prefix
    client.hset(key(p, "x", "lease"), "owner", "ghost")  # no TTL
    a = keeper(client, p, "a", ["x", "y"], Clock(), SHORT)
    b = keeper(client, p, "b", ["x", "y"], Clock(), SHORT, own={"y"})  # x is not b's: b is its standby
    assert a.turn(0).taken == ["y"] and "x" not in a.held
    assert b.turn(0).taken == [] and not b.held
    lapse(client, p, "x")  # given one lease period to live
    assert a.turn(1).taken == ["x"] and a.held["x"] == 1


def test_a_lease_without_a_ttl_lapses_after_one_lease_period(client: redis.Redis, settings: Settings) -> None:
    p = settings.redis_prefix
    client.set(key(p, "x", "lease"), "ghost#host/1/ab#7")  # an owner with '#', no TTL: never renewed
    a = keeper(client, p, "a", ["x"], Clock(), SHORT)
    assert a.turn(0).taken == [] and not a.held
    lapse(client, p, "x")
    assert a.turn(1).taken == ["x"] and a.held == {"x": 1}


def test_a_wanted_key_of_the_wrong_type_does_not_stop_a_standby(
    client: redis.Redis, settings: Settings
) -> None:
    p = settings.redis_prefix
    b = keeper(client, p, "b", ["x", "y"], Clock(), own={"y"})
    assert b.turn(0).taken == ["y"]
    assert b.turn(100).taken == ["x"]  # x free for half a TTL (seen free at 0): taken
    client.hset(key(p, "x", "wanted"), "who", "a")
    turn = b.turn(300)
    assert turn.give_back == [] and set(b.held) == {"x", "y"}  # nobody readable wants it: kept


def test_two_keepers_with_the_same_owner_never_both_hold(client: redis.Redis, settings: Settings) -> None:
    p = settings.redis_prefix
    a = keeper(client, p, "same", ["x"], Clock())
    b = keeper(client, p, "same", ["x"], Clock())
    assert a.turn(0).taken == ["x"]
    assert b.turn(0).taken == [] and not b.held
    assert not a.turn(100).lost and a.held == {"x": 1}


@pytest.mark.parametrize("ms", [0, 1, 99, 10**19, 86_400_001])
def test_a_lease_period_outside_bounds_is_one_settings_error(ms: int) -> None:
    with pytest.raises(pydantic.ValidationError, match="learner_lease_ms"):
        Settings(learner_lease_ms=ms)


def test_a_learner_with_one_spec_s_fence_garbled_learns_the_others_and_writes_none_of_it(
    topics: Settings,
) -> None:
    """End to end on Kafka: t1's fence holds garbage before the learner starts; it learns t2 and t3 to the
    end, writes no version of t1 and leaves its fence as it was, and stops cleanly when idle."""
    s, p = topics, topics.redis_prefix
    _, records = delayed_stream(600, 25, function=3, seed=5)
    features = sum(1 for role, _ in records if role == "features")
    send(s, records)
    raw = redis_client(s)
    raw.set(key(p, "t1", "fence"), "garbage")
    worker = LearnerWorker(s, TRIO, registry=registry(s))
    worker.run(max_idle_s=LEARNER_IDLE_S, install_signals=False)
    reg = registry(s)
    assert not list(reg.versions("t1")) and raw.get(key(p, "t1", "fence")) == b"garbage"
    for name in ("t2", "t3"):
        newest = max(reg.versions(name), key=lambda v: v.version)
        assert newest.header["n_learned"] == features, name


def test_a_members_set_of_the_wrong_type_is_refused(client: redis.Redis, settings: Settings) -> None:
    p = settings.redis_prefix
    client.set(key(p, "x", "members"), "garbage")
    a = keeper(client, p, "a", ["x", "y"], Clock())
    assert a.turn(0).taken == ["y"] and "x" not in a.held
    assert client.get(key(p, "x", "members")) == b"garbage" and not client.exists(key(p, "x", "lease"))


def test_a_birth_into_a_garbled_members_set_is_fenced_and_writes_nothing(
    client: redis.Redis, settings: Settings
) -> None:
    """The members set garbled after the spec was held: a challenger's first write is refused as fenced."""
    p = settings.redis_prefix
    fences = Fences(client, lambda name, suffix: key(p, name, suffix))
    epoch = RedisLeases(client, p, 60_000, owner="a").acquire("x")
    assert epoch == 1
    fences.hold("x", epoch, [])
    client.delete(key(p, "x", "members"))
    client.set(key(p, "x", "members"), "garbage")
    with pytest.raises(Fenced, match="garbage or another type"):
        fences.write("x~1", [Command("SET", [key(p, "x~1", "v")], "1")])
    assert not client.exists(key(p, "x~1", "v"))
