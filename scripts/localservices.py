"""Start, stop and inspect the Kafka and Redis that Rivulet runs against (behind ``scripts/services``).

Besides them, a one-node Redis Cluster (``redis-server`` with ``cluster-enabled yes`` on its own port,
``RIVULET_REDIS_CLUSTER_URL``, default ``redis://127.0.0.1:7001``, every slot assigned to it) for the tests
that prove an entity's keys share one slot; it is started from the local ``redis-server`` in every case.

Order of preference for each service:

1. the configured address (``RIVULET_KAFKA_BOOTSTRAP``, ``RIVULET_REDIS_URL``) already answers: start nothing;
2. a Docker engine answers: ``docker compose up -d kafka redis``;
3. start it locally: Apache Kafka 3.9.x in KRaft mode (combined broker and controller) from the official
   ``org.apache.kafka:kafka_2.13`` jars resolved from Maven Central with ``mvn`` and run with ``java``;
   Redis from the ``redis-server`` on PATH.

Local data and logs live under ``.services/`` and the jars under ``.cache/``, both ignored by git.
``down`` stops only what ``up`` started, by the PIDs it recorded. :class:`KafkaNode` is also used by
tests that need a private broker they can stop and restart.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from streaming.runtime.stack import tcp_open  # the virtualenv has Rivulet installed (scripts/bootstrap)

ROOT = Path(__file__).resolve().parent.parent
KAFKA_VERSION = "3.9.1"
STATE = Path(os.environ.get("RIVULET_SERVICES_DIR", ROOT / ".services"))
CACHE = Path(os.environ.get("RIVULET_CACHE_DIR", ROOT / ".cache"))
POM = ROOT / "scripts" / "kafka" / "pom.xml"


def say(msg: str) -> None:
    print(f"services: {msg}", flush=True)


# --------------------------------------------------------------------------- probes


def kafka_ready(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a metadata request to the cluster succeeds (not merely an open port)."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not tcp_open(host or "127.0.0.1", int(port)):
        return False
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
        )
    except Exception:
        return False
    try:
        admin.list_topics()
        return bool(admin.describe_cluster().get("brokers"))
    except Exception:
        return False
    finally:
        admin.close()


def redis_ready(url: str) -> bool:
    parsed = urlparse(url)
    if not tcp_open(parsed.hostname or "127.0.0.1", parsed.port or 6379):
        return False
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def redis_cluster_ready(url: str) -> bool:
    """True when a cluster node answers and reports ``cluster_state:ok`` (every slot served)."""
    parsed = urlparse(url)
    if not tcp_open(parsed.hostname or "127.0.0.1", parsed.port or 7001):
        return False
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return client.cluster("INFO").get("cluster_state") == "ok"
        finally:
            client.close()
    except Exception:
        return False


def wait_for(
    check, what: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None
):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise SystemExit(f"services: {what} exited with code {proc.returncode}\n{tail}")
        time.sleep(0.3)
    raise SystemExit(f"services: {what} not ready after {timeout_s:.0f}s" + (f"; see {log}" if log else ""))


# --------------------------------------------------------------------------- pid files


def _pid_alive(pid: int, marker: str) -> bool:
    """The PID runs and its command line contains ``marker`` (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_pid(pidfile: Path, marker: str, name: str, grace_s: float = 20.0) -> None:
    pid = _read_pid(pidfile)
    if pid is None or not _pid_alive(pid, marker):
        pidfile.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _pid_alive(pid, marker):
        time.sleep(0.2)
    if _pid_alive(pid, marker):
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    say(f"stopped {name} (pid {pid})")


# --------------------------------------------------------------------------- Kafka


def kafka_cluster_id(draw: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A KRaft cluster id (a UUID in URL-safe base64). One that starts with "-" would be read as an
    option by kafka-storage's argument parser, so it is drawn again, as Kafka's own Uuid.randomUuid does."""
    while True:
        cluster_id = base64.urlsafe_b64encode(draw().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_classpath() -> str:
    """Resolve the broker jars once into .cache/kafka-<version>/lib with mvn, and return the classpath."""
    lib = CACHE / f"kafka-{KAFKA_VERSION}" / "lib"
    done = lib / ".complete"
    if not done.exists():
        if shutil.which("mvn") is None:
            raise SystemExit("services: mvn not found; install Maven (Debian package 'maven')")
        say(f"resolving Apache Kafka {KAFKA_VERSION} from Maven Central into {lib}")
        lib.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(POM),
                f"-Dkafka.version={KAFKA_VERSION}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={lib}",
            ],
            check=True,
        )
        done.write_text(KAFKA_VERSION)
    return f"{lib}/*"


@dataclass
class KafkaNode:
    """A single-node KRaft Kafka (combined broker and controller) on loopback."""

    home: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def pidfile(self) -> Path:
        return self.home / "kafka.pid"

    def _write_config(self) -> Path:
        data = self.home / "data"
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        cfg = self.home / "server.properties"
        cfg.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={data}",
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
            )
        )
        log4j = self.home / "log4j.properties"
        log4j.write_text(
            "\n".join(
                [
                    "log4j.rootLogger=INFO, file",
                    "log4j.appender.file=org.apache.log4j.RollingFileAppender",
                    f"log4j.appender.file.File={self.log}",
                    "log4j.appender.file.MaxFileSize=20MB",
                    "log4j.appender.file.MaxBackupIndex=2",
                    "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
                    "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
                    "log4j.logger.kafka=INFO",
                    "log4j.logger.org.apache.kafka=INFO",
                    "log4j.logger.state.change.logger=WARN",
                    "",
                ]
            )
        )
        return cfg

    def _java(self, classpath: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp",
            classpath,
            *args,
        ]

    def running(self) -> bool:
        pid = _read_pid(self.pidfile)
        return pid is not None and _pid_alive(pid, str(self.home))

    def start(self, timeout_s: float = 90.0) -> None:
        if self.running():
            wait_for(lambda: kafka_ready(self.bootstrap), "kafka", timeout_s)
            return
        if shutil.which("java") is None:
            raise SystemExit("services: java not found; install a Java 17 runtime (openjdk-17-jre-headless)")
        if tcp_open("127.0.0.1", self.port) or tcp_open("127.0.0.1", self.controller_port):
            raise SystemExit(
                f"services: port {self.port} or {self.controller_port} is taken by another process"
            )
        classpath = kafka_classpath()
        cfg = self._write_config()
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = kafka_cluster_id()
            subprocess.run(
                self._java(classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(cfg)),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        with open(self.home / "logs" / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                self._java(classpath, "kafka.Kafka", str(cfg)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.home,
            )
        self._proc = proc
        self.pidfile.write_text(str(proc.pid))
        wait_for(
            lambda: kafka_ready(self.bootstrap), "kafka", timeout_s, proc, self.home / "logs" / "stdout.log"
        )

    def kill(self) -> None:
        """Hard stop (SIGKILL), as a crash would."""
        pid = _read_pid(self.pidfile)
        if pid is not None and _pid_alive(pid, str(self.home)):
            os.kill(pid, signal.SIGKILL)
            if self._proc is not None and self._proc.pid == pid:
                self._proc.wait()
            while _pid_alive(pid, str(self.home)):
                time.sleep(0.05)
        self._proc = None
        self.pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        stop_pid(self.pidfile, str(self.home), "kafka")
        if self._proc is not None:
            self._proc.wait()
            self._proc = None


# --------------------------------------------------------------------------- Redis


@dataclass
class RedisNode:
    home: Path
    port: int = 6379
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.home / "redis.pid"

    def running(self) -> bool:
        pid = _read_pid(self.pidfile)
        return pid is not None and _pid_alive(pid, "redis-server")

    def start(self, timeout_s: float = 20.0) -> None:
        if self.running():
            wait_for(lambda: redis_ready(self.url), "redis", timeout_s)
            return
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("services: redis-server not found; install the Debian package 'redis-server'")
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.home / "redis.log"
        proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.home),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                str(log),
                "--protected-mode",
                "yes",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._proc = proc
        self.pidfile.write_text(str(proc.pid))
        wait_for(lambda: redis_ready(self.url), "redis", timeout_s, proc, log)

    def stop(self) -> None:
        stop_pid(self.pidfile, "redis-server", "redis")
        if self._proc is not None:
            self._proc.wait()
            self._proc = None


@dataclass
class RedisClusterNode:
    """A one-node Redis Cluster: ``cluster-enabled yes``, all 16384 slots assigned to the node."""

    home: Path
    port: int = 7001
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.home / "redis-cluster.pid"

    def command(self, exe: str) -> list[str]:
        return [
            exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.home),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.home / "nodes.conf"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.home / "redis.log"),
            "--protected-mode",
            "yes",
        ]

    def running(self) -> bool:
        pid = _read_pid(self.pidfile)
        return pid is not None and _pid_alive(pid, "redis-server")

    def start(self, timeout_s: float = 20.0) -> None:
        if not self.running():
            exe = shutil.which("redis-server")
            if exe is None:
                raise SystemExit(
                    "services: redis-server not found; install the Debian package 'redis-server'"
                )
            if tcp_open("127.0.0.1", self.port):
                raise SystemExit(f"services: port {self.port} is taken by another process")
            self.home.mkdir(parents=True, exist_ok=True)
            proc = subprocess.Popen(
                self.command(exe),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._proc = proc
            self.pidfile.write_text(str(proc.pid))
            wait_for(
                lambda: redis_ready(self.url), "redis cluster node", timeout_s, proc, self.home / "redis.log"
            )
        self.assign_slots()
        wait_for(lambda: redis_cluster_ready(self.url), "redis cluster", timeout_s)

    def assign_slots(self) -> None:
        """Give every slot to this node unless it serves some already (nodes.conf keeps them on restarts)."""
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            if int(client.cluster("INFO").get("cluster_slots_assigned", 0)) == 0:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        finally:
            client.close()

    def stop(self) -> None:
        stop_pid(self.pidfile, "redis-server", "redis cluster")
        if self._proc is not None:
            self._proc.wait()
            self._proc = None


# --------------------------------------------------------------------------- docker


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker_up(services: list[str]) -> None:
    subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "up", "-d", "--wait", *services],
        check=True,
    )
    (STATE / "docker.started").write_text(" ".join(services))


# --------------------------------------------------------------------------- commands


def _endpoints() -> tuple[str, str]:
    bootstrap = os.environ.get("RIVULET_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    url = os.environ.get("RIVULET_REDIS_URL", "redis://127.0.0.1:6379/0")
    return bootstrap, url


def _cluster_node() -> RedisClusterNode:
    url = os.environ.get("RIVULET_REDIS_CLUSTER_URL", "redis://127.0.0.1:7001")
    return RedisClusterNode(STATE / "redis-cluster", port=urlparse(url).port or 7001)


def cluster_up() -> None:
    node = _cluster_node()
    if shutil.which("redis-server") is None and not redis_cluster_ready(node.url):
        # not fatal for Kafka and Redis (which Docker may provide); the cluster tests report it missing
        say("redis cluster: redis-server not found, not started; install the Debian package 'redis-server'")
        return
    if redis_cluster_ready(node.url):
        say(
            f"redis cluster ready at {node.url}"
            + (" (started by scripts/services)" if node.running() else "")
        )
        return
    node.start()
    pid = _read_pid(node.pidfile)
    say(f"redis cluster (one node, all slots) started at {node.url} (pid {pid}, data {node.home})")


def _local_nodes(bootstrap: str, url: str) -> tuple[KafkaNode, RedisNode]:
    kport = int(bootstrap.split(",")[0].rpartition(":")[2])
    return (
        KafkaNode(STATE / "kafka", port=kport, controller_port=kport + 1),
        RedisNode(STATE / "redis", port=urlparse(url).port or 6379),
    )


def up() -> None:
    bootstrap, url = _endpoints()
    STATE.mkdir(parents=True, exist_ok=True)
    kafka, redis_node = _local_nodes(bootstrap, url)
    need = []
    if kafka_ready(bootstrap):
        say(f"kafka  ready at {bootstrap}" + (" (started by scripts/services)" if kafka.running() else ""))
    else:
        need.append("kafka")
    if redis_ready(url):
        say(f"redis  ready at {url}" + (" (started by scripts/services)" if redis_node.running() else ""))
    else:
        need.append("redis")
    if not need:
        cluster_up()
        return
    if docker_available():
        say(f"starting {', '.join(need)} with docker compose")
        docker_up(need)
    else:
        if "redis" in need:
            redis_node.start()
            pid = _read_pid(redis_node.pidfile)
            say(f"redis  started at {redis_node.url} (pid {pid}, data {redis_node.home})")
        if "kafka" in need:
            t0 = time.monotonic()
            kafka.start()
            took = time.monotonic() - t0
            say(f"kafka  {KAFKA_VERSION} (KRaft) started at {kafka.bootstrap} in {took:.1f}s")
            say(f"       pid {_read_pid(kafka.pidfile)}, logs {kafka.home / 'logs'}")
    wait_for(lambda: kafka_ready(bootstrap), "kafka", 60)
    wait_for(lambda: redis_ready(url), "redis", 30)
    cluster_up()


def down() -> None:
    bootstrap, url = _endpoints()
    kafka, redis_node = _local_nodes(bootstrap, url)
    kafka.stop()
    redis_node.stop()
    _cluster_node().stop()
    marker = STATE / "docker.started"
    if marker.exists():
        services = marker.read_text().split()
        subprocess.run(
            ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "stop", *services], check=False
        )
        marker.unlink()
        say(f"stopped docker services {', '.join(services)}")


def status() -> int:
    bootstrap, url = _endpoints()
    kafka, redis_node = _local_nodes(bootstrap, url)
    cluster = _cluster_node()
    k, r, c = kafka_ready(bootstrap), redis_ready(url), redis_cluster_ready(cluster.url)
    say(f"kafka  {bootstrap}: {'up' if k else 'down'}" + (" (ours)" if kafka.running() else ""))
    say(f"redis  {url}: {'up' if r else 'down'}" + (" (ours)" if redis_node.running() else ""))
    say(f"redis cluster {cluster.url}: {'up' if c else 'down'}" + (" (ours)" if cluster.running() else ""))
    return 0 if k and r and c else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/services", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "jars"])
    args = parser.parse_args(argv)
    if args.command == "up":
        up()
    elif args.command == "down":
        down()
    elif args.command == "jars":
        print(kafka_classpath())
    else:
        return status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
