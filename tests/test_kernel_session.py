"""The kernel-scoped session in a real kernel: cells, backends, async tasks, widgets."""

from __future__ import annotations

TASKS = """
import os, threading, asyncio
from daglite import task, map_tasks, gather_tasks

@task
def where(x):
    return (threading.current_thread().name, os.getpid())

@task
async def async_where(x):
    await asyncio.sleep(0)
    return (threading.current_thread().name, os.getpid())
"""


def test_loading_starts_nothing_and_twice_is_harmless(kernel):
    # Loading imports neither daglite nor widgets (it stays cheap); a session does.
    assert (
        kernel.eval("[m for m in ('daglite', 'ipywidgets') if m in __import__('sys').modules]")
        == []
    )
    kernel.ok("%load_ext daglite_nb")
    assert kernel.descendants() == []
    assert "none" in kernel.ok("%daglite status").text
    callbacks = kernel.eval(
        "[c.__name__ for c in get_ipython().events.callbacks['pre_run_cell']"
        " if c.__module__.startswith('daglite_nb')]"
    )
    assert callbacks == ["pre_run_cell"]


def test_session_lives_across_sync_and_await_cells(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start")
    names = kernel.eval("[name for name, pid in map_tasks(where, range(4))]")
    assert all(name.startswith("ThreadPoolExecutor") for name in names), names
    names = kernel.eval("await asyncio.sleep(0) or [n for n, p in map_tasks(where, range(3))]")
    assert all(name.startswith("ThreadPoolExecutor") for name in names), names
    # A cell with top-level await runs in a copied Context: the session is still there.
    kernel.ok("await asyncio.sleep(0)\nnames_after_await = map_tasks(where, range(2))")
    assert all(n.startswith("ThreadPoolExecutor") for n, _ in kernel.eval("names_after_await"))
    gathered = kernel.eval("await gather_tasks(async_where, range(2))")
    assert [pid for _, pid in gathered] == [kernel.pid] * 2
    assert "backend:  thread" in kernel.ok("%daglite status").text


def test_use_switches_backend_and_cell_magic_restores_it(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --backend inline")
    assert kernel.eval("map_tasks(where, [1])") == [("MainThread", kernel.pid)]
    assert "default backend: process" in kernel.ok("%daglite use processes").stdout
    pids = {pid for _, pid in kernel.eval("map_tasks(where, range(4))")}
    assert kernel.pid not in pids
    result = kernel.ok("%%daglite --backend inline\nprint(map_tasks(where, [1]))")
    assert str(("MainThread", kernel.pid)) in result.stdout
    assert "backend:  process" in kernel.ok("%daglite status").text
    # Restored also when the cell raises.
    failed = kernel.run("%%daglite --backend thread\nraise ValueError('boom')")
    assert "boom" in failed.text
    assert "backend:  process" in kernel.ok("%daglite status").text
    status = kernel.ok("%daglite status").text
    assert "started:  inline, process, thread" in status


def test_backends_lists_names_aliases_origin_and_marks_active(kernel):
    kernel.ok("%daglite start --backend threads")
    table = kernel.ok("%daglite backends").text
    assert "* thread   threading, threads" in table, table
    assert "  process  multiprocessing, processes  daglite" in table, table


def test_async_tasks_map_on_every_backend(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --backend inline")
    for backend in ("inline", "thread", "process"):
        kernel.ok(f"%daglite use {backend}")
        results = kernel.eval("map_tasks(async_where, range(3))")
        assert len(results) == 3, (backend, results)
        pids = {pid for _, pid in results}
        assert (pids == {kernel.pid}) == (backend != "process"), (backend, pids)


def test_widget_callback_sees_the_session(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start")
    result = kernel.ok(
        "import ipywidgets as w\n"
        "seen = []\n"
        "button = w.Button(description='go')\n"
        "button.on_click(lambda b: seen.extend(map_tasks(where, range(2))))\n"
        "display(button)"
    )
    model_id = result.outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    kernel.send_comm(model_id, {"method": "custom", "content": {"event": "click"}})
    kernel.wait_for("len(seen) == 2")
    names = kernel.eval("seen")
    assert all(n.startswith("ThreadPoolExecutor") for n, _ in names), names


def test_map_tasks_in_a_thread_a_cell_started_uses_the_session(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --backend process --max-processes 2")
    kernel.ok(
        "import threading, daglite_nb as dnb\n"
        "found = []\n"
        "thread = threading.Thread(target=lambda: found.extend(map_tasks(where, range(4))))\n"
        "thread.start(); thread.join()"
    )
    pids = {pid for _, pid in kernel.eval("found")}
    assert pids and kernel.pid not in pids, "ran on the process pool"
    assert kernel.eval("dnb.session.current().tracker.counts['finished']") == 4
    # A thread that outlives the session gets a clear error, not a silent inline run.
    kernel.ok(
        "import queue\n"
        "asks, answers = queue.Queue(), queue.Queue()\n"
        "def serve():\n"
        "    while asks.get():\n"
        "        try:\n"
        "            answers.put(map_tasks(where, range(2)))\n"
        "        except Exception as exc:\n"
        "            answers.put(exc)\n"
        "threading.Thread(target=serve, daemon=True).start()\n"
        "asks.put(True); first = answers.get(timeout=60)"
    )
    assert kernel.eval("len(first)") == 2
    kernel.ok("%daglite stop")
    kernel.ok("asks.put(True); late = answers.get(timeout=60)")
    assert kernel.eval("type(late).__name__") == "UsageError"
    assert "session is stopped" in kernel.eval("str(late)")
    # With no session open, daglite's own default applies again (inline, in that thread).
    kernel.ok("thread = threading.Thread(target=lambda: found.extend(map_tasks(where, [9])))")
    kernel.ok("thread.start(); thread.join()")
    assert kernel.eval("found[-1][1]") == kernel.pid
