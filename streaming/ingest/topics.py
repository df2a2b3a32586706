"""Topic administration: create Rivulet's topics idempotently, list and describe them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import TracebackType

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streaming.clients import kafka_admin, kafka_consumer
from streaming.errors import TopicError
from streaming.settings import Settings

__all__ = ["PartitionInfo", "TopicAdmin", "TopicInfo"]


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    earliest: int
    latest: int

    @property
    def messages(self) -> int:
        return self.latest - self.earliest


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: list[PartitionInfo]
    configs: dict[str, str] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.partitions)


class TopicAdmin:
    """Creates, lists and describes topics with kafka-python's admin client."""

    def __init__(self, settings: Settings, *, client: KafkaAdminClient | None = None) -> None:
        self._settings = settings
        self._client = client if client is not None else kafka_admin(settings)

    def create(
        self,
        names: list[str] | None = None,
        *,
        partitions: int | None = None,
        replication_factor: int | None = None,
        configs: dict[str, str] | None = None,
    ) -> dict[str, bool]:
        """Create topics (default: all of Rivulet's) if absent; returns ``{name: created_now}``.

        Existing topics are left as they are, so calling this twice is safe. The replication factor is
        ``settings.replication_factor`` unless given, and ``settings.min_insync_replicas`` (when set) becomes
        each topic's ``min.insync.replicas``.
        """
        s = self._settings
        names = names if names is not None else s.topics.all()
        topic_configs = {
            "retention.ms": str(s.retention_ms),
            "max.message.bytes": str(s.max_message_bytes),
        }
        replicas = replication_factor or s.replication_factor
        if s.min_insync_replicas is not None:
            if s.min_insync_replicas > replicas:
                raise TopicError(
                    ",".join(names),
                    f"min.insync.replicas {s.min_insync_replicas} exceeds the replication factor {replicas}",
                )
            topic_configs["min.insync.replicas"] = str(s.min_insync_replicas)
        topic_configs.update(configs or {})
        existing = set(self._client.list_topics())
        result = {name: False for name in names if name in existing}
        new = [
            NewTopic(
                name=name,
                num_partitions=partitions or s.partitions,
                replication_factor=replicas,
                topic_configs=topic_configs,
            )
            for name in names
            if name not in existing
        ]
        if new:
            try:
                response = self._client.create_topics(new, validate_only=False)
            except TopicAlreadyExistsError:
                # another process won the race (or the broker's metadata had not yet listed a topic made
                # just before): each topic exists, none was created by this call
                response = None
            except KafkaError as exc:
                # kafka-python puts the whole request and response in the message: the broker's reasons
                # are what the user needs
                reasons = sorted(set(re.findall(r"error_message='([^']*)'", str(exc))))
                why = "; ".join(reasons) if reasons else str(exc)[:500]
                raise TopicError(",".join(t.name for t in new), f"could not be created: {why}") from exc
            errors = _topic_errors(response)
            for t in new:
                code, message = errors.get(t.name, (0 if response is not None else 36, None))
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS
                    raise TopicError(t.name, f"could not be created: error {code} {message or ''}".strip())
                result[t.name] = code == 0
        return {name: result[name] for name in names}

    def list_topics(self, *, all_topics: bool = False) -> list[str]:
        """Topic names under the configured prefix (or every non-internal topic)."""
        names = [n for n in self._client.list_topics() if not n.startswith("__")]
        if not all_topics:
            names = [n for n in names if n.startswith(self._settings.topic_prefix)]
        return sorted(names)

    def describe(self, name: str) -> TopicInfo:
        """Partitions (leader, replicas, ISR, earliest and latest offsets) and non-default configs."""
        try:
            meta = self._client.describe_topics([name])[0]
        except KafkaError as exc:
            raise TopicError(name, str(exc)) from exc
        if meta.get("error_code", 0) != 0:
            raise TopicError(
                name, "does not exist" if meta["error_code"] == 3 else f"error {meta['error_code']}"
            )
        tps = [TopicPartition(name, p["partition_index"]) for p in meta["partitions"]]
        # the log's own bounds, uncommitted records included
        consumer = kafka_consumer(
            self._settings, client_id="rivulet-admin", isolation_level="read_uncommitted"
        )
        try:
            earliest = consumer.beginning_offsets(tps)
            latest = consumer.end_offsets(tps)
        finally:
            consumer.close()
        partitions = [
            PartitionInfo(
                partition=p["partition_index"],
                leader=p["leader_id"],
                replicas=list(p["replica_nodes"]),
                isr=list(p["isr_nodes"]),
                earliest=earliest[TopicPartition(name, p["partition_index"])],
                latest=latest[TopicPartition(name, p["partition_index"])],
            )
            for p in sorted(meta["partitions"], key=lambda p: p["partition_index"])
        ]
        return TopicInfo(name=name, partitions=partitions, configs=self._configs(name))

    def _configs(self, name: str) -> dict[str, str]:
        from kafka.admin import ConfigResource, ConfigResourceType

        try:
            responses = self._client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        except KafkaError:
            return {}
        entries = responses.get("topic", {}).get(name, {}) if isinstance(responses, dict) else {}
        return {
            key: entry["value"]
            for key, entry in entries.items()
            if entry.get("config_source") == "DYNAMIC_TOPIC_CONFIG" and entry.get("value") is not None
        }

    def delete(self, names: list[str]) -> None:
        if names:
            self._client.delete_topics(names)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TopicAdmin:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _topic_errors(response: object) -> dict[str, tuple[int, str | None]]:
    """Map topic name to (error code, message) from a CreateTopics response of any version."""
    errors: dict[str, tuple[int, str | None]] = {}
    for entry in getattr(response, "topic_errors", None) or getattr(response, "topics", None) or []:
        if isinstance(entry, tuple):
            errors[entry[0]] = (entry[1], entry[2] if len(entry) > 2 and isinstance(entry[2], str) else None)
        else:
            errors[entry.name] = (entry.error_code, getattr(entry, "error_message", None))
    return errors
