"""CPU instructions per task of live tracking against plain daglite, counted with cachegrind.

Timings on a shared 2-core machine vary by ±20 % from run to run; instruction counts far less.
This script runs the same no-op tasks on the thread backend under valgrind's cachegrind (a
`map_tasks`, single submits: daglite's `Backend.submit` against `dnb.submit`, and a `map_tasks`
of tasks that print one line each, to the process's stream or captured per call), plain or
live, and prints the instructions per task of each and their ratios. Every run opens both a
plain daglite session (in a context of its own, as `live_futures.py` does in a kernel) and a
daglite-nb session, so both sides run with the same modules and the same heap; only the context
that the tasks are submitted from differs. It needs valgrind (`apt-get install -y valgrind`).

Run: `.venv/bin/python benchmarks/instructions.py` (figures in docs/performance.md).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys

TASKS = 2_000
REPEAT = 5

RUN = """
import contextvars
import sys
from concurrent.futures import wait
import daglite, daglite_nb as dnb
from daglite import task, map_tasks
from daglite.backends.manager import BackendManager

@task
def noop(x):
    return x

@task
def talk(x):
    print("task", x, "did its part")
    return x

way, what, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
plain = contextvars.Context()
plain.run(daglite.session(backend="thread").__enter__)
dnb.start(backend="thread")
live = contextvars.copy_context()

def plain_submit(n):
    backend = BackendManager.get_active().get("thread")
    wait([backend.submit(noop, (i,)) for i in range(n)])

def live_submit(n):
    wait([dnb.submit(noop, i) for i in range(n)])

def plain_stream(run, n):
    # plain daglite writes to the process's stream itself (daglite-nb's wrapper taken off)
    wrapper = sys.stdout
    sys.stdout = wrapper.stream
    try:
        run(n)
    finally:
        sys.stdout = wrapper

runs = {
    "map": lambda n: map_tasks(noop, range(n)),
    "print": lambda n: map_tasks(talk, range(n)),
    "submit": plain_submit if way == "plain" else live_submit,
}
run = runs[what]
context = plain if way == "plain" else live
go = (lambda n: plain_stream(run, n)) if way == "plain" else run
context.run(go, 50)  # warm: the pool's threads, the task's first call
if tasks:
    context.run(go, tasks)
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{run.stderr}")
    return int(found.group(1).replace(",", ""))


def per_task(way: str, what: str) -> float:
    """Instructions per task: a run with TASKS tasks minus the same run without them."""
    return (instructions(way, what, TASKS) - instructions(way, what, 0)) / TASKS


def main() -> None:
    print(f"{TASKS} no-op tasks on the thread backend, instructions per task")
    print(f"(median and range of {REPEAT} interleaved plain and live counts):")
    for what, plain_label, live_label in [
        ("map", "map_tasks, plain daglite.session", "map_tasks, daglite-nb session"),
        ("submit", "Backend.submit (daglite)", "dnb.submit"),
        ("print", "map_tasks printing, plain", "map_tasks printing, captured"),
    ]:
        plain: list[float] = []
        live: list[float] = []
        for _ in range(REPEAT):
            plain.append(per_task("plain", what))
            live.append(per_task("live", what))
        for label, counts in ((plain_label, plain), (live_label, live)):
            print(f"  {label:<34} {spread(counts, '{:,.0f}')}")
        ratios = [mine / theirs for theirs, mine in zip(plain, live, strict=True)]
        print(f"  {'ratio':<34} {spread(ratios, '{:.3f}x')}")


def spread(values: list[float], form: str) -> str:
    """The median of *values* and their range, each written with *form*."""
    median = form.format(statistics.median(values))
    return f"{median:>10} ({form.format(min(values))}-{form.format(max(values))})"


if __name__ == "__main__":
    main()
