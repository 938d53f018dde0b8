"""1,000 tasks through the daglite-nb `dask` backend against plain `client.map`, one cluster.

Run: `.venv/bin/python benchmarks/dask_map.py` (needs the `dask` extra). It opens a daglite-nb
session on a local cluster of two single-threaded workers, then runs the same fan-out of a
trivial function on that cluster in alternating rounds, and prints the best and median time of
each way and its ratio to plain `client.map` + `client.gather` of the function:

- `client.map` of the daglite task: plain Dask, but each call runs daglite's task machinery;
- `map_tasks` on the dask backend: daglite's fan-out through daglite-nb (context, events,
  tracking; one progress group, no LiveFutures);
- `dnb.map(...).results()`: the same with one LiveFuture per call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from daglite import map_tasks
from daglite import task

import daglite_nb as dnb

N = 1_000
ROUNDS = 7
WORKERS = 2


def inc(x: int) -> int:
    return x + 1


inc_task = task(inc)


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def main() -> None:
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
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(ROUNDS):
            for name, way in ways.items():
                times[name].append(timed(way))
    finally:
        dnb.stop()
    plain = statistics.median(times["plain client.map + gather"])
    print(f"{N} tasks on {WORKERS} single-threaded workers, {ROUNDS} alternating rounds:")
    print(f"  {'':28} {'best':>9} {'median':>9}  ratio (median)")
    for name, values in times.items():
        best, median = min(values) * 1e3, statistics.median(values) * 1e3
        print(f"  {name:28} {best:7.0f}ms {median:7.0f}ms  {median / 1e3 / plain:.2f}x")


if __name__ == "__main__":
    main()
