"""The process backend in a real kernel: redefinition, interrupt, teardown, orphans."""

from __future__ import annotations

import time

import pytest

from kernel import SESSION_END_PROBE
from kernel import background_map
from kernel import kill
from kernel import wait_gone

TASKS = """
import os, time
from daglite import task, map_tasks

@task
def body(x):
    return ("old", x)

@task
def nap(seconds):
    time.sleep(seconds)
    return os.getpid()
"""


def _start_process_pool(kernel, workers=2):
    kernel.ok(TASKS)
    kernel.ok(f"%daglite start --backend process --max-processes {workers}")
    pids = set(kernel.eval("map_tasks(nap, [0.2] * 4)"))
    assert len(pids) == workers and kernel.pid not in pids
    return pids


def test_worker_reports_the_start_through_daglite_events(kernel):
    pids = _start_process_pool(kernel)
    kernel.ok("import daglite_nb as dnb\nfut = dnb.submit(nap, 1.5)")
    kernel.ok("while fut.state == 'pending':\n    time.sleep(0.02)")
    assert kernel.eval("fut.state") == "running"
    ran_on = kernel.eval("fut.result()")
    assert ran_on in pids and kernel.eval("fut.worker") == f"pid {ran_on}"


def test_task_defined_or_redefined_after_fork_runs_current_code(kernel):
    _start_process_pool(kernel)
    kernel.ok("@task\ndef body(x):\n    return ('new', x)")
    assert kernel.eval("map_tasks(body, [1, 2])") == [("new", 1), ("new", 2)]
    kernel.ok(
        "class Point:\n    def __init__(self, x): self.x = x\n"
        "@task\ndef later(p):\n    return p.x * 10"
    )
    assert kernel.eval("map_tasks(later, [Point(1), Point(2)])") == [10, 20]


def test_interrupt_cancels_pending_and_pool_keeps_working(kernel):
    workers = _start_process_pool(kernel)
    msg_id = kernel.run("results = map_tasks(nap, [1.0] * 40)", wait=False)
    time.sleep(1.5)
    kernel.manager.interrupt_kernel()
    interrupted = kernel.collect(msg_id, timeout=15)
    assert interrupted.error and interrupted.error["ename"] == "KeyboardInterrupt"
    assert "results" not in kernel.eval("dir()")
    # Same workers, still alive, and the next map on the same session works.
    assert set(kernel.eval("map_tasks(nap, [0.1] * 4)")) <= workers
    assert all(p.is_running() for p in kernel.descendants())
    # Pending work was cancelled; only what the pool had already taken ran on.
    cancelled = kernel.eval("dict(__import__('daglite_nb').session.current().tracker.counts)")
    assert cancelled["cancelled"] >= 30, cancelled


@pytest.mark.parametrize("how", ["stop", "unload", "shutdown", "restart"])
def test_teardown_with_running_tasks_leaves_no_process(kernel, tmp_path, how):
    kernel.ok(SESSION_END_PROBE)
    workers = _start_process_pool(kernel)
    kernel.ok(background_map(0.5))
    if how == "stop":
        assert "daglite session stopped" in kernel.ok("%daglite stop").stdout
    elif how == "unload":
        kernel.ok("%unload_ext daglite_nb")
        assert "not found" in kernel.run("%daglite status").text
    elif how == "shutdown":
        kernel.shutdown()
    else:
        kernel.shutdown(restart=True)
    assert wait_gone(list(workers), timeout=10) == []
    if how != "shutdown":
        assert wait_gone([p.pid for p in kernel.descendants()], timeout=10) == []
    # daglite's session was exited (its processors flushed) by our teardown.
    assert (tmp_path / "session-ended").exists()


def test_sigkill_of_the_kernel_leaves_no_worker(kernel):
    workers = _start_process_pool(kernel)
    kernel.run("map_tasks(nap, [30] * 4)", wait=False)
    time.sleep(0.5)
    kill(kernel.pid)
    assert wait_gone(list(workers), timeout=5) == []
