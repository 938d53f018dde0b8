"""The process backend in a real kernel: redefinition, interrupt, crashes, teardown, orphans."""

from __future__ import annotations

import pytest

from kernel import BACKGROUND_MAP
from kernel import GATE
from kernel import SESSION_END_PROBE
from kernel import arrivals
from kernel import kill
from kernel import open_gate
from kernel import wait_gone
from kernel import wait_until

TASKS = """
import os, signal
import daglite_nb as dnb
from daglite import task, map_tasks

@task
def body(x):
    return ("old", x)

@task
def pid(x):
    return os.getpid()

@task
def meet(workers, round=0):
    # Each call of a round waits until every worker holds one: they run on distinct workers.
    arrive(f"meet{round}")
    here = f"arrived-meet{round}-"
    while len({f.split("-")[2] for f in os.listdir() if f.startswith(here)}) < workers:
        _time.sleep(0.005)
    return os.getpid()

@task
def crash(x):
    if x == 3:
        os._exit(7)
    return x

@task
def segfault(x):
    if x == 1:
        os.kill(os.getpid(), signal.SIGSEGV)
    return x

@task
def step(x, held=(), crash=(), fail=()):
    # Quick, and noted in the file `ran` (one line a call), unless held, crashing or failing.
    with open("ran", "a") as ran:
        ran.write(f"{x}\\n")
    if x in held:
        arrive("held")
        gate()
    if x in crash:
        os._exit(7)
    if x in fail:
        raise ValueError(f"bad {x}")
    return 2 * x

def process_pool():
    return dnb.session.current().backend_instance("process")._pool

def batch_sizes():
    # The size of each batch the process pool hands a worker from now on.
    from daglite_nb import _pool
    sizes, takes = [], _pool._Worker.takes
    def counted(worker, calls):
        sizes.append(len(calls))
        takes(worker, calls)
    _pool._Worker.takes = counted
    return sizes

def stalled(group, held):
    # Whether nothing of *group* moves: each worker runs a call of *held* (at the gate) or is
    # idle with no call waiting, and calls wait behind a held one on its worker.
    pool = process_pool()
    busy = [worker for worker in pool._workers if worker.calls]
    running = {f.call.index for f in group if f.state == "running"}
    in_workers = sum(len(worker.calls) for worker in busy)
    queued = sum(not f.done() for f in group) - in_workers
    blocked = running <= held and len(running) == len(busy)
    return blocked and in_workers > len(busy) and (not queued or len(busy) == len(pool._workers))
"""


def _ran(directory):
    """The arguments of the calls of `step` that ran, in the kernel's working *directory*."""
    ran = directory / "ran"
    return [int(line) for line in ran.read_text().split()] if ran.exists() else []


def _start_process_pool(kernel, workers=2, options=""):
    """Start a process session; return the pids of its workers (each runs a call at once)."""
    kernel.ok(GATE + TASKS)
    kernel.ok(f"%daglite start --backend process --max-processes {workers} {options}")
    pids = set(kernel.eval(f"map_tasks(meet, [{workers}] * {workers})"))
    assert len(pids) == workers and kernel.pid not in pids
    return pids


def test_worker_reports_the_start_through_daglite_events(kernel, tmp_path):
    _start_process_pool(kernel)
    kernel.ok("fut = dnb.submit(held, 1)")
    wait_until(lambda: arrivals(tmp_path), what="the task to start")
    kernel.wait_for("fut.state == 'running'")
    ran_on = kernel.eval("fut.worker")
    open_gate(tmp_path)
    assert kernel.eval("fut.result()") == 1
    assert ran_on.startswith("pid ") and int(ran_on[4:]) != kernel.pid


def test_task_defined_or_redefined_after_fork_runs_current_code(kernel):
    _start_process_pool(kernel)
    kernel.ok("@task\ndef body(x):\n    return ('new', x)")
    assert kernel.eval("map_tasks(body, [1, 2])") == [("new", 1), ("new", 2)]
    kernel.ok(
        "class Point:\n    def __init__(self, x): self.x = x\n"
        "@task\ndef later(p):\n    return p.x * 10"
    )
    assert kernel.eval("map_tasks(later, [Point(1), Point(2)])") == [10, 20]


