"""The panel in a real kernel, driven by comm messages exactly as a frontend sends them."""

from __future__ import annotations

import time

SETUP = """
import os, time, signal
import daglite_nb as dnb
from daglite import task, map_tasks

@task
def slow(seconds):
    time.sleep(seconds)
    return os.getpid()

panel = dnb.panel()
panel
"""

VIEW = "application/vnd.jupyter.widget-view+json"


def _open_panel(kernel, start="%daglite start"):
    kernel.ok(start)
    shown = kernel.ok(SETUP)
    ids = kernel.eval(
        "{name: getattr(panel, name).model_id for name in "
        "('backend', 'error', 'start', 'stop', 'restart', 'cancel', 'table', 'counts')}"
    )
    return shown, ids


def _click(kernel, model_id):
    kernel.send_comm(model_id, {"method": "custom", "content": {"event": "click"}})


def _pick(kernel, ids, name):
    index = kernel.eval(f"list(panel.backend.options).index({name!r})")
    kernel.send_comm(
        ids["backend"], {"method": "update", "state": {"index": index}, "buffer_paths": []}
    )
    return index


def test_panel_shows_the_session_with_static_fallbacks(kernel):
    shown, ids = _open_panel(kernel)
    data = shown.outputs[-1]["data"]
    assert data["text/plain"] == "<daglite panel: session open, backend thread>"
    assert data["text/html"] == "<code>&lt;daglite panel: session open, backend thread&gt;</code>"
    options = kernel.eval("list(panel.backend.options)")
    assert options == kernel.eval("[e.name for e in dnb.list_backends()]")
    assert {"inline", "process", "thread"} <= set(options)
    # Showing it twice shows the same widget, so the same state.
    again = kernel.ok("dnb.panel()").outputs[-1]["data"][VIEW]["model_id"]
    assert again == data[VIEW]["model_id"]


def test_dropdown_switches_backend_and_use_moves_dropdown(kernel):
    _, ids = _open_panel(kernel)
    _pick(kernel, ids, "inline")
    assert kernel.eval("(time.sleep(0.2), dnb.status().backend)[1]") == "inline"
    assert kernel.eval("map_tasks(slow, [0]) == [os.getpid()]")
    kernel.ok("%daglite use process")
    kernel.drain(0.5)
    process_index = kernel.eval("list(panel.backend.options).index('process')")
    assert {"index": process_index} in [
        {"index": u["index"]} for u in kernel.updates(ids["backend"]) if "index" in u
    ]
    assert kernel.eval("panel.backend.value") == "process"


def test_backend_that_cannot_start_shows_error_and_keeps_previous(kernel):
    kernel.ok(
        "from daglite.backends.base import Backend\n"
        "class Broken(Backend):\n"
        "    name = 'broken'\n"
        "    def _start(self, *, context):\n"
        "        raise RuntimeError('<b>no cluster</b>')\n"
        "    def _submit(self, func, args, kwargs, *, context):\n"
        "        raise AssertionError\n"
        "import daglite_nb as dnb\n"
        "dnb.register_backend('broken', Broken)"
    )
    _, ids = _open_panel(kernel)
    _pick(kernel, ids, "broken")
    kernel.drain(0.5)
    assert kernel.eval("dnb.status().backend") == "thread"
    assert kernel.eval("panel.backend.value") == "thread"
    errors = [u["value"] for u in kernel.updates(ids["error"]) if "value" in u]
    assert "could not start: &lt;b&gt;no cluster&lt;/b&gt;" in errors[-1]
    thread_index = kernel.eval("list(panel.backend.options).index('thread')")
    assert [u["index"] for u in kernel.updates(ids["backend"]) if "index" in u][-1] == (
        thread_index
    )


def test_stop_and_start_buttons_and_the_panel_rebinds(kernel):
    _, ids = _open_panel(kernel)
    _click(kernel, ids["stop"])
    assert kernel.eval("(time.sleep(0.3), dnb.status().state)[1]") == "none"
    kernel.ok("%daglite start --backend inline")
    kernel.ok("map_tasks(slow, [0, 0, 0])")
    kernel.drain(0.5)
    assert "finished <b>3</b>" in kernel.eval("panel.counts.value")
    assert kernel.eval("panel.backend.value") == "inline"
    _click(kernel, ids["stop"])
    kernel.drain(0.3)
    _click(kernel, ids["start"])
    state = kernel.eval("(time.sleep(0.3), dnb.status().state, dnb.status().backend)[1:]")
    assert state == ("open", "inline")


def test_restart_backend_mends_a_broken_process_pool(kernel):
    _, ids = _open_panel(kernel, "%daglite start --backend process --max-processes 2")
    workers = set(kernel.eval("map_tasks(slow, [0.2, 0.2])"))
    kernel.ok(f"os.kill({next(iter(workers))}, signal.SIGKILL); time.sleep(0.3)")
    broken = kernel.run("map_tasks(slow, [0, 0])")
    assert broken.error and "BrokenProcessPool" in broken.error["ename"] + broken.text
    _click(kernel, ids["restart"])
    time.sleep(1.0)
    fresh = set(kernel.eval("map_tasks(slow, [0.2, 0.2])"))
    assert fresh and not fresh & workers


def test_cancel_button_works_while_a_cell_awaits(kernel):
    _, ids = _open_panel(kernel, "%daglite start --max-threads 1")
    msg_id = kernel.run(
        "futures = [dnb.submit(slow, 1.0) for _ in range(6)]\n"
        "done, pending = await dnb.wait(futures)\n"
        "states = [f.state for f in futures]",
        wait=False,
    )
    time.sleep(0.5)
    _click(kernel, ids["cancel"])  # handled while the cell awaits
    result = kernel.collect(msg_id, timeout=20)
    assert result.ok, result.text
    states = kernel.eval("states")
    assert states[0] == "finished" and states.count("cancelled") == 5, states


def test_table_shows_recent_tasks_escaped_with_their_cell(kernel):
    _, ids = _open_panel(kernel)
    shown = kernel.ok("@task(name='<i>odd</i>')\ndef odd(x):\n    return x\nmap_tasks(odd, [1, 2])")
    cell = shown.reply["content"]["execution_count"]
    kernel.drain(0.5)
    table = kernel.eval("panel.table.value")
    assert "&lt;i&gt;odd&lt;/i&gt;(2)" in table and "<i>odd" not in table
    assert f"[{cell}]" in table


def test_late_registration_and_mistakes_show_in_the_panel(kernel):
    _, ids = _open_panel(kernel)
    kernel.ok(
        "from daglite.backends.local import InlineBackend\n"
        "class Late(InlineBackend):\n"
        "    name = 'late'\n"
        "dnb.register_backend('late', Late)"
    )
    assert "late" in kernel.eval("(time.sleep(0.3), list(panel.backend.options))[1]")
    _click(kernel, ids["stop"])
    kernel.drain(0.3)
    _click(kernel, ids["restart"])  # no session: the panel says so, the kernel raises nothing
    kernel.drain(0.5)
    errors = [u["value"] for u in kernel.updates(ids["error"]) if "value" in u]
    assert "No daglite session is open" in errors[-1]
    assert kernel.eval("panel.table.value") == '<i style="color:#6b7280">no tasks yet</i>'
