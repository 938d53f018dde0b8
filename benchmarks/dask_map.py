"""1,000 tasks through the daglite-nb `dask` backend against plain `client.map`, one cluster.

Run: `.venv/bin/python benchmarks/dask_map.py` (needs the `dask` extra). It opens a daglite-nb
session on a local cluster of two single-threaded workers, then runs the same fan-out of a
trivial function on that cluster in alternating rounds, and prints the median and range of each
way's wall time, this process's CPU time and the cluster's, and of its wall time's ratio to
plain `client.map` + `client.gather` of the function in the same round:

- `client.map` of the daglite task: plain Dask, but each call runs daglite's task machinery;
- `map_tasks` on the dask backend: daglite's fan-out through daglite-nb (context, events,
  tracking; one progress group, no LiveFutures);
- `dnb.map(...).results()`: the same with one LiveFuture per call.

With `--start` it times instead how long the backend's local cluster takes to start, against a
plain `LocalCluster` of the same size with its `Client`, each in a fresh interpreter (imports
of `distributed` included, daglite-nb's own excluded: a kernel has loaded it), in alternating
rounds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from _work import workers_cpu
from daglite import map_tasks
from daglite import task

import daglite_nb as dnb

N = 1_000
ROUNDS = 7
WORKERS = 2

PLAIN_START = f"""
import time
started = time.perf_counter()
from distributed import Client, LocalCluster
cluster = LocalCluster(
    n_workers={WORKERS},
    threads_per_worker=1,
    host="127.0.0.1",
    dashboard_address="127.0.0.1:0",
    worker_dashboard_address="127.0.0.1:0",
)
client = Client(cluster)
print(time.perf_counter() - started)
client.close()
cluster.close()
"""

BACKEND_START = f"""
import time
import daglite_nb as dnb
started = time.perf_counter()
dnb.start(backend="dask", dask_workers={WORKERS})
print(time.perf_counter() - started)
dnb.stop()
"""


def inc(x: int) -> int:
    return x + 1


inc_task = task(inc)


def timed(func: Callable[[], object]) -> tuple[float, float, float]:
    """Run *func*; return its wall time, this process's CPU time and the cluster's."""
    workers, started, cpu = workers_cpu(), time.perf_counter(), time.process_time()
    func()
    return time.perf_counter() - started, time.process_time() - cpu, workers_cpu() - workers


def compare_fan_outs() -> None:
    session = dnb.start(backend="dask", max_processes=WORKERS)
    try:
        client = session.backend_instance("dask").client
        ways = {
            "plain client.map + gather": lambda: client.gather(
                client.map(inc, range(N), pure=False)
            ),
            "client.map of the task": lambda: client.gather(
                client.map(inc_task, range(N), pure=False)
            ),
            "map_tasks on dask backend": lambda: map_tasks(inc_task, range(N)),
            "dnb.map(...).results()": lambda: dnb.map(inc_task, range(N)).results(),
        }
        for way in ways.values():  # warm up: imports, pickling caches, worker threads
            way()
        times: dict[str, list[tuple[float, ...]]] = {name: [] for name in ways}
        for _ in range(ROUNDS):
            for name, way in ways.items():
                times[name].append(timed(way))
    finally:
        dnb.stop()
    report(
        f"{N} tasks on {WORKERS} single-threaded workers, {ROUNDS} alternating rounds:",
        times,
        ("wall", "client CPU", "cluster CPU"),
    )


def start_time(code: str) -> float:
    """Run *code* in a fresh interpreter; return the seconds it printed last."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def compare_starts() -> None:
    ways = {"plain LocalCluster + Client": PLAIN_START, "dnb.start(backend='dask')": BACKEND_START}
    times: dict[str, list[tuple[float, ...]]] = {name: [] for name in ways}
    for _ in range(ROUNDS):
        for name, code in ways.items():
            times[name].append((start_time(code),))
    report(
        f"Start of a local cluster of {WORKERS} workers, {ROUNDS} alternating rounds:",
        times,
        ("wall",),
    )


def report(title: str, times: dict[str, list[tuple[float, ...]]], columns: tuple[str, ...]) -> None:
    """Print each way's median and range per column, and of its wall time's ratio to the first."""
    baseline = next(iter(times.values()))
    print(title + " median (range)")
    print(f"  {'':28}" + "".join(f"{column:>24}" for column in columns) + f"{'wall ratio':>24}")
    for name, runs in times.items():
        cells = [_spread([run[i] for run in runs], "ms", 1e3) for i in range(len(columns))]
        ratios = [run[0] / base[0] for run, base in zip(runs, baseline, strict=True)]
        print(f"  {name:28}" + "".join(f"{c:>24}" for c in [*cells, _spread(ratios, "x")]))


def _spread(values: list[float], unit: str, scale: float = 1.0) -> str:
    low, median, high = (v * scale for v in (min(values), statistics.median(values), max(values)))
    if unit == "x":
        return f"{median:.2f}x ({low:.2f}-{high:.2f})"
    return f"{median:.0f}{unit} ({low:.0f}-{high:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", action="store_true", help="time the local cluster's start")
    if parser.parse_args().start:
        compare_starts()
    else:
        compare_fan_outs()


if __name__ == "__main__":
    main()