def test_interrupt_cancels_pending_and_pool_keeps_working(kernel, tmp_path):
    workers = _start_process_pool(kernel)
    before = kernel.eval("dnb.session.current().tracker.counts['finished']")
    msg_id = kernel.run("results = map_tasks(held, range(40))", wait=False)
    kernel.wait_for_update(None, lambda u: "/40</b> done" in str(u.get("value")))  # all submitted
    wait_until(lambda: arrivals(tmp_path) == 2, what="both workers to start a task")
    kernel.manager.interrupt_kernel()
    interrupted = kernel.collect(msg_id, timeout=60)
    assert interrupted.error and interrupted.error["ename"] == "KeyboardInterrupt"
    open_gate(tmp_path)
    assert "results" not in kernel.eval("dir()")
    kernel.wait_for("not dnb.session.current().tracker.busy")
    # Only the calls the workers had started ran; every other one was cancelled.
    counts = kernel.eval("dict(dnb.session.current().tracker.counts)")
    assert (counts["finished"] - before, counts["cancelled"]) == (2, 38), counts
    assert arrivals(tmp_path) == 2
    # Same workers, still alive, and the next map on the same session works.
    assert set(kernel.eval("map_tasks(pid, range(4))")) <= workers


def test_a_worker_that_exits_costs_only_its_call(kernel):
    workers = _start_process_pool(kernel)
    kernel.ok("group = dnb.map(crash, range(8))")
    kernel.wait_for("all(f.done() for f in group)")
    assert kernel.eval("[f.result() for f in group if not f.exception()]") == [0, 1, 2, 4, 5, 6, 7]
    error = kernel.eval("repr(group[3].exception())")
    assert "WorkerLost" in error and "'crash[3]'" in error and "exited with code 7" in error
    # The pool replaced the worker by itself: the next map works, on a new process too.
    assert kernel.eval("map_tasks(body, range(3))") == [("old", 0), ("old", 1), ("old", 2)]
    now = set(kernel.eval("map_tasks(meet, [2, 2], [1, 1])"))
    assert len(now) == 2 and len(now - workers) == 1


def test_a_segfault_fails_its_call_and_the_next_map_works(kernel):
    _start_process_pool(kernel)
    failed = kernel.run("map_tasks(segfault, range(4))")
    assert failed.error and failed.error["ename"] == "WorkerLost"
    message = failed.error["evalue"]
    assert "'segfault[1]'" in message and "killed by SIGSEGV" in message
    assert kernel.eval("map_tasks(segfault, [0, 2, 3])") == [0, 2, 3]


def test_a_worker_killed_from_outside_fails_its_call_and_the_rest_run(kernel, tmp_path):
    # As the out-of-memory killer does: SIGKILL a worker in the middle of a task.
    _start_process_pool(kernel)
    kernel.ok("group = dnb.map(held, range(6))")
    wait_until(lambda: arrivals(tmp_path) == 2, what="both workers to start a task")
    kernel.wait_for("group[0].state == 'running' and group[1].state == 'running'")
    victim = int(kernel.eval("group[0].worker")[4:])
    kill(victim)
    open_gate(tmp_path)
    kernel.wait_for("all(f.done() for f in group)")
    error = kernel.eval("repr(group[0].exception())")
    assert f"process worker {victim}" in error and "killed by SIGKILL" in error, error
    assert kernel.eval("[f.result() for f in group[1:]]") == [1, 2, 3, 4, 5]


def test_restart_gives_the_backend_new_workers(kernel):
    _start_process_pool(kernel)
    before = set(kernel.eval("map_tasks(pid, range(8))"))
    assert "restarted backend: process" in kernel.ok("%daglite restart").stdout
    after = set(kernel.eval("map_tasks(pid, range(8))"))
    assert after and not after & before
    assert kernel.eval("dnb.restart('processes')") == "process"
    assert wait_gone(list(after), timeout=10) == []


