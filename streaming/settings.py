"""Rivulet's one settings object, read once per process from ``RIVULET_*`` environment variables.

Every process builds a :class:`Settings` at start (``Settings()``) and passes it down; nothing reads
the environment anywhere else. Defaults point at loopback services, so a developer machine with
``scripts/services up`` needs no configuration.

>>> s = Settings(topic_prefix="demo.", admin_api_keys="k1, k2")
>>> s.topics.events
'demo.events'
>>> s.admin_api_keys
['k1', 'k2']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlparse

from pydantic import BeforeValidator, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from streaming.learning.shards import Shard

__all__ = ["CommaList", "Settings", "Topics", "kafka_address", "redis_address"]


@dataclass(frozen=True, slots=True)
class Topics:
    """The full names of Rivulet's topics under one prefix."""

    events: str
    labels: str
    features: str
    predictions: str
    dead_letters: str

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(
            events=f"{prefix}events",
            labels=f"{prefix}labels",
            features=f"{prefix}features",
            predictions=f"{prefix}predictions",
            dead_letters=f"{prefix}dead-letters",
        )

    def all(self) -> list[str]:
        return [self.events, self.labels, self.features, self.predictions, self.dead_letters]


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _split_text(value: object) -> object:
    return _split(value) if isinstance(value, str) else value


# a comma-separated list in the environment (pydantic-settings would otherwise expect JSON)
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_text)]


def _comma_list(description: str) -> list[str]:
    """A :data:`CommaList` field, empty by default."""
    return Field(default_factory=list, description=description)


