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
REPEAT = 21

SETUP = f"""
import gc, time, json, statistics
import daglite, daglite_nb as dnb
from daglite import task, map_tasks
from daglite.backends.manager import BackendManager
from concurrent.futures import wait

@task
def noop(x):
    return x

@task
def one_ms(x):
    time.sleep(0.001)
    return x

def timed(func):
    gc.collect()  # every timed call starts from a collected heap
    t0 = time.perf_counter()
    func()
    return time.perf_counter() - t0

def plain(func):
    # A plain daglite session inside the cell: daglite-nb's session is set aside meanwhile.
    with daglite.session(backend="thread"):
        func()  # warm the pool
        return timed(func)

def plain_submit():
    backend = BackendManager.get_active().get("thread")
    wait([backend.submit(noop, (i,)) for i in range({N})])

def live_submit():
    wait([dnb.submit(noop, i) for i in range({N})])

dnb.start(backend="thread")
map_tasks(noop, range(10))
rounds = {{"plain_map": [], "live_map": [], "plain_submit": [], "dnb_submit": [],
          "plain_map_1ms": [], "live_map_1ms": []}}
"""

ROUND = f"""
rounds["plain_map"].append(plain(lambda: map_tasks(noop, range({N}))))
rounds["live_map"].append(timed(lambda: map_tasks(noop, range({N}))))
rounds["plain_submit"].append(plain(plain_submit))
rounds["dnb_submit"].append(timed(live_submit))
rounds["plain_map_1ms"].append(plain(lambda: map_tasks(one_ms, range({N_MS}))))
rounds["live_map_1ms"].append(timed(lambda: map_tasks(one_ms, range({N_MS}))))
"""

SUMMARY = """
figures = {name: min(times) for name, times in rounds.items()}
ratios = {
    live: statistics.quantiles([l / p for p, l in zip(rounds[plain], rounds[live])], n=4)
    for plain, live in [("plain_map", "live_map"), ("plain_submit", "dnb_submit"),
                        ("plain_map_1ms", "live_map_1ms")]
}
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
        for _ in range(REPEAT):  # plain and live alternate, so drift hits both alike
            cells.run(ROUND)
        cells.run(SUMMARY)
        cells.drain(1.0)
        messages = cells.run(ONE_LIVE_MAP) + cells.drain(1.0)
        figures = cells.value("figures")
        ratios = cells.value("ratios")
        one = cells.value("one")
    finally:
        cells.close()
    print(f"{N} no-op tasks, thread backend, one kernel, {REPEAT} alternating rounds:")
    _compare(
        "map_tasks, plain daglite.session",
        "plain_map",
        "daglite-nb + live progress",
        "live_map",
        figures,
        ratios,
    )
    _compare(
        "Backend.submit (daglite)", "plain_submit", "dnb.submit", "dnb_submit", figures, ratios
    )
    print(f"  comm messages for one live map of {one:.2f} s (+1 s drain): {messages}")
    print(f"{N_MS} tasks of 1 ms (time.sleep), thread backend, {REPEAT} alternating rounds:")
    _compare(
        "map_tasks, plain daglite.session",
        "plain_map_1ms",
        "daglite-nb + live progress",
        "live_map_1ms",
        figures,
        ratios,
    )


def _compare(
    plain_label: str,
    plain: str,
    live_label: str,
    live: str,
    figures: dict[str, float],
    ratios: dict[str, list[float]],
) -> None:
    print(f"  {plain_label:<38} best {figures[plain]:.3f} s")
    print(f"  {live_label:<38} best {figures[live]:.3f} s")
    best = figures[live] / figures[plain]
    low, median, high = ratios[live]
    print(
        f"  ratio: of the bests {best:.2f}x; of each round: median {median:.2f}x"
        f" (middle half {low:.2f}-{high:.2f}x)"
    )


if __name__ == "__main__":
    main()
