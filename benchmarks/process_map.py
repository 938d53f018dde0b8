"""Process fan-outs in a real kernel: daglite-nb against joblib and plain daglite, one run.

In one kernel, three pools of two worker processes stay warm side by side: joblib's
`Parallel(n_jobs=2)` (loky), a plain daglite session on daglite's process backend (in a
context of its own), and a daglite-nb session on its process backend, with live progress (the
widget of each `map_tasks`). Each round runs the same fan-out on each, in turn: no-op tasks and
tasks of 1 ms of CPU work. Each run measures wall time, the kernel's CPU time and the CPU time
of all its worker processes. The figures are the median and range of each way's times, and of
its ratios to joblib and to plain daglite in the same round.

Then the latency of one submitted call (`dnb.submit(...).result()` against daglite's
`Backend.submit(...).result()` on its process backend): the median of many.

Run: `.venv/bin/python benchmarks/process_map.py` (needs the `bench` extra; figures in
docs/performance.md).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from live_futures import Cells

N = 2_000
N_MS = 1_000
ROUNDS = 9
LATENCY_CALLS = 200

SETUP = f"""
import contextvars, gc, json, statistics, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
import daglite, daglite_nb as dnb
from daglite import map_tasks
from daglite.backends.manager import BackendManager
from joblib import Parallel, delayed
from _work import noop, one_ms, noop_task, one_ms_task, workers_cpu

def timed(func):
    gc.collect()
    w0, t0, c0 = workers_cpu(), time.perf_counter(), time.process_time()
    func()
    return time.perf_counter() - t0, time.process_time() - c0, workers_cpu() - w0

plain_context = contextvars.Context()
plain_context.run(daglite.session(backend="process").__enter__)
joblib_pool = Parallel(n_jobs=2)

WAYS = {{
    "joblib": lambda fn, task, n: joblib_pool(delayed(fn)(i) for i in range(n)),
    "daglite": lambda fn, task, n: plain_context.run(map_tasks, task, range(n)),
    "daglite-nb": lambda fn, task, n: map_tasks(task, range(n)),
}}
LOADS = {{"no-op": (noop, noop_task, {N}), "1 ms": (one_ms, one_ms_task, {N_MS})}}

dnb.start(backend="process", max_processes=2)
for way in WAYS.values():  # warm: workers started, modules imported
    way(noop, noop_task, 50)
times = {{(load, way): [] for load in LOADS for way in WAYS}}
"""

ROUND = """
for load, (fn, task, n) in LOADS.items():
    for way, run in WAYS.items():
        times[load, way].append(timed(lambda: run(fn, task, n)))
"""

LATENCY = f"""
def latency(submit):
    seconds = []
    for _ in range({LATENCY_CALLS}):
        t0 = time.perf_counter()
        submit()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds)

def plain_submit():
    BackendManager.get_active().get("process").submit(noop_task, (1,)).result()

def live_submit():
    dnb.submit(noop_task, 1).result()

latencies = {{}}
for _ in range(3):  # alternating
    latencies.setdefault("daglite", []).append(plain_context.run(latency, plain_submit))
    latencies.setdefault("daglite-nb", []).append(latency(live_submit))
result = {{
    "times": [[load, way, runs] for (load, way), runs in times.items()],
    "latencies": latencies,
}}
"""


def main() -> None:
    cells = Cells()
    try:
        cells.rounds(SETUP, ROUND, ROUNDS)
        cells.run(LATENCY)
        result = cells.value("result")
    finally:
        cells.close()
    times = {(load, way): runs for load, way, runs in result["times"]}
    print(f"Process fan-outs, 2 workers each, one kernel, {ROUNDS} alternating rounds")
    print("(median and range; ratios are per round, against joblib and plain daglite)")
    for load, n in (("no-op", N), ("1 ms", N_MS)):
        print(f"\n{n} {load} tasks:")
        print(f"  {'':12} {'wall':>22} {'kernel CPU':>22} {'workers CPU':>22}")
        for way in ("joblib", "daglite", "daglite-nb"):
            columns = [_spread([run[i] for run in times[load, way]]) for i in range(3)]
            print(f"  {way:12} " + " ".join(f"{c:>22}" for c in columns))
        for anchor in ("joblib", "daglite"):
            for i, what in enumerate(("wall", "kernel CPU")):
                ratios = [
                    ours[i] / theirs[i]
                    for ours, theirs in zip(
                        times[load, "daglite-nb"], times[load, anchor], strict=True
                    )
                ]
                print(f"  daglite-nb / {anchor} ({what}): {_spread(ratios, 'x')}")
    print("\nOne submitted call, round trip (median of each run of calls):")
    for way, medians in result["latencies"].items():
        print(f"  {way:12} {_spread(medians, ' ms', 1e3)}")


def _spread(values: list[float], unit: str = " s", scale: float = 1.0) -> str:
    low, median, high = (v * scale for v in (min(values), statistics.median(values), max(values)))
    digits = 2 if unit == "x" else 3
    return f"{median:.{digits}f}{unit} ({low:.{digits}f}-{high:.{digits}f})"


if __name__ == "__main__":
    sys.exit(main())
