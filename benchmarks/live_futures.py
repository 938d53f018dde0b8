"""Cost of live tracking, measured inside a real kernel against plain daglite in the same run.

A plain daglite session stays open beside daglite-nb's, in a context of its own. Each round
times plain and live alternately, three tries each, and keeps each side's best try: on two
cores, threads that share the GIL make single timings swing by tens of percent, and the best
of a few tries is the cost without a scheduling hiccup. Each try measures wall time and the
kernel's CPU time (every thread of the kernel process). The figures are the median (and middle
half) of the rounds' ratios, for both.

Run: `.venv/bin/python benchmarks/live_futures.py` (prints the figures recorded in
docs/performance.md).
"""

from __future__ import annotations

import json
import queue

from jupyter_client.manager import KernelManager

N = 10_000
N_MS = 2_000
ROUNDS = 15
TRIES = 3

SETUP = f"""
import contextvars, gc, time, json, statistics
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
    t0, c0 = time.perf_counter(), time.process_time()
    func()
    return time.perf_counter() - t0, time.process_time() - c0

# A plain daglite session, open beside daglite-nb's in a context of its own, its pool warm.
plain_context = contextvars.Context()
plain_context.run(daglite.session(backend="thread").__enter__)
plain_context.run(map_tasks, noop, range(10))

def plain(func):
    return plain_context.run(timed, func)

def plain_submit():
    backend = BackendManager.get_active().get("thread")
    wait([backend.submit(noop, (i,)) for i in range({N})])

def live_submit():
    wait([dnb.submit(noop, i) for i in range({N})])

def map_noop():
    map_tasks(noop, range({N}))

def map_one_ms():
    map_tasks(one_ms, range({N_MS}))

PAIRS = [  # the same map_tasks call runs plain or live by the context it runs in
    ("plain_map", "live_map", map_noop, map_noop),
    ("plain_submit", "dnb_submit", plain_submit, live_submit),
    ("plain_map_1ms", "live_map_1ms", map_one_ms, map_one_ms),
]

dnb.start(backend="thread")
map_tasks(noop, range(10))
rounds = {{name: [] for pair in PAIRS for name in pair[:2]}}
cpu_rounds = {{name: [] for pair in PAIRS for name in pair[:2]}}
"""

ROUND = f"""
def best_of_round(plain_func, live_func):
    # Plain and live alternate; each keeps its best try, so a scheduling hiccup is dropped.
    tries = [(plain(plain_func), timed(live_func)) for _ in range({TRIES})]
    return [min(side[i] for side in sides) for sides in zip(*tries) for i in (0, 1)]

for plain_name, live_name, plain_func, live_func in PAIRS:
    p, p_cpu, l, l_cpu = best_of_round(plain_func, live_func)
    rounds[plain_name].append(p)
    rounds[live_name].append(l)
    cpu_rounds[plain_name].append(p_cpu)
    cpu_rounds[live_name].append(l_cpu)
"""

SUMMARY = """
def quartiles(table, plain, live):
    return statistics.quantiles([l / p for p, l in zip(table[plain], table[live])], n=4)

figures = {name: min(times) for name, times in rounds.items()}
cpu_figures = {name: min(times) for name, times in cpu_rounds.items()}
ratios = {live: quartiles(rounds, plain, live) for plain, live, _, _ in PAIRS}
cpu_ratios = {live: quartiles(cpu_rounds, plain, live) for plain, live, _, _ in PAIRS}
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

    def rounds(self, setup: str, one_round: str, rounds: int) -> None:
        """Load daglite-nb, run *setup*, then *one_round* *rounds* times."""
        self.run("%load_ext daglite_nb")
        self.run(setup)
        for _ in range(rounds):
            self.run(one_round)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def main() -> None:
    cells = Cells()
    try:
        cells.rounds(SETUP, ROUND, ROUNDS)
        cells.run(SUMMARY)
        cells.drain(1.0)
        messages = cells.run(ONE_LIVE_MAP) + cells.drain(1.0)
        figures = cells.value("figures")
        ratios = cells.value("ratios")
        cpu = cells.value("cpu_figures"), cells.value("cpu_ratios")
        one = cells.value("one")
    finally:
        cells.close()
    for timing, (best, quarters) in (("wall time", (figures, ratios)), ("kernel CPU time", cpu)):
        print(f"{timing}, thread backend, one kernel, {ROUNDS} rounds:")
        print(f" {N} no-op tasks:")
        _compare("map_tasks, plain daglite.session", "plain_map",
                 "daglite-nb + live progress", "live_map", best, quarters)  # fmt: skip
        _compare("Backend.submit (daglite)", "plain_submit", "dnb.submit", "dnb_submit",
                 best, quarters)  # fmt: skip
        print(f" {N_MS} tasks of 1 ms (time.sleep):")
        _compare("map_tasks, plain daglite.session", "plain_map_1ms",
                 "daglite-nb + live progress", "live_map_1ms", best, quarters)  # fmt: skip
    print(f"comm messages for one live map of {one:.2f} s (+1 s drain): {messages}")


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
