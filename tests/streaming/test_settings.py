"""One settings object, read from RIVULET_* variables, with loopback defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streaming.settings import Settings, kafka_address

pytestmark = pytest.mark.unit


def test_defaults_point_at_loopback() -> None:
    s = Settings(_env_file=None)
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.redis_url.startswith("redis://127.0.0.1:")
    assert s.topics.all() == [
        "rivulet.events",
        "rivulet.labels",
        "rivulet.features",
        "rivulet.predictions",
        "rivulet.dead-letters",
    ]
    assert s.signing_key is None and s.verify_keys == []


def test_values_come_from_rivulet_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVULET_KAFKA_BOOTSTRAP", "k1:9092, k2:9092")
    monkeypatch.setenv("RIVULET_TOPIC_PREFIX", "prod.")
    monkeypatch.setenv("RIVULET_PARTITIONS", "12")
    monkeypatch.setenv("RIVULET_ADMIN_API_KEYS", "a, b,,c")
    monkeypatch.setenv("RIVULET_SIGNING_KEY", "s3cret")
    monkeypatch.setenv("RIVULET_VERIFY_KEYS", "pubA, pubB")
    monkeypatch.setenv("RIVULET_LOG_LEVEL", "info")
    s = Settings()
    assert s.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert s.topics.dead_letters == "prod.dead-letters"
    assert s.partitions == 12
    assert s.admin_api_keys == ["a", "b", "c"]
    assert s.signing_key is not None
    assert s.signing_key.get_secret_value() == "s3cret"
    assert s.verify_keys == ["pubA", "pubB"]
    assert "s3cret" not in repr(s)
    assert s.log_level == "INFO"


def test_invalid_values_are_refused_with_the_field_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVULET_PARTITIONS", "0")
    with pytest.raises(ValidationError, match="partitions"):
        Settings()


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_signing_key_is_no_key(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """An empty ``RIVULET_SIGNING_KEY`` must be unset (the learner refuses), not a key of no bytes."""
    monkeypatch.setenv("RIVULET_SIGNING_KEY", value)
    assert Settings().signing_key is None


def test_anonymous_serving_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().allow_anonymous is False
    assert "loopback" in (Settings.model_fields["allow_anonymous"].description or "")
    monkeypatch.setenv("RIVULET_ALLOW_ANONYMOUS", "false")  # Compose's default
    assert Settings().allow_anonymous is False
    monkeypatch.setenv("RIVULET_ALLOW_ANONYMOUS", "true")
    assert Settings().allow_anonymous is True


@pytest.mark.parametrize(
    "field",
    [
        "verify_keys",
        "admin_api_keys",
        "ingest_api_keys",
        "scoring_api_keys",
        "read_api_keys",
        "trusted_hosts",
    ],
)
def test_every_list_setting_is_comma_separated(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    """Each list setting reads ``a, b,,c`` as three items (not JSON), and is empty when unset."""
    assert getattr(Settings(), field) == []
    monkeypatch.setenv(f"RIVULET_{field.upper()}", " a, b,,c ")
    assert getattr(Settings(), field) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("bootstrap", "address"),
    [
        ("k1:9093,k2:9092", ("k1", 9093)),
        (" broker ", ("broker", 9092)),
    ],
)
def test_the_first_kafka_address_is_parsed_once_here(bootstrap: str, address: tuple[str, int]) -> None:
    assert Settings(kafka_bootstrap=bootstrap).kafka_address == address


def test_an_ipv6_bootstrap_is_probed_without_brackets() -> None:
    assert kafka_address("[::1]:9093") == ("::1", 9093)


def test_min_insync_replicas_above_the_replication_factor_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """No acks=all write could ever succeed on such a topic: refused when the settings are read."""
    monkeypatch.setenv("RIVULET_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("RIVULET_MIN_INSYNC_REPLICAS", "2")
    assert (Settings().replication_factor, Settings().min_insync_replicas) == (3, 2)
    monkeypatch.setenv("RIVULET_MIN_INSYNC_REPLICAS", "4")
    with pytest.raises(ValidationError, match=r"min_insync_replicas \(4\) exceeds replication_factor \(3\)"):
        Settings()
    monkeypatch.delenv("RIVULET_MIN_INSYNC_REPLICAS")
    assert Settings().min_insync_replicas is None  # unset: the broker's default
