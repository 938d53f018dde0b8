"""Live futures in a real kernel, read from the iopub comm traffic a frontend would receive."""

from __future__ import annotations

import re

import pytest

from kernel import GATE
from kernel import arrivals
from kernel import open_gate
from kernel import wait_until

TASKS = (
    GATE
    + """
import time, threading
import daglite_nb as dnb
from daglite import task, map_tasks

@task
def slow(seconds, x):
    time.sleep(seconds)  # the task's own work
    return x * x

@task
def boom(message):
    raise ValueError(message)

@task
def noop(x):
    return x
"""
)

VIEW = "application/vnd.jupyter.widget-view+json"


def _model_id(output):
    return output["data"][VIEW]["model_id"]


def _html_values(kernel, marker):
    return [
        state["value"]
        for state in kernel.updates(None)
        if isinstance(state.get("value"), str) and marker in state["value"]
    ]


def _submitted(kernel):
    """Wait until a running cell printed `submitted`: its calls are all submitted.

    An interrupt before that would stop the submission itself, and leave fewer calls.
    """
    kernel.wait_for_message(
        lambda m: m["msg_type"] == "stream" and "submitted" in m["content"]["text"]
    )


def _shows(kernel, *parts):
    """Wait until some widget shows an HTML value that contains every one of *parts*."""
    return kernel.wait_for_update(
        None, lambda u: isinstance(u.get("value"), str) and all(p in u["value"] for p in parts)
    )["value"]


def test_submitted_task_widget_goes_running_then_finished(kernel, tmp_path):
    kernel.ok(TASKS)
    kernel.ok("%daglite start")
    shown = kernel.ok("fut = %daglite submit held(x=7)\nfut")
    bundle = shown.outputs[-1]["data"]
    assert bundle["text/plain"] == "<LiveFuture held(x=7) on thread>", "no live state in it"
    assert bundle["text/html"] == "<code>&lt;LiveFuture held(x=7) on thread&gt;</code>"
    assert VIEW in bundle
    wait_until(lambda: arrivals(tmp_path), what="the task to start")
    _shows(kernel, "daglite-nb-future", "running", "held(x=7)", "ThreadPoolExecutor")
    open_gate(tmp_path)
    assert kernel.eval("fut.result()") == 7
    _shows(kernel, "daglite-nb-future", "finished", "→ <code>7</code>", "ThreadPoolExecutor")
    facts = kernel.eval("(fut.state, fut.task_name, fut.backend, fut.worker[:18])")
    assert facts == ("finished", "held", "thread", "ThreadPoolExecutor")


def test_failed_task_shows_exception_and_reraises_original_type(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start")
    kernel.ok("bad = dnb.submit(boom, 'went wrong')\nbad")
    failed = kernel.run("bad.result()")
    assert failed.error["ename"] == "ValueError" and failed.error["evalue"] == "went wrong"
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(failed.error["traceback"]))  # no colours
    assert "in boom" in shown and "daglite_nb" not in shown  # the user's frames, not daglite-nb's
    _shows(kernel, "daglite-nb-future", "failed", "ValueError: went wrong", "Traceback")
    # The session and other tasks are unaffected.
    assert kernel.eval("dnb.submit(slow, 0, 3).result()") == 9


