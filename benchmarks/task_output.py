"""Cost of capturing what tasks print, in a real kernel, against plain daglite in the same run.

Tasks of 1 ms (`time.sleep`) that print one line each, fanned out with `map_tasks` on the
thread and process backends; on the thread backend also the same tasks silent, the cost of live
tracking alone, so the difference of the two is the cost of capture. Plain daglite's session
stays open beside daglite-nb's, in a context of its own, and writes straight to the kernel's
stream (daglite-nb's stream wrapper is taken off while it runs); daglite-nb keeps each line
with its call, live progress shown. Rounds alternate plain and captured, three tries each,
keeping each side's best (as `live_futures.py` does); the figures are the median and range of
the rounds' ratios, in wall time and in the kernel's CPU time. Instruction counts of the same
tasks without the sleep come from `instructions.py` (its `print` row). Last, the cost of one
`print` in the kernel's CPU time (every thread, ipykernel's I/O thread included): a task that
prints 20,000 lines, its lines captured by daglite-nb or written to ipykernel's stream.

Run: `.venv/bin/python benchmarks/task_output.py` (figures in docs/performance.md).
"""

from __future__ import annotations

import statistics

from live_futures import Cells

RUNS = {  # name: backend, task, tasks
    "thread, printing": ("thread", "talk", 1_000),
    "thread, silent (tracking alone)": ("thread", "quiet", 1_000),
    "process, printing": ("process", "talk", 400),
}
ROUNDS = 11
TRIES = 3
PRINTS = 20_000

SETUP = """
import contextvars, gc, json, sys, time
import daglite, daglite_nb as dnb
from daglite import task, map_tasks

@task
def talk(x):
    time.sleep(0.001)
    print("task", x, "did its part")
    return x

@task
def quiet(x):
    time.sleep(0.001)
    return x

@task
def chatty(n):
    # seconds of the kernel's CPU per printed line
    c0 = time.process_time()
    for i in range(n):
        print("task", i, "did its part")
    return (time.process_time() - c0) / n

def timed(func, *args):
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    func(*args)
    return time.perf_counter() - t0, time.process_time() - c0

def plain_stream(func, *args):
    # plain daglite in a kernel writes to ipykernel's stream itself
    wrapper = sys.stdout
    sys.stdout = wrapper.stream
    try:
        return func(*args)
    finally:
        sys.stdout = wrapper

plains = {}
for name in ("thread", "process"):
    plains[name] = contextvars.Context()
    plains[name].run(daglite.session(backend=name).__enter__)
dnb.start(backend="thread")
dnb.submit(talk, 0, backend="process").result()
tasks = {"talk": talk, "quiet": quiet}
times = {}
"""

ROUND = f"""
for name, (backend, func, n) in {RUNS!r}.items():
    dnb.use(backend)
    func = tasks[func]
    tries = [
        (plains[backend].run(plain_stream, timed, map_tasks, func, range(n)),
         timed(map_tasks, func, range(n)))
        for _ in range({TRIES})
    ]
    for side, i in (("plain", 0), ("live", 1)):
        best = tuple(min(t[i][k] for t in tries) for k in (0, 1))
        times.setdefault(f"{{name}}|{{side}}", []).append(best)
"""


def main() -> None:
    cells = Cells()
    try:
        cells.rounds(SETUP, ROUND, ROUNDS)
        times = cells.value("times")
        cells.run(
            f"per_print = [(plains['thread'].run(plain_stream, chatty, {PRINTS}),"
            f" dnb.submit(chatty, {PRINTS}, backend='thread').result()) for _ in range(5)]"
        )
        per_print = cells.value("per_print")
    finally:
        cells.close()
    print(f"map_tasks of 1 ms tasks, plain daglite vs daglite-nb, one kernel, {ROUNDS} rounds:")
    for name, (_, _, n) in RUNS.items():
        plain, live = times[f"{name}|plain"], times[f"{name}|live"]
        print(f" {name}, {n} tasks:")
        for k, what in ((0, "wall time"), (1, "kernel CPU time")):
            ratios = [mine[k] / theirs[k] for theirs, mine in zip(plain, live, strict=True)]
            best_plain = min(t[k] for t in plain)
            best_live = min(t[k] for t in live)
            print(
                f"  {what:<16} plain best {best_plain:.3f} s, captured best {best_live:.3f} s;"
                f" ratio median {statistics.median(ratios):.3f}x"
                f" ({min(ratios):.3f}-{max(ratios):.3f}x)"
            )
    print(f"one print, kernel CPU (median of 5 tasks printing {PRINTS} lines each):")
    for i, side in enumerate(("to ipykernel's stream", "captured by daglite-nb")):
        print(f"  {side:<24} {statistics.median(p[i] for p in per_print) * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
