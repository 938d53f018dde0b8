"""Live futures in a real kernel, read from the iopub comm traffic a frontend would receive."""

from __future__ import annotations

import time

TASKS = """
import time, threading
import daglite_nb as dnb
from daglite import task, map_tasks

@task
def slow(seconds, x):
    time.sleep(seconds)
    return x * x

@task
def boom(message):
    raise ValueError(message)

@task
def noop(x):
    return x
"""

VIEW = "application/vnd.jupyter.widget-view+json"


def _model_id(output):
    return output["data"][VIEW]["model_id"]


def _html_values(kernel, marker):
    return [
        state["value"]
        for message in kernel.comm_log
        if (state := message["data"].get("state", {})).get("value", "").find(marker) >= 0
    ]


def test_submitted_task_widget_goes_running_then_finished(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start")
    shown = kernel.ok("fut = %daglite submit slow(0.6, x=7)\nfut")
    bundle = shown.outputs[-1]["data"]
    assert bundle["text/plain"] == "<LiveFuture slow(0.6, x=7) on thread>"
    assert bundle["text/html"] == "<code>&lt;LiveFuture slow(0.6, x=7) on thread&gt;</code>"
    assert VIEW in bundle
    assert kernel.eval("fut.result()") == 49
    kernel.drain(0.5)
    values = _html_values(kernel, "daglite-nb-future")
    assert any("running" in v and "slow(0.6, x=7)" in v for v in values), values
    assert "finished" in values[-1] and "49" in values[-1] and "ThreadPoolExecutor" in values[-1]
    facts = kernel.eval("(fut.state, fut.task_name, fut.backend, fut.worker[:18])")
    assert facts == ("finished", "slow", "thread", "ThreadPoolExecutor")


def test_failed_task_shows_exception_and_reraises_original_type(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start")
    kernel.ok("bad = dnb.submit(boom, 'went wrong')\nbad")
    failed = kernel.run("bad.result()")
    assert failed.error["ename"] == "ValueError" and failed.error["evalue"] == "went wrong"
    kernel.drain(0.5)
    last = _html_values(kernel, "daglite-nb-future")[-1]
    assert "failed" in last and "ValueError: went wrong" in last and "Traceback" in last
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
        "display(ok, bad, dnb.map(evil, ['<script>m</script>', 'fail']))\n"
        "map_tasks(evil, ['<script>auto</script>'])"
    )
    kernel.run("bad.result()")
    kernel.drain(0.6)
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
    kernel.drain(1.0)
    progress = [o for o in result.outputs if VIEW in o.get("data", {})]
    assert len(progress) == 1, "one progress widget for the whole fan-out"
    assert progress[0]["data"]["text/plain"] == "<map_tasks noop on thread>"
    updates = kernel.updates(_model_id(progress[0]))
    assert "<b>10000/10000</b> done" in updates[-1]["value"]
    assert "0 failed" in updates[-1]["value"] and "0 cancelled" in updates[-1]["value"]
    # Documented bound (docs/live-futures.md): at most 10 per second of run time, plus
    # the final refresh and the clock ticks of the drain window.
    elapsed = kernel.eval("elapsed")
    assert len(updates) <= 10 * (elapsed + 1.0) + 3, (len(updates), elapsed)
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
    kernel.drain(0.5)
    assert "<b>250/250</b> done" in _html_values(kernel, "daglite-nb-group")[-1]


def test_interrupt_cancels_the_cells_pending_futures(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --max-threads 2")
    msg_id = kernel.run("group = dnb.map(slow, [0.5] * 20, range(20))\ngroup.results()", wait=False)
    time.sleep(1.2)
    kernel.manager.interrupt_kernel()
    assert kernel.collect(msg_id, timeout=15).error["ename"] == "KeyboardInterrupt"
    states = kernel.eval("[f.state for f in group]")
    assert states.count("cancelled") >= 12, states
    kernel.ok("display(group)")
    kernel.drain(1.5)
    last = _html_values(kernel, "daglite-nb-group")[-1]
    assert f"{states.count('cancelled')} cancelled" in last
    assert kernel.eval("dnb.submit(slow, 0, 5).result()") == 25


def test_interrupting_a_map_tasks_cell_cancels_its_pending_calls(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --max-threads 2")
    msg_id = kernel.run("map_tasks(slow, [0.5] * 20, range(20))", wait=False)
    time.sleep(1.2)
    kernel.manager.interrupt_kernel()
    result = kernel.collect(msg_id, timeout=15)
    assert result.error["ename"] == "KeyboardInterrupt"
    kernel.drain(1.5)  # the calls that ran end, and the bar gets its final state
    counts = kernel.eval("dict(dnb.session.current().tracker.counts)")
    assert counts["cancelled"] >= 12 and counts["cancelled"] + counts["finished"] == 20, counts
    progress = [o for o in result.outputs if VIEW in o.get("data", {})]
    last = kernel.updates(_model_id(progress[0]))[-1]["value"]
    assert f"{counts['cancelled']} cancelled" in last and "<b>20/20</b> done" in last
    assert kernel.eval("map_tasks(slow, [0] * 3, range(3))") == [0, 1, 4]


def test_cancel_button_cancels_a_pending_task(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --max-threads 1")
    kernel.ok(
        "from daglite_nb.display.widgets import FutureView\n"
        "blocker = dnb.submit(slow, 1.5, 0)\n"
        "waiting = dnb.submit(slow, 0, 1)\n"
        "view = FutureView(waiting)\n"
        "display(view.widget)"
    )
    button = kernel.eval("view.cancel.model_id")
    kernel.send_comm(button, {"method": "custom", "content": {"event": "click"}})
    assert kernel.eval("(time.sleep(0.3), waiting.state)[1]") == "cancelled"
    assert kernel.eval("waiting.cancelled() and blocker.result() == 0")
    kernel.drain(0.5)
    assert "cancelled" in _html_values(kernel, "daglite-nb-future")[-1]


def test_no_progress_option_turns_the_automatic_bar_off(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start --no-progress")
    result = kernel.ok("out = map_tasks(noop, range(10))")
    assert result.outputs == []
    kernel.ok("%daglite stop")
    kernel.ok("dnb.start(progress=True)")
    assert len(kernel.ok("out = map_tasks(noop, range(10))").outputs) == 1


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
