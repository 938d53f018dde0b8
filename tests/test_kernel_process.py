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
"""


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
