"""CPU instructions per task of live tracking against plain daglite, counted with cachegrind.

Timings on a shared 2-core machine vary by ±20 % from run to run; instruction counts far less.
This script runs the same no-op tasks on the thread backend under valgrind's cachegrind (a
`map_tasks`, and single submits: daglite's `Backend.submit` against `dnb.submit`), with and
without a daglite-nb session, and prints the instructions per task of each and their ratios.
It needs valgrind (`apt-get install -y valgrind`).

Run: `.venv/bin/python benchmarks/instructions.py` (figures in docs/performance.md).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys

TASKS = 2_000
REPEAT = 3

RUN = """
import sys
from concurrent.futures import wait
import daglite, daglite_nb as dnb
from daglite import task, map_tasks
from daglite.backends.manager import BackendManager

@task
def noop(x):
    return x

way, what, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
if way == "plain":
    session = daglite.session(backend="thread")
    session.__enter__()
    backend = BackendManager.get_active().get("thread")
    submit = lambda i: backend.submit(noop, (i,))
else:
    dnb.start(backend="thread")
    submit = lambda i: dnb.submit(noop, i)
run = (lambda n: map_tasks(noop, range(n))) if what == "map" else (
    lambda n: wait([submit(i) for i in range(n)])
)
run(50)  # warm: the pool's threads, the task's first call
if tasks:
    run(tasks)
"""


def instructions(way: str, what: str, tasks: int) -> int:
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
            what,
            str(tasks),
        ],
        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts in every run
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{run.stderr}")
    return int(found.group(1).replace(",", ""))


def per_task(way: str, what: str) -> float:
    """Instructions per task: a run with TASKS tasks minus the same run without them.

    The median of REPEAT such differences: how the threads interleave still moves a count by a
    few percent (the waiting and waking differ).
    """
    return statistics.median(
        (instructions(way, what, TASKS) - instructions(way, what, 0)) / TASKS for _ in range(REPEAT)
    )


def main() -> None:
    print(f"{TASKS} no-op tasks on the thread backend, instructions per task:")
    for what, plain_label, live_label in [
        ("map", "map_tasks, plain daglite.session", "map_tasks, daglite-nb session"),
        ("submit", "Backend.submit (daglite)", "dnb.submit"),
    ]:
        plain, live = per_task("plain", what), per_task("live", what)
        print(f"  {plain_label:<34} {plain:>10,.0f}")
        print(f"  {live_label:<34} {live:>10,.0f}")
        print(f"  {'ratio':<34} {live / plain:>10.3f}x")


if __name__ == "__main__":
    main()
