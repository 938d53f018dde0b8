"""What the benchmarks run and measure: in a module, so every pool's workers import it."""

from __future__ import annotations

import time

import psutil
from daglite import task


def noop(x: int) -> int:
    return x


def one_ms(x: int) -> int:
    """1 ms of CPU work."""
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    return x


noop_task = task(noop)
one_ms_task = task(one_ms)


def workers_cpu() -> float:
    """CPU seconds used so far by every process below this one (its workers, a cluster)."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total