def test_arguments_that_do_not_pickle_fail_their_call_at_once(kernel):
    _start_process_pool(kernel)
    failed = kernel.run("import threading\nmap_tasks(body, [1, threading.Lock(), 3])")
    assert failed.error and failed.error["ename"] == "CallNotSent"
    assert "'body[1]'" in failed.error["evalue"] and "_thread.lock" in failed.error["evalue"]
    assert kernel.eval("map_tasks(body, [1])") == [("old", 1)]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_every_start_method_runs_cell_tasks_heals_and_dies_with_the_kernel(kernel, method):
    _start_process_pool(kernel, options=f"--process-start-method {method}")
    kernel.ok("@task\ndef body(x):\n    return ('new', x)")
    assert kernel.eval("map_tasks(body, [1, 2])") == [("new", 1), ("new", 2)]
    assert "exited with code 7" in kernel.run("map_tasks(crash, range(5))").error["evalue"]
    pids = set(kernel.eval("map_tasks(pid, range(8))"))
    ours = [p.pid for p in kernel.descendants()]
    assert pids <= set(ours)
    kill(kernel.pid)
    assert wait_gone(ours, timeout=5) == [], "a process outlived the kernel"


@pytest.mark.parametrize("how", ["stop", "unload", "shutdown", "restart"])
def test_teardown_with_running_tasks_leaves_no_process(kernel, tmp_path, how):
    kernel.ok(SESSION_END_PROBE)
    _start_process_pool(kernel)
    kernel.ok(BACKGROUND_MAP)
    wait_until(lambda: arrivals(tmp_path) == 2, what="both workers to start a task")
    ours = [p.pid for p in kernel.descendants()]
    if how == "stop":
        assert "daglite session stopped" in kernel.ok("%daglite stop").stdout
    elif how == "unload":
        kernel.ok("%unload_ext daglite_nb")
        assert "not found" in kernel.run("%daglite status").text
    elif how == "shutdown":
        kernel.shutdown()
    else:
        kernel.shutdown(restart=True)
    assert wait_gone(ours, timeout=10) == []
    if how in ("stop", "unload"):
        assert kernel.descendants() == []
    # daglite's session was exited (its processors flushed) by our teardown.
    assert (tmp_path / "session-ended").exists()


def test_sigkill_of_the_kernel_leaves_no_worker(kernel, tmp_path):
    _start_process_pool(kernel)
    kernel.run("map_tasks(held, range(4))", wait=False)
    wait_until(lambda: arrivals(tmp_path) == 2, what="both workers to start a task")
    ours = [p.pid for p in kernel.descendants()]
    kill(kernel.pid)  # as the out-of-memory killer kills
    assert wait_gone(ours, timeout=5) == []


# region Batches

FAILING_MAP = """
sizes = batch_sizes()
failing = set(range(7, 300, 50))
group = dnb.map(step, range(300), [()] * 300, [()] * 300, [failing] * 300)
"""


def test_a_batched_map_keeps_order_indexes_and_each_calls_error(kernel, tmp_path):
    _start_process_pool(kernel)
    kernel.ok(FAILING_MAP)
    kernel.wait_for("all(f.done() for f in group)")
    assert kernel.eval("sum(sizes)") == 300 and kernel.eval("max(sizes)") > 1
    expected = [None if x % 50 == 7 else 2 * x for x in range(300)]
    assert kernel.eval("[None if f.exception() else f.result() for f in group]") == expected
    errors = kernel.eval("[str(f.exception()) for f in group if f.exception()]")
    assert errors == [f"bad {x}" for x in range(300) if x % 50 == 7]
    labels = kernel.eval("[f.call.label for f in group]")  # as the workers reported them
    assert labels == [f"step[{x}]" for x in range(300)]
    assert sorted(_ran(tmp_path)) == list(range(300))
    failed = kernel.run("map_tasks(step, range(300), [()] * 300, [()] * 300, [failing] * 300)")
    assert failed.error["evalue"] == "Task 'step[7]' failed with error: bad 7"  # daglite's words


