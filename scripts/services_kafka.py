"""The local Kafka of ``scripts/services``: Apache Kafka in KRaft mode (one combined broker and controller)
from the official ``org.apache.kafka:kafka_2.13`` jars, resolved from Maven Central with ``mvn`` into
``.cache/`` and run with ``java``. :class:`KafkaNode` is also used by tests that need a private broker they
can stop and restart."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services_common import ServerProcess, require, say, wait_for

from streaming.runtime.probes import kafka_address, tcp_open

ROOT = Path(__file__).resolve().parent.parent
KAFKA_VERSION = "4.4.0"
CACHE = Path(os.environ.get("RIVULET_CACHE_DIR", ROOT / ".cache"))
POM = ROOT / "scripts" / "kafka" / "pom.xml"

# a node's listeners and data directory: the one node's and each cluster node's (services_cluster.py)
LISTENERS = [
    "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
    "advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "controller.listener.names=CONTROLLER",
    "inter.broker.listener.name=PLAINTEXT",
    "log.dirs={data}",
]

BROKER_CONFIG = [
    "process.roles=broker,controller",
    "node.id=1",
    "controller.quorum.voters=1@127.0.0.1:{controller_port}",
    *LISTENERS,
    "num.partitions=1",
    "auto.create.topics.enable=false",
    "offsets.topic.replication.factor=1",
    "offsets.topic.num.partitions=8",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "group.initial.rebalance.delay.ms=0",
    "delete.topic.enable=true",
    "log.retention.hours=168",
    "",
]

# Kafka 4 logs with log4j2 (scripts/kafka/pom.xml binds slf4j to it); without a configuration file log4j2
# says "No Log4j 2 configuration file found" on stderr and logs errors only, to the console. The properties
# format is log4j-core's own (Kafka's distribution ships YAML, which needs Jackson's YAML module).
LOG4J2_CONFIG = [
    "status = warn",
    "name = rivulet-kafka",
    "appender.file.type = RollingFile",
    "appender.file.name = file",
    "appender.file.fileName = {log}",
    "appender.file.filePattern = {log}.%i",
    "appender.file.layout.type = PatternLayout",
    "appender.file.layout.pattern = [%d] %p %m (%c)%n",
    "appender.file.policies.type = Policies",
    "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
    "appender.file.policies.size.size = 20MB",
    "appender.file.strategy.type = DefaultRolloverStrategy",
    "appender.file.strategy.max = 2",
    "rootLogger.level = info",
    "rootLogger.appenderRef.file.ref = file",
    "logger.kafka.name = kafka",
    "logger.kafka.level = info",
    "logger.apache.name = org.apache.kafka",
    "logger.apache.level = info",
    "logger.state.name = state.change.logger",
    "logger.state.level = warn",
    "",
]


def kafka_ready(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a metadata request to the cluster succeeds (not merely an open port)."""
    if not tcp_open(*kafka_address(bootstrap)):
        return False
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    except Exception:
        return False
    try:
        admin.list_topics()
        return bool(admin.describe_cluster().get("brokers"))
    except Exception:
        return False
    finally:
        admin.close()


def kafka_cluster_id(draw: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A KRaft cluster id (a UUID in URL-safe base64). One that starts with "-" would be read as an
    option by kafka-storage's argument parser, so it is drawn again, as Kafka's own Uuid.randomUuid does."""
    while True:
        cluster_id = base64.urlsafe_b64encode(draw().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_classpath() -> str:
    """Resolve the broker jars once into .cache/kafka-<version>/lib with mvn, and return the classpath.
    Resolved again when the pom changed since (another logging binding for the same Kafka)."""
    lib = CACHE / f"kafka-{KAFKA_VERSION}" / "lib"
    done = lib / ".complete"
    stamp = f"{KAFKA_VERSION} {hashlib.sha256(POM.read_bytes()).hexdigest()}"
    if not done.exists() or done.read_text() != stamp:
        mvn = require("mvn", "maven")
        say(f"resolving Apache Kafka {KAFKA_VERSION} from Maven Central into {lib}")
        shutil.rmtree(lib, ignore_errors=True)
        lib.mkdir(parents=True, exist_ok=True)
        goal = ["dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={lib}"]
        flags = ["-q", "-B", "-Dstyle.color=never", "-f", str(POM), f"-Dkafka.version={KAFKA_VERSION}"]
        subprocess.run([mvn, *flags, *goal], check=True)
        done.write_text(stamp)
    return f"{lib}/*"


@dataclass
class KafkaNode(ServerProcess):
    """A single-node KRaft Kafka (combined broker and controller) on loopback."""

    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"

    name = "kafka"
    pidname = "kafka.pid"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "logs" / "server.log"

    def config(self) -> list[str]:
        """The lines of its server.properties."""
        values = {"port": self.port, "controller_port": self.controller_port, "data": self.home / "data"}
        return [line.format(**values) for line in BROKER_CONFIG]

    def cluster_id(self) -> str:
        """The KRaft cluster id its storage is formatted with (the nodes of one cluster share it)."""
        return kafka_cluster_id()

    def _write_config(self) -> Path:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        cfg = self.home / "server.properties"
        cfg.write_text("\n".join(self.config()))
        (self.home / "log4j2.properties").write_text("\n".join(LOG4J2_CONFIG).replace("{log}", str(self.log)))
        return cfg

    def _java(self, classpath: str, *args: str) -> list[str]:
        return [
            require("java", "openjdk-17-jre-headless"),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp",
            classpath,
            *args,
        ]

    @property
    def stdout(self) -> Path:
        return self.home / "logs" / "stdout.log"

    def start(self, timeout_s: float = 90.0) -> None:
        proc = self.launch()
        wait_for(lambda: kafka_ready(self.bootstrap), self.name, timeout_s, proc, self.stdout)

    def launch(self) -> subprocess.Popen | None:
        """Start the broker unless it runs (formatting its storage the first time) without waiting for it:
        the nodes of a cluster answer only once a majority of the controllers runs. None when it ran."""
        if self.running():
            return None
        require("java", "openjdk-17-jre-headless")
        self.ensure_ports_free(self.controller_port)
        classpath = kafka_classpath()
        cfg = self._write_config()
        if not (self.home / "data" / "meta.properties").exists():
            format_storage = ["kafka.tools.StorageTool", "format", "-t", self.cluster_id(), "-c", str(cfg)]
            subprocess.run(self._java(classpath, *format_storage), check=True, stdout=subprocess.DEVNULL)
        with open(self.stdout, "ab") as out:
            return self.spawn(self._java(classpath, "kafka.Kafka", str(cfg)), out, cwd=self.home)