class Settings(BaseSettings):
    """Configuration for every Rivulet process. Field ``foo`` is read from ``RIVULET_FOO``."""

    model_config = SettingsConfigDict(env_prefix="RIVULET_", extra="ignore", frozen=True)

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated.")
    topic_prefix: str = Field("rivulet.", description="Prefix of every Rivulet topic name.")
    partitions: int = Field(3, ge=1, description="Partitions of topics created by `rivulet topics create`.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of created topics.")
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of created topics (unset: the broker's default); with acks=all a "
        "write fails unless this many replicas have it. At most replication_factor.",
    )
    retention_ms: int = Field(
        7 * 24 * 3600 * 1000, ge=-1, description="Retention of created topics (ms, -1 keeps forever)."
    )
    kafka_request_timeout_ms: int = Field(15_000, ge=1, description="Kafka request timeout.")
    kafka_delivery_timeout_ms: int = Field(
        30_000, ge=1, description="Upper bound on reporting a send as delivered or failed."
    )
    kafka_max_block_ms: int = Field(
        10_000, ge=0, description="How long a send may block on metadata or a full buffer."
    )
    producer_linger_ms: int = Field(5, ge=0, description="Producer linger: wait this long to fill batches.")
    producer_batch_bytes: int = Field(256 * 1024, ge=1024, description="Producer batch size per partition.")
    producer_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none", description="Producer compression codec."
    )
    max_event_bytes: int = Field(
        1_000_000,
        ge=1,
        description="Largest serialised event accepted (below the broker's message.max.bytes).",
    )

    # Redis
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (online store and registry).")
    redis_prefix: str = Field("rivulet:", description="Prefix of every Redis key Rivulet writes.")
    redis_cluster: bool = Field(
        False,
        description="redis_url is a node of a Redis Cluster (the feature store connects as a cluster).",
    )
    redis_socket_timeout_s: float = Field(2.0, gt=0, description="Redis socket read/write timeout.")
    redis_connect_timeout_s: float = Field(2.0, gt=0, description="Redis connect timeout.")
    redis_failover_s: float = Field(
        20.0,
        ge=0,
        description="How long the feature worker retries a Redis operation that failed as a Redis Cluster "
        "fails over (connection lost, CLUSTERDOWN, MOVED) before its batch fails; the API does not wait.",
    )
    near_cache: bool = Field(
        True,
        description="The API keeps recent online vectors in memory, invalidated by Redis (client-side "
        "caching, CLIENT TRACKING): a vector written to Redis is served old until its invalidation arrives "
        "(under a millisecond on loopback). Off on a Redis Cluster.",
    )
    near_cache_entries: int = Field(
        100_000, ge=1, description="Most vectors the API's near cache holds (least recently used out first)."
    )
    near_cache_doorkeeper: bool = Field(
        True,
        description="The near cache keeps a vector on its second miss, not its first (the hashes of the keys "
        "missed once are remembered, up to near_cache_entries of them): reads spread over more entities than "
        "the cache holds cost what they cost without it.",
    )
    near_cache_max_mb: float = Field(
        256.0,
        gt=0,
        description="Most memory the near cache's vectors take, estimated from their values (least recently "
        "used out first; a vector larger than this is not cached).",
    )
    near_cache_max_age_s: float = Field(
        60.0,
        gt=0,
        description="Longest a vector stays in the near cache without being read from Redis again.",
    )

    # Security
    signing_key: SecretStr | None = Field(
        None,
        description="The learner's Ed25519 private key (base64 of its 32-byte seed), which signs model "
        "snapshots. Only the learner holds it; readers hold public keys.",
    )
    verify_keys: CommaList = _comma_list(
        "Ed25519 public keys (base64 of 32 bytes), comma separated: the keyring of signers whose snapshots "
        "are accepted. Required by every process that loads a snapshot."
    )
    admin_api_keys: CommaList = _comma_list(
        "API keys of the admin scope (rollback, promote), comma separated."
    )
    ingest_api_keys: CommaList = _comma_list(
        "API keys of the ingest scope (POST /v1/events, /v1/labels: writes training data)."
    )
    scoring_api_keys: CommaList = _comma_list("API keys of the score scope (predict, batch predict).")
    read_api_keys: CommaList = _comma_list(
        "API keys of the read scope (model listings, dashboard data, /metrics)."
    )
    allow_anonymous: bool = Field(
        False,
        description="Let the API start with no API key of any scope on an address other than loopback "
        "(anyone who reaches it may score, ingest training data and read). Off: it refuses to start.",
    )
    trusted_hosts: CommaList = _comma_list(
        "Host headers the API answers (comma separated; `*` for any). Default: the bind address, localhost, "
        "127.0.0.1 and ::1."
    )

    # Feature processor
    features_module: str = Field(
        "features.examples", description="Module with the feature views (`pkg.module` or `pkg.module:ATTR`)."
    )
    features_batch_size: int = Field(
        5000,
        ge=1,
        description="Most events per batch in the feature worker (was 2,000). Only a backlog fills a batch: "
        "larger ones serialise each busy entity's state once for more of its events (BENCHMARKS.md); the "
        "worker holds up to twice this many records read ahead.",
    )
    features_cache_entities: int = Field(
        100_000, ge=0, description="Entity states a feature worker keeps in memory between batches (0: none)."
    )
    features_batch_wait_ms: int = Field(
        2,
        ge=1,
        description="A feature batch is taken when no event came for this long, or 4 times it passed (was 5: "
        "at 2,000 events/s 2 ms halved the freshness p50, 45 -> 26 ms, and lowered the p99 at 2,000 and "
        "5,000/s; in a backlog batches fill to their size whatever the wait; BENCHMARKS.md).",
    )
    features_fetch_wait_ms: int = Field(
        20,
        ge=1,
        description="Longest a feature worker's Kafka fetch waits for records (Faust's own: 1,500 ms, which "
        "at 2,000 events/s left a standing 1.4 s delay; see streaming/runtime/faust_fetch.py). An idle "
        "worker makes one empty fetch per wait.",
    )
    features_native: bool | None = Field(
        None,
        description="Whether feature workers apply events in order through the compiled engine path "
        "(features._native): unset, where the install built it; false, never (the generated Python path, "
        "the same results); true, required (a worker without it refuses to start).",
    )
    features_gc_full_every: int = Field(
        1_000,
        ge=1,
        le=1_000_000,
        description="A feature worker runs Python's full garbage collection after this many of its "
        "middle-generation ones (Python's default: 10; each full pass walks every cached entity state, "
        "about 250 ms: at 10 one every few seconds at 2,000 events/s, the freshness p99).",
    )
    features_max_ahead_ms: int = Field(
        86_400_000,
        ge=0,
        description="An event this far ahead of its Kafka record's time is dead-lettered 'future' "
        "(it would make every later event of its entity late).",
    )
    features_session_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A feature worker that stops heartbeating loses its partitions after this long.",
    )

    # Learner
    models_module: str = Field(
        "streaming.learning.examples",
        description="Module with the model specs (`pkg.module` or `pkg.module:ATTR`).",
    )
    learner_lease_ms: int = Field(
        10_000,
        ge=100,
        le=86_400_000,
        description="A learner's lease of its models (ms, 100 .. one day): renewed every third of it; a "
        "standby learner takes the models over once it lapses, and the registry refuses the former holder's "
        "writes.",
    )
    learner_shard: str | None = Field(
        None,
        description="`I/N`: this learner is shard I of N (`rivulet learn run --shard`): it takes the specs "
        "of its shard (the specs ordered by a stable hash of their names, dealt round-robin) and, as a "
        "standby, any other one left without a learner. Unset: every spec is its own.",
    )
    learner_standby: bool = Field(
        True,
        description="A learner takes over specs left without a learner (besides its own) and, having lost "
        "every spec, waits for them again; false: it takes its own specs only and exits 1 once it lost them.",
    )
    learner_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the learner's Prometheus metrics (`rivulet learn run --metrics-port`; 0: off).",
    )

    # MLflow (the optional extra rivulet[mlflow]; off unless a tracking URI is set)
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (`http://host:5000`, `sqlite:///mlflow.db`): the learner logs each "
        "model version it checkpoints as an MLflow run and registered model version, and moves the alias "
        "`champion` to the version served. Unset: nothing is logged.",
    )
    mlflow_registry_uri: str | None = Field(
        None, description="MLflow model registry URI (unset: the tracking URI)."
    )
    mlflow_experiment: str = Field(
        "rivulet", min_length=1, description="The MLflow experiment the learner's runs go to."
    )
    mlflow_artifact_location: str | None = Field(
        None,
        description="Artifact location of the experiment when Rivulet creates it (unset: the server's "
        "default).",
    )
    mlflow_every: int = Field(
        1,
        ge=1,
        description="Log every Nth version of each model (version numbers divisible by N); the version "
        "served is always logged, for the alias.",
    )
    mlflow_queue: int = Field(
        10_000,
        ge=1,
        description="Checkpoints waiting for the MLflow thread, at most; beyond, one is counted as dropped "
        "and the thread reads the registry for what it missed.",
    )
    mlflow_retry_s: float = Field(
        5.0, gt=0, description="Wait between attempts while MLflow fails (the learner never waits)."
    )
    mlflow_reconcile_s: float = Field(
        30.0,
        gt=0,
        description="How often the MLflow thread checks each spec's alias `champion` against the version "
        "served (a promotion or rollback by hand moves it between checkpoints).",
    )
    mlflow_flush_s: float = Field(
        5.0, ge=0, description="At a clean stop, how long the learner still tries to log what waits."
    )
    mlflow_timeout_s: float = Field(
        10.0, gt=0, description="Timeout of one HTTP request to an MLflow server (no client retries)."
    )

    # Scoring API
    serve_host: str = Field("127.0.0.1", description="Address `rivulet serve` listens on.")
    serve_port: int = Field(8000, ge=1, le=65535, description="Port `rivulet serve` listens on.")
    serve_workers: int = Field(1, ge=1, description="uvicorn worker processes.")
    serve_poll_s: float = Field(
        5.0, gt=0, description="Registry poll interval (besides pub/sub notifications)."
    )
    serve_fallback: bool = Field(
        False, description="With the feature store down, score from request fields alone instead of a 503."
    )
    max_request_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body accepted (413 above)."
    )
    serve_lag_s: float = Field(
        10.0,
        ge=0,
        description="How often the API measures each stage's lag from outside the stages (Kafka's end "
        "offsets against the feature group's offsets and the learner's checkpoints) for /metrics and the "
        "dashboard, on a background thread; 0: off.",
    )
    serve_lag_timeout_s: float = Field(
        5.0, gt=0, le=300, description="Timeout of each Kafka call of the API's lag measurement."
    )

    # Processes
    data_dir: str = Field(".rivulet", description="Local working directory of Rivulet processes.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("WARNING", description="Log level.")
    log_format: Literal["json", "console"] = Field("json", description="Log rendering.")

    @field_validator("signing_key", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        """An empty key (``RIVULET_SIGNING_KEY=``, or Compose's ``${...:-}``) is no key: unset, so the
        learner refuses to run rather than sign with nothing."""
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> Settings:
        """A topic whose min.insync.replicas exceeds its replicas takes no acks=all write at all.

        >>> Settings(replication_factor=3, min_insync_replicas=2).min_insync_replicas
        2
        """
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) exceeds replication_factor "
                f"({self.replication_factor}): no acks=all write could succeed"
            )
        return self

    @field_validator("learner_shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        """``I/N`` with ``0 <= I < N``, checked at start (an empty value is unset).

        >>> Settings(learner_shard="1/3").shard()
        Shard(index=1, count=3)
        """
        if value is None or not value.strip():
            return None
        from streaming.learning.shards import Shard

        return str(Shard.parse(value))

    def shard(self) -> Shard | None:
        """:attr:`learner_shard` parsed (None: every spec is the learner's own)."""
        from streaming.learning.shards import Shard

        return Shard.parse(self.learner_shard) if self.learner_shard else None

    @field_validator("kafka_bootstrap")
    @classmethod
    def _servers(cls, value: str) -> str:
        """Every server ``host[:port]`` with a port in 1..65535: a typo is one settings error at start,
        not a client's traceback (kafka-python's IndexError, ValueError) in whichever command runs."""
        servers = _split(value)
        if not servers:
            raise ValueError("no server given")
        for server in servers:
            host, colon, port = server.rpartition(":")
            if colon and not host.endswith("]") and ":" in host:
                raise ValueError(f"{server!r}: write an IPv6 address in brackets, [addr]:port")
            if colon and not (host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"{server!r} is not host:port with a port in 1..65535")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        """A URL redis-py takes: redis://, rediss:// or unix://, with a valid port."""
        parsed = urlparse(value)
        if parsed.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{value!r}: the scheme must be redis://, rediss:// or unix://")
        try:
            parsed.port  # noqa: B018  (raises for a port that is no number or out of range)
        except ValueError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
        return value

    @field_validator("mlflow_tracking_uri", "mlflow_registry_uri")
    @classmethod
    def _mlflow_uri(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A URI MLflow could use (:func:`streaming.tracking.uri.check_uri`): ``foo://``, a file where a
        store's directory must be is one settings error at start, not a tracker retrying forever. An empty
        or blank value is unset, as for every other setting (``RIVULET_MLFLOW_TRACKING_URI=`` in a Compose
        file or a pod spec turns tracking off; an empty registry URI: the tracking URI's registry)."""
        if value is None or not value.strip():
            return None
        registry = info.field_name == "mlflow_registry_uri"
        from streaming.tracking.uri import check_uri

        return check_uri(value, registry=registry)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)

    @property
    def max_message_bytes(self) -> int:
        """The ``max.message.bytes`` Rivulet's topics are created with (``streaming.ingest.topics``): a
        batch of records larger than this is refused by the broker.

        >>> Settings(max_event_bytes=1_000_000).max_message_bytes
        1004096
        """
        return self.max_event_bytes + 4096

    @property
    def bootstrap_servers(self) -> list[str]:
        """``kafka_bootstrap`` as a list (what every Kafka client takes)."""
        return _split(self.kafka_bootstrap)

    @property
    def kafka_address(self) -> tuple[str, int]:
        """The first bootstrap server as (host, port), for a reachability check.

        >>> Settings(kafka_bootstrap="k1:9093, k2:9092").kafka_address
        ('k1', 9093)
        """
        return kafka_address(self.kafka_bootstrap)

    @property
    def redis_address(self) -> tuple[str, int]:
        """The host and port of ``redis_url`` (defaults: loopback, 6379).

        >>> Settings(redis_url="redis://r1:7001/0").redis_address, Settings(redis_url="redis:///0").redis_address
        (('r1', 7001), ('127.0.0.1', 6379))
        """
        return redis_address(self.redis_url)


def kafka_address(bootstrap: str) -> tuple[str, int]:
    """The first server of a bootstrap list as (host, port): Kafka's port 9092 when none is given, loopback
    when no host is.

    >>> kafka_address("10.0.0.1:9094,10.0.0.2:9094"), kafka_address("broker"), kafka_address(":9095")
    (('10.0.0.1', 9094), ('broker', 9092), ('127.0.0.1', 9095))
    """
    first = (_split(bootstrap) or [""])[0]
    host, _, port = first.rpartition(":")
    if not port.isdigit() or host.endswith(":"):  # "broker", "[::1]": Kafka's default port
        host, port = first, "9092"
    return host.removeprefix("[").removesuffix("]") or "127.0.0.1", int(port)


def redis_address(url: str, default_port: int = 6379) -> tuple[str, int]:
    """(host, port) of a Redis URL: loopback when it names no host, ``default_port`` when no port.

    >>> redis_address("redis://10.0.0.5:6380/0"), redis_address("redis://127.0.0.1", default_port=7001)
    (('10.0.0.5', 6380), ('127.0.0.1', 7001))
    """
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port
