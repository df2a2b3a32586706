"""What the benchmark scripts share: a scratch namespace on the live Kafka and Redis and its removal, a
scratch directory, sending events at a fixed rate stamped with the time they are sent, and the latency
bookkeeping of "sent, then seen" measurements."""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

from features.events import Event
from streaming.clients import redis_client
from streaming.ingest.producer import Producer
from streaming.ingest.topics import TopicAdmin
from streaming.settings import Settings

__all__ = [
    "Latencies",
    "arguments",
    "cpu_seconds",
    "drop",
    "fresh",
    "log_tail",
    "median_seconds",
    "percentiles",
    "scratch_dir",
    "send_paced",
    "service_pids",
    "wait_until",
]


def arguments(doc: str, only: list[str], **defaults: float) -> argparse.Namespace:
    """The command line of a benchmark: ``--name value`` for each default (its type from the default's,
    ``rounds`` as ``--rounds``, ``engine_events`` as ``--engine-events``) and ``--only`` one measurement.
    The description is the first paragraph of ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for name, default in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--only", choices=only)
    return parser.parse_args()


def fresh(base: Settings, **update: Any) -> Settings:
    """Settings with a topic prefix and a Redis key prefix of their own, so a run touches nothing else."""
    run = uuid.uuid4().hex[:8]
    prefixes = {"topic_prefix": f"bench.{run}.", "redis_prefix": f"bench:{run}:"}
    return base.model_copy(update={**prefixes, **update})


def drop(settings: Settings) -> None:
    """Delete the run's topics (repartition topics included) and every Redis key under its prefix."""
    with TopicAdmin(settings) as admin:
        admin.delete([t for t in admin.list_topics(all_topics=True) if settings.topic_prefix in t])
    client = redis_client(settings)
    for key in client.scan_iter(match=f"{settings.redis_prefix}*", count=1000):
        client.delete(key)
    client.close()


def scratch_dir(root: Path = Path("/tmp")) -> Path:
    """A new directory for a run's logs and files."""
    path = root / f"rivulet-bench-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    return path


def wait_until(
    done: Callable[[], bool],
    alive: Callable[[], bool],
    timeout_s: float,
    what: str | Callable[[], str],
    poll_s: float = 0.1,
) -> None:
    """Poll ``done`` every ``poll_s`` until true; fail with ``what`` (or what it returns, computed only then:
    a log's tail, say) if ``alive`` turns false or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if not alive() or time.monotonic() >= deadline:
            raise AssertionError(what() if callable(what) else what)
        time.sleep(poll_s)


def log_tail(path: Path, chars: int = 3000) -> str:
    """The last ``chars`` characters of a log file (what a dead child process said last)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"(no log at {path}: {exc})"


class Latencies:
    """Events sent at known wall-clock times, waiting to be seen somewhere (per key: an entity, or one
    stream for ``None``); seeing a watermark releases every event of its key up to it, and records how long
    each took. Thread-safe: one thread sends, another sees."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._pending: dict[Hashable, deque[tuple[int, float]]] = defaultdict(deque)
        self._lock = threading.Lock()

    def sent(self, key: Hashable, ts: int, at: float) -> None:
        with self._lock:
            self._pending[key].append((ts, at))

    def seen(self, key: Hashable, upto_ts: int, at: float) -> None:
        with self._lock:
            queue = self._pending[key]
            while queue and queue[0][0] <= upto_ts:
                self.values.append(at - queue.popleft()[1])


def send_paced(
    producer: Producer, events: Iterable[Event], rate: float, on_send: Callable[[Event, float], None]
) -> None:
    """Send ``events`` at ``rate`` per second, each with its time set to the wall clock when it is sent;
    ``on_send(event, sent_at)`` first (to note it in :class:`Latencies`). Flushes at the end."""
    start = time.monotonic()
    for i, e in enumerate(events):
        if (ahead := start + i / rate - time.monotonic()) > 0:
            time.sleep(ahead)
        now = time.time()
        event = e.model_copy(update={"ts": int(now * 1000)})
        on_send(event, now)
        producer.send(event)
    producer.flush()


def median_seconds(rounds: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """The median wall time of each run over ``rounds`` rounds, interleaved so that drift in the machine
    hits every run alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in times.items()}


def percentiles(values: list[float], scale: float = 1.0) -> tuple[float, float]:
    """p50 and p99 of ``values`` (times ``scale``), nearest rank.

    >>> percentiles([float(v) for v in range(1, 101)])
    (51.0, 100.0)
    """
    ordered = sorted(values)
    return ordered[len(ordered) // 2] * scale, ordered[int(len(ordered) * 0.99)] * scale


def service_pids(proc: Path = Path("/proc")) -> dict[str, list[int]]:
    """The processes of the Kafka broker (``kafka.Kafka``) and of the Redis servers on this machine, by
    their command lines: to measure their own CPU during a benchmark."""
    found: dict[str, list[int]] = {"kafka broker": [], "redis servers": []}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline:
            found["kafka broker"].append(int(entry.name))
        elif cmdline.startswith(b"redis-server") or b"/redis-server" in cmdline.split(b" ")[0]:
            found["redis servers"].append(int(entry.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds used so far by the processes ``pids`` and their waited-for children
    (``/proc/<pid>/stat``); a process gone counts 0."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / tick  # utime, stime, cutime, cstime
    return total
