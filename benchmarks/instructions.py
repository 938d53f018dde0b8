"""CPU instructions per task of live tracking against plain daglite, counted with cachegrind.

Timings on a shared 2-core machine vary by ±20 % from run to run; instruction counts do not.
This script runs the same `map_tasks` of no-op tasks on the thread backend under valgrind's
cachegrind, with and without a daglite-nb session, and prints the instructions per task of each
and their ratio. It needs valgrind (`apt-get install -y valgrind`).

Run: `.venv/bin/python benchmarks/instructions.py` (figures in docs/performance.md).
"""

from __future__ import annotations

import re
import subprocess
import sys

TASKS = 2_000

RUN = """
import sys
import daglite, daglite_nb as dnb
from daglite import task, map_tasks

@task
def noop(x):
    return x

if sys.argv[1] == "plain":
    session = daglite.session(backend="thread")
    session.__enter__()
else:
    dnb.start(backend="thread")
map_tasks(noop, range(50))  # warm: the pool's threads, the task's first call
if int(sys.argv[2]):
    map_tasks(noop, range(int(sys.argv[2])))
"""


def instructions(way: str, tasks: int) -> int:
    """Instructions the whole run executes (valgrind counts every thread)."""
    run = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-c",
            RUN,
            way,
            str(tasks),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{run.stderr}")
    return int(found.group(1).replace(",", ""))


def per_task(way: str) -> float:
    """Instructions per task: a run with TASKS tasks minus the same run without them."""
    return (instructions(way, TASKS) - instructions(way, 0)) / TASKS


def main() -> None:
    plain, live = per_task("plain"), per_task("live")
    print(f"map_tasks of {TASKS} no-op tasks on the thread backend, instructions per task:")
    print(f"  plain daglite.session          {plain:>10,.0f}")
    print(f"  daglite-nb session (tracked)   {live:>10,.0f}")
    print(f"  ratio                          {live / plain:>10.3f}x")


if __name__ == "__main__":
    main()