def test_the_waiting_calls_of_a_batch_can_be_cancelled(kernel, tmp_path):
    _start_process_pool(kernel)
    # Two neighbours are held: one of them has calls behind it in its batch, wherever the
    # batches begin.
    kernel.ok("held = {200, 201}\ngroup = dnb.map(step, range(400), [held] * 400)")
    kernel.wait_for("stalled(group, held)")
    running = kernel.eval("[i for i, f in enumerate(group) if f.state == 'running']")
    behind = kernel.eval(
        "[f.call.index for f in group if not f.done() and f.state != 'running' "
        "and f.call.future.call_id in {i for w in process_pool()._workers for i in w.calls}]"
    )
    assert behind, "no call waited behind a held one in its batch"
    cancelled = kernel.eval("[i for i, f in enumerate(group) if not f.done() and f.cancel()]")
    assert set(behind) <= set(cancelled) and not set(running) & set(cancelled)
    assert kernel.eval(f"group[{running[0]}].cancel()") is False
    open_gate(tmp_path)
    kernel.wait_for("all(f.done() for f in group)")
    states = kernel.eval("[f.state for f in group]")
    assert [x for x, state in enumerate(states) if state == "cancelled"] == cancelled
    assert kernel.eval(f"[group[i].result() for i in {running}]") == [2 * i for i in running]
    ran = _ran(tmp_path)
    assert not set(ran) & set(cancelled) and len(ran) == 400 - len(cancelled) == len(set(ran))


def test_interrupt_during_a_batched_map_cancels_exactly_what_did_not_run(kernel, tmp_path):
    _start_process_pool(kernel)
    kernel.ok("tracker = dnb.session.current().tracker")
    # Held neighbours: calls wait behind one of them on its worker, or in the queue.
    msg_id = kernel.run("map_tasks(step, range(2000), [{200, 201}] * 2000)", wait=False)
    wait_until(lambda: arrivals(tmp_path) >= 1, what="a call to be held")
    kernel.manager.interrupt_kernel()
    interrupted = kernel.collect(msg_id, timeout=60)
    assert interrupted.error and interrupted.error["ename"] == "KeyboardInterrupt"
    open_gate(tmp_path)
    kernel.wait_for("not tracker.busy")
    # The map's calls, as many as were submitted before the interrupt, each counted once.
    total, counts = kernel.eval(
        "(tracker.recent[-1].group.total, tracker.recent[-1].group.ended_counts)"
    )
    ran = _ran(tmp_path)
    assert counts["cancelled"] == total - len(ran) > 0, (total, counts)
    assert counts["finished"] + counts["failed"] == len(ran) == len(set(ran)), counts
    assert kernel.eval("map_tasks(step, [1, 2])") == [2, 4]


def test_a_crash_in_the_middle_of_a_batch_costs_only_its_call(kernel, tmp_path):
    _start_process_pool(kernel)
    kernel.ok("sizes = batch_sizes()\ngroup = dnb.map(step, range(600), [()] * 600, [{300}] * 600)")
    kernel.wait_for("all(f.done() for f in group)")
    assert kernel.eval("max(sizes)") > 1
    error = kernel.eval("repr(group[300].exception())")
    assert "WorkerLost" in error and "'step[300]'" in error and "exited with code 7" in error
    others = kernel.eval("[None if f.exception() else f.result() for f in group]")
    assert others == [None if x == 300 else 2 * x for x in range(600)]
    # What ended before the crash without being sent may run again (at least once, as Dask).
    assert set(_ran(tmp_path)) == set(range(600))


def test_redefined_cell_tasks_run_their_new_body_in_batches(kernel):
    _start_process_pool(kernel)
    assert kernel.eval("map_tasks(body, range(200))") == [("old", x) for x in range(200)]
    kernel.ok("sizes = batch_sizes()\n@task\ndef body(x):\n    return ('new', x)")
    assert kernel.eval("map_tasks(body, range(200))") == [("new", x) for x in range(200)]
    assert kernel.eval("max(sizes)") > 1
