"""The learner's lifecycle workload (issue 14: a champion and two challengers, paired evidence on every
record) against the bare River loop running the three models, counted in instructions (valgrind's
callgrind) instead of timed: a figure the machine's noise cannot move, for comparing two versions of the
learner's code. It is not the throughput goal (``bench_learn.py --only lifecycle`` times that):
instructions are not time (memory stalls and IPC differ), so read it beside the timed ratio.

    .venv/bin/python scripts/bench_learn_instructions.py --records 3000

Three runs under callgrind, each generating the same records: none processed (start-up), the bare loop, the
learner. Prints instructions per record of each loop, and their ratio. Needs ``valgrind`` (Debian:
``apt-get install valgrind``); a few minutes.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()


def workload(run: str, n: int) -> None:
    from bench_learn import bare_lifecycle, rivulet_lifecycle  # the timed bench's workload, the same code
    from river.datasets import synth

    data = list(itertools.islice(synth.Agrawal(seed=1), n))
    if run == "bare":
        bare_lifecycle(data)
    elif run == "rivulet":
        rivulet_lifecycle(data)


def instructions(run: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                str(HERE),
                "--run",
                run,
                "--records",
                str(n),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from callgrind:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--run", choices=["none", "bare", "rivulet"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        workload(args.run, args.records)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (Debian: apt-get install valgrind)")
    n = args.records
    start = instructions("none", n)
    per = {run: (instructions(run, n) - start) / n for run in ("bare", "rivulet")}
    print(f"lifecycle in instructions: {n} Agrawal records, a champion and 2 challengers, callgrind")
    for run, value in per.items():
        print(f"  {run:>8}: {value:>12,.0f} instructions per record")
    print(f"  beyond bare: {per['rivulet'] - per['bare']:,.0f} per record")
    print(f"  ratio bare/rivulet: {per['bare'] / per['rivulet']:.3f}")


if __name__ == "__main__":
    main()
