"""CPU instructions per task of process fan-outs, every process counted, with cachegrind.

Timings on a shared 2-core machine swing; instruction counts far less. This script runs the
no-op fan-out of `process_map.py` under valgrind's cachegrind, following every child process
(the pool's workers, their helpers), for each way: joblib's `Parallel(n_jobs=2)`, plain
daglite's process backend and daglite-nb's. Each count is a run with the tasks minus the same
run without them (the pool started and warmed either way), over all processes, per task. Under
valgrind everything runs tens of times slower, so the batch sizes that daglite-nb picks are
not those of a normal run; the counts show the work per task, not its overlap. It needs
valgrind (`apt-get install -y valgrind`).

Run: `.venv/bin/python benchmarks/process_instructions.py` (figures in docs/performance.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from instructions import spread

TASKS = 2_000
REPEAT = 3
WAYS = ("joblib", "daglite", "daglite-nb")

RUN = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import daglite, daglite_nb as dnb
from daglite import map_tasks
from joblib import Parallel, delayed
from _work import noop, noop_task

way, tasks = sys.argv[1], int(sys.argv[2])
if way == "joblib":
    pool = Parallel(n_jobs=2)
    run = lambda n: pool(delayed(noop)(i) for i in range(n))
elif way == "daglite":
    daglite.session(backend="process").__enter__()
    run = lambda n: map_tasks(noop_task, range(n))
else:
    dnb.start(backend="process", max_processes=2)
    run = lambda n: map_tasks(noop_task, range(n))
run(50)  # warm: the workers started, the task's first calls
if tasks:
    run(tasks)
"""


def instructions(way: str, tasks: int) -> int:
    """Instructions of the whole run: every process valgrind followed reports its own."""
    run = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--trace-children=yes",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-c",
            RUN,
            way,
            str(tasks),
        ],
        env={**os.environ, "PYTHONHASHSEED": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    counts = re.findall(r"I\s+refs:\s+([\d,]+)", run.stderr)
    if not counts:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{run.stderr}")
    return sum(int(count.replace(",", "")) for count in counts)


def main() -> None:
    per_task: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(REPEAT):
        for way in WAYS:
            per_task[way].append((instructions(way, TASKS) - instructions(way, 0)) / TASKS)
    print(f"{TASKS} no-op tasks on 2 process workers, instructions per task, all processes")
    print(f"(median and range of {REPEAT} interleaved counts):")
    for way, counts in per_task.items():
        print(f"  {way:<12} {spread(counts, '{:,.0f}')}")
    for anchor in ("joblib", "daglite"):
        ratios = [
            ours / theirs
            for ours, theirs in zip(per_task["daglite-nb"], per_task[anchor], strict=True)
        ]
        print(f"  daglite-nb / {anchor:<8} {spread(ratios, '{:.2f}x')}")


if __name__ == "__main__":
    main()
