"""Cost of live tracking, measured inside a real kernel against plain daglite in the same run.

Run: `.venv/bin/python benchmarks/live_futures.py` (prints the figures recorded in
docs/performance.md).
"""

from __future__ import annotations

import json
import queue

from jupyter_client.manager import KernelManager

N = 10_000
N_MS = 2_000
REPEAT = 5

SETUP = f"""
import time, json
import daglite, daglite_nb as dnb
from daglite import task, map_tasks
from daglite.backends.local import ThreadBackend
from concurrent.futures import wait

@task
def noop(x):
    return x

@task
def one_ms(x):
    time.sleep(0.001)
    return x

def best(func):
    times = []
    for _ in range({REPEAT}):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)

def plain_map():
    with daglite.session(backend="thread"):
        best(lambda: map_tasks(noop, range(10)))  # warm the pool
        return best(lambda: map_tasks(noop, range({N})))

def plain_map_1ms():
    with daglite.session(backend="thread"):
        return best(lambda: map_tasks(one_ms, range({N_MS})))

def plain_submit():
    with daglite.session(backend="thread"):
        backend = daglite.backends.manager.BackendManager.get_active().get("thread")
        return best(lambda: wait([backend.submit(noop, (i,)) for i in range({N})]))
"""

PLAIN = (
    "figures = {'plain_map': plain_map(), 'plain_submit': plain_submit(),"
    " 'plain_map_1ms': plain_map_1ms()}"
)

LIVE = f"""
dnb.start(backend="thread")
map_tasks(noop, range(10))
figures['live_map'] = best(lambda: map_tasks(noop, range({N})))
figures['dnb_submit'] = best(lambda: wait([dnb.submit(noop, i) for i in range({N})]))
figures['live_map_1ms'] = best(lambda: map_tasks(one_ms, range({N_MS})))
"""

ONE_LIVE_MAP = (
    f"t0 = time.perf_counter(); map_tasks(noop, range({N})); one = time.perf_counter() - t0"
)


class Cells:
    """Run cells in a kernel and count the comm messages they cause."""

    def __init__(self) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel()
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str) -> int:
        msg_id = self.client.execute(code)
        comm = 0
        while True:
            msg = self.client.get_iopub_msg(timeout=600)
            comm += msg["msg_type"] == "comm_msg"
            if msg["msg_type"] == "error":
                raise RuntimeError("\n".join(msg["content"]["traceback"]))
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                return comm

    def drain(self, seconds: float) -> int:
        comm = 0
        try:
            while True:
                comm += self.client.get_iopub_msg(timeout=seconds)["msg_type"] == "comm_msg"
        except queue.Empty:
            return comm

    def value(self, expression: str) -> object:
        msg_id = self.client.execute(f"print(json.dumps({expression}))")
        out = ""
        while True:
            msg = self.client.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out += msg["content"]["text"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return json.loads(out)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def main() -> None:
    cells = Cells()
    try:
        cells.run("%load_ext daglite_nb")
        cells.run(SETUP)
        cells.run(PLAIN)
        cells.run(LIVE)
        cells.drain(1.0)
        messages = cells.run(ONE_LIVE_MAP) + cells.drain(1.0)
        figures = cells.value("figures")
        one = cells.value("one")
    finally:
        cells.close()
    map_ratio = figures["live_map"] / figures["plain_map"]
    submit_ratio = figures["dnb_submit"] / figures["plain_submit"]
    print(f"{N} no-op tasks on the thread backend, best of {REPEAT}, in one kernel:")
    print(f"  map_tasks, plain daglite.session      {figures['plain_map']:.3f} s")
    print(f"  map_tasks, daglite-nb + live progress {figures['live_map']:.3f} s")
    print(f"  ratio live/plain map                  {map_ratio:.2f}x")
    print(f"  Backend.submit (daglite)              {figures['plain_submit']:.3f} s")
    print(f"  dnb.submit                            {figures['dnb_submit']:.3f} s")
    print(f"  ratio dnb.submit/Backend.submit       {submit_ratio:.2f}x")
    print(f"  comm messages for one live map of {one:.2f} s (+1 s drain): {messages}")
    ms_ratio = figures["live_map_1ms"] / figures["plain_map_1ms"]
    print(f"{N_MS} tasks of 1 ms (time.sleep) on the thread backend, best of {REPEAT}:")
    print(f"  map_tasks, plain daglite.session      {figures['plain_map_1ms']:.3f} s")
    print(f"  map_tasks, daglite-nb + live progress {figures['live_map_1ms']:.3f} s")
    print(f"  ratio live/plain map                  {ms_ratio:.2f}x")


if __name__ == "__main__":
    main()
