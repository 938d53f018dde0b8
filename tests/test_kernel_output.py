"""What tasks print and log, in a real kernel: it reaches its own call, never another cell."""

from __future__ import annotations

import pytest

from kernel import GATE
from kernel import arrivals
from kernel import open_gate
from kernel import wait_until

TASKS = (
    GATE
    + """
import logging, sys
import daglite_nb as dnb
from daglite import task, map_tasks
from daglite.logging import get_logger

@task
def talk(x):
    print("out", x)
    print("err", x, file=sys.stderr)
    logging.getLogger("user").warning("logged %s", x)
    get_logger().warning("task logger %s", x)
    return x

@task
def late(x):
    arrive("held")
    gate()
    print("late", x)
    return x

@task
def flood(lines):
    for i in range(lines):
        print("line", i)
    print("x" * 100_000)
    return lines

@task
def fail_loud(x):
    print("before failing", x)
    if x == 2:
        raise ValueError(f"bad {x}")
    return x
"""
)

USER_BACKEND = """
from concurrent.futures import ThreadPoolExecutor
from daglite.backends.base import Backend

class Plain(Backend):
    name = "plain"

    def _start(self, *, context):
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="plain")

    def _submit(self, func, args, kwargs, *, context):
        return self.pool.submit(func, *args, **kwargs)  # no daglite context

dnb.register_backend("plain", Plain)
"""
"""A backend a user writes: its executor's threads do not carry daglite's context."""

VIEW = "application/vnd.jupyter.widget-view+json"
BACKENDS = ["inline", "thread", "process", "dask", "plain"]
WORDS = ("out {x}", "err {x}", "logged {x}", "task logger {x}")


def _streams(kernel, words):
    """The stream messages read so far that contain any of *words*."""
    return [
        m
        for m in kernel.iopub
        if m["msg_type"] == "stream" and any(w in m["content"]["text"] for w in words)
    ]


def _start(kernel, backend, *flags):
    kernel.ok(TASKS)
    if backend == "plain":
        kernel.ok(USER_BACKEND)
    extra = " --dask-workers 1" if backend == "dask" else ""
    kernel.ok(f"%daglite start --backend {backend}{extra} {' '.join(flags)}", timeout=180)


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_of_a_later_cells_call_reaches_that_call(kernel, backend):
    _start(kernel, backend)
    first = kernel.ok("dnb.submit(talk, 1).result()", timeout=120)  # starts the pool
    second = kernel.ok("fut = dnb.submit(talk, 2)\nfut.result()")
    kernel.ok("print('next cell')")
    words = [w.format(x=x) for w in WORDS for x in (1, 2)]
    assert not _streams(kernel, words), "task output reached a cell"
    assert "out" not in first.text + second.text
    # What the kernel's own threads print, outside any task, is left alone.
    thread = kernel.ok(
        "import threading\n"
        "t = threading.Thread(target=print, args=('from a thread',)); t.start(); t.join()\n"
        "print('from the cell')"
    )
    assert thread.stdout == "from a thread\nfrom the cell\n"
    output = kernel.eval("fut.output")
    assert [w.format(x=2) in output for w in WORDS] == [True] * 4, output


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_output_after_its_cell_ended_stays_with_its_call(kernel, tmp_path, backend):
    _start(kernel, backend)
    shown = kernel.ok("fut = dnb.submit(late, 5)\nfut")
    wait_until(lambda: arrivals(tmp_path) == 1, what="the task to start")
    running = kernel.run("fut.result()", wait=False)
    open_gate(tmp_path)
    assert kernel.collect(running).ok
    assert not _streams(kernel, ["late 5"])
    assert kernel.eval("fut.output") == "late 5"
    # The widget of the first cell folds the output open on click: an HTML holds its lines.
    kernel.wait_for_update(None, lambda u: "late 5" in str(u.get("value", "")))
    final = kernel.wait_for_message(
        lambda m: (
            m["msg_type"] == "update_display_data"
            and "late 5" in m["content"]["data"]["text/plain"]
        )
    )
    assert final["parent_header"]["msg_id"] == shown.reply["parent_header"]["msg_id"]
    assert "output · 1 line" in final["content"]["data"]["text/html"]


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_echo_labels_lines_in_the_submitting_cell_even_after_it_ended(kernel, tmp_path, backend):
    _start(kernel, backend, "--echo-output")
    cell = kernel.ok("fut = dnb.submit(late, 7)")
    cell_id = cell.reply["parent_header"]["msg_id"]
    echo = [o for o in cell.outputs if o.get("transient", {}).get("display_id")]
    assert echo and VIEW not in echo[0]["data"], cell.outputs
    wait_until(lambda: arrivals(tmp_path) == 1, what="the task to start")
    open_gate(tmp_path)
    kernel.ok("fut.result()")
    update = kernel.wait_for_message(
        lambda m: (
            m["msg_type"] == "update_display_data"
            and "[late(7)] late 7" in m["content"]["data"]["text/plain"]
        )
    )
    assert update["parent_header"]["msg_id"] == cell_id
    assert update["content"]["transient"]["display_id"] == echo[0]["transient"]["display_id"]
    mapped = kernel.ok("map_tasks(talk, [10, 11]) and None")
    assert "[talk" not in mapped.stdout
    kernel.wait_for_message(
        lambda m: (
            m["msg_type"] == "update_display_data"
            and m["parent_header"]["msg_id"] == mapped.reply["parent_header"]["msg_id"]
            and "] out 11" in m["content"]["data"]["text/plain"]
        )
    )


def test_bounds_hold_for_a_task_that_prints_a_lot(kernel):
    _start(kernel, "process")
    kernel.ok("fut = dnb.submit(flood, 200_000)\nfut.result()", timeout=180)
    lines = kernel.eval("fut.output.splitlines()")
    assert lines[0] == "… 199951 more lines"
    assert len(lines) == 51 and lines[-2] == "line 199999"
    assert len(lines[-1]) == 500 and lines[-1].endswith("…")
    assert kernel.eval("fut.call.output.count") == 200_001


def test_a_fan_outs_failed_call_shows_its_output(kernel):
    _start(kernel, "process")
    cell = kernel.run("map_tasks(fail_loud, [1, 2, 3])")
    assert cell.error is not None and "bad 2" in cell.error["evalue"]
    final = kernel.wait_for_message(
        lambda m: (
            m["msg_type"] == "update_display_data"
            and "1 failed" in m["content"]["data"]["text/plain"]
        )
    )
    html = final["content"]["data"]["text/html"]
    assert "before failing 2" in html and "before failing 1" not in html
