"""Profile one feature worker on real Kafka and Redis with py-spy (a sampling profiler: the worker runs
unchanged, in a process of its own).

Produces ``--events`` events (1,000 entities, the ``customer`` view of ``features.examples``) to a scratch
namespace, starts ``rivulet features run`` under ``py-spy record``, waits until the worker has produced
every feature record, stops it and prints where the samples are: by leaf frame and by the time spent under
each named seam (Kafka, Redis, the engine, decoding, serialising, Faust's machinery).

    .venv/bin/python scripts/profile_features.py --events 60000 --out /tmp/worker.txt
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchkit import cpu_seconds, drop, fresh, service_pids  # noqa: E402

from streaming.clients import redis_client  # noqa: E402
from streaming.ingest.producer import Producer  # noqa: E402
from streaming.ingest.topics import TopicAdmin  # noqa: E402
from streaming.settings import Settings  # noqa: E402
from tests.support.oracle import stream  # noqa: E402

# a stack is charged to the seam of its frame nearest the leaf (who was running: the engine called by the
# pipeline is the engine's, Faust called by the worker's batches is Faust's); within one frame, the first of
# these that names it
SEAMS = (
    ("kafka client (aiokafka)", ("(aiokafka/",)),
    ("redis client (redis-py)", ("(redis/",)),
    ("engine", ("features/engine", "features/aggregations", "features/windows", "features/tiles")),
    ("engine", ("features/summaries", "features/distinct", "features/accumulators", "features/compiled")),
    ("engine", ("features/fused", "(<string>:")),  # the engine's generated code has no file
    ("state to/from JSON", ("features/state", "features/store")),
    ("decode (Event.from_json)", ("features/events.py",)),
    ("pipeline (records, dead letters, batching)", ("features/pipeline.py", "features/records.py")),
    ("store (Lua arguments)", ("features/redis_store.py",)),
    ("worker and publisher", ("streaming/runtime/",)),
    ("faust stream and consumer machinery", ("(faust/", "(mode/")),
    ("event loop (select, callbacks)", ("asyncio/", "selectors")),  # last: see charge
)


def charge(stack: str) -> str:
    idle = stack.rpartition(";")[2].startswith(("EpollSelector.select", "select (selectors"))
    if "WorkerThread.run (mode/threads" in stack:  # Faust runs its aiokafka consumer in a thread of its own
        return "idle: faust's consumer thread waiting" if idle else "faust's consumer thread (aiokafka)"
    if idle:
        return "idle: the worker's event loop waiting in select (on Kafka, Redis)"
    for frame in reversed(stack.split(";")):  # the seam nearest the leaf: who was running
        for name, marks in SEAMS[:-1]:  # asyncio's own frames count for whoever called them
            if any(m in frame for m in marks):
                return name
    if any(m in stack for m in SEAMS[-1][1]):
        return SEAMS[-1][0]
    return "other (imports, start-up)"


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rivulet-worker-profile.txt"))
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    args = parser.parse_args()
    settings = fresh(Settings())
    client = redis_client(settings)
    stats = f"{settings.redis_prefix}stats:features"
    log = args.out.with_suffix(".log")
    with TopicAdmin(settings) as admin:
        admin.create()
        try:
            with Producer(settings) as producer:
                producer.send_many(stream(args.events, entities=1000, seed=8, step_ms=100))
            env = {
                **os.environ,
                "RIVULET_TOPIC_PREFIX": settings.topic_prefix,
                "RIVULET_REDIS_PREFIX": settings.redis_prefix,
                "RIVULET_LOG_LEVEL": "WARNING",
                "RIVULET_DATA_DIR": str(args.out.parent / "profile-data"),
            }
            spy = [str(ROOT / ".venv/bin/py-spy"), "record", "-f", "raw", "-r", str(args.rate)]
            spy += ["--native"] if args.native else []
            cmd = [*spy, "-o", str(args.out), "--", sys.executable, "-m", "streaming.cli"]
            cmd += ["features", "run", "--features", "features.examples:customer"]
            with log.open("wb") as out:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            started = time.monotonic()
            first = None
            pids = {**service_pids(), "py-spy": [proc.pid], "worker": []}
            cpu_before = {name: cpu_seconds(p) for name, p in pids.items()}
            while (done := int(client.hget(stats, "records:customer") or 0)) < args.events:
                if done and first is None:
                    first = (time.monotonic(), done)
                    pids["worker"] = _children(proc.pid)  # py-spy's child: started by now
                    cpu_before["worker"] = cpu_seconds(pids["worker"])
                assert proc.poll() is None and time.monotonic() < started + 900, log.read_text()[-2000:]
                time.sleep(0.01)
            end = time.monotonic()
            cpu = {name: cpu_seconds(p) - cpu_before[name] for name, p in pids.items()}
            proc.send_signal(signal.SIGINT)  # py-spy writes its output and stops the worker
            proc.wait(timeout=60)
        finally:
            drop(settings)
    if first is not None:
        print(f"{(args.events - first[1]) / (end - first[0]):,.0f} events/s under the profiler")
    total = sum(cpu.values())
    print(f"CPU seconds during the run ({end - started:.1f} s of wall time, 2 cores shared with other work):")
    for name, used in cpu.items():
        print(f"  {used:6.1f} s  {used / total:6.1%}  {name}")
    report(args.out)


def report(path: Path) -> None:
    seams: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        seams[charge(stack)] += n
        leaves[stack.split(";")[-1]] += n
    print(f"{total} samples")
    for name, n in seams.most_common():
        print(f"  {n / total:6.1%}  {name}")
    print("top leaf frames:")
    for name, n in leaves.most_common(25):
        print(f"  {n / total:6.1%}  {name[:150]}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report(Path(sys.argv[2]))
    else:
        main()