def test_user_data_never_reaches_html_unescaped(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start")
    kernel.ok(
        "@task(name='<script>name</script>')\n"
        "def evil(arg):\n"
        "    if arg == 'fail':\n"
        "        raise RuntimeError('<script>error</script>')\n"
        "    return '<script>result</script>'\n"
        "ok = dnb.submit(evil, '<script>arg</script>')\n"
        "bad = dnb.submit(evil, 'fail')\n"
        "group = dnb.map(evil, ['<script>m</script>', 'fail'])\n"
        "display(ok, bad, group)\n"
        "map_tasks(evil, ['<script>auto</script>'])"
    )
    kernel.run("bad.result()")
    _shows(kernel, "daglite-nb-group", "2/2")
    _shows(kernel, "daglite-nb-future", "failed", "RuntimeError")
    _shows(kernel, "daglite-nb-future", "finished", "result")
    html = [o["data"].get("text/html", "") for o in kernel.run("display(ok, bad)").outputs]
    html += [m["data"].get("state", {}).get("value", "") for m in kernel.comm_log]
    joined = "\n".join(str(h) for h in html)
    assert "&lt;script&gt;result&lt;/script&gt;" in joined
    assert "&lt;script&gt;error&lt;/script&gt;" in joined
    assert "&lt;script&gt;name&lt;/script&gt;" in joined
    assert "<script" not in joined


def test_ten_thousand_task_map_sends_a_bounded_number_of_messages(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start")
    result = kernel.ok(
        "t0 = time.perf_counter()\n"
        "out = map_tasks(noop, range(10_000))\n"
        "elapsed = time.perf_counter() - t0",
        timeout=120,
    )
    progress = [o for o in result.outputs if VIEW in o.get("data", {}) and "transient" in o]
    assert len({o["transient"]["display_id"] for o in progress}) == 1, "one widget for it all"
    final_text = progress[-1]["data"]["text/plain"]
    assert final_text == "<map_tasks noop × 10000 on thread: 10000 finished>"
    model = _model_id(progress[0])
    final = kernel.wait_for_update(model, lambda u: "<b>10000/10000</b> done" in u["value"])
    assert "0 failed" in final["value"] and "0 cancelled" in final["value"]
    # Documented bound (docs/live-futures.md): at most 10 per second of run time (one a tick
    # of 0.1 s: a run of 0.69 s spans 7 ticks), plus the first and the final refresh.
    updates = kernel.updates(model)
    elapsed = kernel.eval("elapsed")
    assert len(updates) <= int(10 * elapsed) + 1 + 2, (len(updates), elapsed)
    counts = kernel.eval("dict(dnb.session.current().tracker.counts)")
    assert (
        counts["finished"] == 10_000 and counts.get("pending", 0) == counts.get("running", 0) == 0
    )
    assert kernel.eval("out == list(range(10_000))")


def test_eight_threads_submitting_at_once_lose_no_update(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --max-threads 4")
    kernel.ok(
        "groups = []\n"
        "def submitter():\n"
        "    groups.append(dnb.map(noop, range(250)))\n"
        "threads = [threading.Thread(target=submitter) for _ in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "results = [g.results() for g in groups]\n"
        "display(groups[0])"
    )
    assert kernel.eval("[r == list(range(250)) for r in results]") == [True] * 8
    assert kernel.eval("[g.group.done for g in groups]") == [250] * 8
    counts = kernel.eval("dict(dnb.session.current().tracker.counts)")
    assert counts["finished"] == 2000 and counts.get("pending", 0) == counts.get("running", 0) == 0
    _shows(kernel, "daglite-nb-group", "<b>250/250</b> done")


def test_interrupt_cancels_the_cells_pending_futures(kernel, tmp_path):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --max-threads 2")
    msg_id = kernel.run(
        "group = dnb.map(held, range(20))\nprint('submitted')\ngroup.results()", wait=False
    )
    _submitted(kernel)
    wait_until(lambda: arrivals(tmp_path) == 2, what="both threads to start a task")
    kernel.manager.interrupt_kernel()
    assert kernel.collect(msg_id, timeout=60).error["ename"] == "KeyboardInterrupt"
    states = kernel.eval("[f.state for f in group]")
    assert states == ["running"] * 2 + ["cancelled"] * 18, states
    open_gate(tmp_path)
    kernel.ok("display(group)")
    _shows(kernel, "daglite-nb-group", "<b>20/20</b> done", "18 cancelled")
    assert kernel.eval("dnb.submit(slow, 0, 5).result()") == 25


def test_interrupting_a_map_tasks_cell_cancels_its_pending_calls(kernel, tmp_path):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --max-threads 2")
    msg_id = kernel.run("map_tasks(held, range(20))", wait=False)
    _shows(kernel, "daglite-nb-group", "/20</b> done")  # every call submitted
    wait_until(lambda: arrivals(tmp_path) == 2, what="both threads to start a task")
    kernel.manager.interrupt_kernel()
    result = kernel.collect(msg_id, timeout=60)
    assert result.error["ename"] == "KeyboardInterrupt"
    open_gate(tmp_path)
    kernel.wait_for("not dnb.session.current().tracker.busy")
    counts = kernel.eval("dict(dnb.session.current().tracker.counts)")
    assert (counts["cancelled"], counts["finished"]) == (18, 2), counts
    shown = [  # read before the cell ended too (while waiting for every call's submission)
        m["content"]
        for m in kernel.iopub
        if m["parent_header"].get("msg_id") == msg_id and VIEW in m["content"].get("data", {})
    ]
    model = _model_id(shown[0])
    kernel.wait_for_update(model, lambda u: "18 cancelled" in u["value"] and "20/20" in u["value"])
    assert kernel.eval("map_tasks(slow, [0] * 3, range(3))") == [0, 1, 4]


@pytest.mark.parametrize(
    "waiting",
    ["done, pending = await dnb.wait(group)", "for future in group:\n    await future"],
)
def test_interrupting_an_awaiting_cell_cancels_its_pending_calls(kernel, tmp_path, waiting):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --max-threads 2")
    msg_id = kernel.run(
        f"group = dnb.map(held, range(40))\nprint('submitted')\n{waiting}", wait=False
    )
    _submitted(kernel)
    wait_until(lambda: arrivals(tmp_path) == 2, what="both threads to start a task")
    kernel.manager.interrupt_kernel()
    assert kernel.collect(msg_id, timeout=60).error["ename"] == "CancelledError"
    assert kernel.eval("[f.state for f in group].count('cancelled')") == 38
    open_gate(tmp_path)
    kernel.wait_for("all(f.done() for f in group)")
    assert kernel.eval("[f.result() for f in group[:2]]") == [0, 1]
    assert arrivals(tmp_path) == 2


def test_cancel_button_cancels_a_pending_task(kernel, tmp_path):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --max-threads 1")
    kernel.ok(
        "from daglite_nb.display.widgets import UnitView\n"
        "blocker = dnb.submit(held, 0)\n"
        "waiting = dnb.submit(slow, 0, 1)\n"
        "view = UnitView(waiting.call, waiting.tracker)\n"
        "view.show()"
    )
    button = kernel.eval("view.cancel.model_id")
    kernel.send_comm(button, {"method": "custom", "content": {"event": "click"}})
    kernel.wait_for("waiting.state == 'cancelled'")
    open_gate(tmp_path)
    assert kernel.eval("waiting.cancelled() and blocker.result() == 0")
    _shows(kernel, "daglite-nb-future", "cancelled", "slow(0, 1)")


def test_no_progress_option_turns_the_automatic_bar_off(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --no-progress")
    result = kernel.ok("out = map_tasks(noop, range(10))")
    assert result.outputs == []
    kernel.ok("%daglite stop")
    kernel.ok("dnb.start(progress=True)")
    shown = kernel.ok("out = map_tasks(noop, range(10))").outputs
    assert [o["data"]["text/plain"] for o in shown][-1].endswith("10 finished>")


def test_final_state_is_sent_before_the_cell_ends(kernel):
    # Tools that save widget state with the notebook (nbconvert) keep only the messages of
    # the cell that is running: the final refresh must come from the cell itself.
    kernel.ok(TASKS)
    kernel.ok("%daglite start")
    result = kernel.ok("out = map_tasks(slow, [0.05] * 12, range(12))")
    values = [
        m["data"]["state"]["value"]
        for m in result.comm_msgs
        if "daglite-nb-group" in m["data"].get("state", {}).get("value", "")
    ]
    assert values and "<b>12/12</b> done" in values[-1], values


def test_awaiting_failed_futures_leaves_no_unretrieved_exception_behind(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start")
    waited = kernel.ok(
        "futures = [dnb.submit(boom, f'bad {i}') for i in range(4)]\n"
        "done, pending = await dnb.wait(futures)\n"
        "print(len(done), len(pending))"
    )
    assert waited.stdout == "4 0\n"
    collected = kernel.ok("import gc\ndel done, pending\ngc.collect()\nprint('collected')")
    assert "never retrieved" not in waited.stderr + collected.stderr
    assert collected.stdout == "collected\n"
