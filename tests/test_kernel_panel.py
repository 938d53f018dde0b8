"""The panel in a real kernel, driven by comm messages exactly as a frontend sends them."""

from __future__ import annotations

from kernel import GATE
from kernel import arrivals
from kernel import open_gate
from kernel import wait_until

SETUP = """
import os, time, signal
import daglite_nb as dnb
from daglite import task, map_tasks

@task
def slow(seconds):
    time.sleep(seconds)  # the task's own work
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
    kernel.wait_for("dnb.status().backend == 'inline'")
    assert kernel.eval("map_tasks(slow, [0]) == [os.getpid()]")
    kernel.ok("%daglite use process")
    process_index = kernel.eval("list(panel.backend.options).index('process')")
    kernel.wait_for_update(ids["backend"], lambda u: u.get("index") == process_index)
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
    broken_index = _pick(kernel, ids, "broken")
    kernel.wait_for_update(ids["error"], lambda u: "no cluster" in u.get("value", ""))
    assert kernel.eval("dnb.status().backend") == "thread"
    assert kernel.eval("panel.backend.value") == "thread"
    errors = [u["value"] for u in kernel.updates(ids["error"]) if "value" in u]
    assert "could not start: &lt;b&gt;no cluster&lt;/b&gt;" in errors[-1]
    thread_index = kernel.eval("list(panel.backend.options).index('thread')")
    moved = kernel.wait_for_update(ids["backend"], lambda u: u.get("index") == thread_index)
    assert moved["index"] != broken_index


def test_stop_and_start_buttons_and_the_panel_rebinds(kernel):
    _, ids = _open_panel(kernel)
    _click(kernel, ids["stop"])
    kernel.wait_for("dnb.status().state == 'none'")
    kernel.ok("%daglite start --backend inline")
    kernel.ok("map_tasks(slow, [0, 0, 0])")
    kernel.wait_for_update(ids["counts"], lambda u: "finished <b>3</b>" in u.get("value", ""))
    assert kernel.eval("panel.backend.value") == "inline"
    _click(kernel, ids["stop"])
    kernel.wait_for("dnb.status().state == 'none'")
    _click(kernel, ids["start"])
    kernel.wait_for("dnb.status().state == 'open'")
    assert kernel.eval("dnb.status().backend") == "inline"


def test_a_killed_worker_heals_and_restart_gives_new_workers(kernel):
    _, ids = _open_panel(kernel, "%daglite start --backend process --max-processes 2")
    workers = set(kernel.eval("map_tasks(slow, [0] * 8)"))
    victim = next(iter(workers))
    kernel.ok(f"os.kill({victim}, signal.SIGKILL)")
    # No restart needed: the pool replaced the worker that died.
    healed = set(kernel.eval("map_tasks(slow, [0] * 8)"))
    assert len(healed) == 2 and victim not in healed
    _click(kernel, ids["restart"])
    kernel.wait_for(f"not set(map_tasks(slow, [0] * 8)) & {healed!r}")


def test_cancel_button_works_while_a_cell_awaits(kernel, tmp_path):
    _, ids = _open_panel(kernel, "%daglite start --max-threads 1")
    kernel.ok(GATE)
    msg_id = kernel.run(
        "futures = [dnb.submit(held, i) for i in range(6)]\n"
        "done, pending = await dnb.wait(futures)\n"
        "states = [f.state for f in futures]",
        wait=False,
    )
    wait_until(lambda: arrivals(tmp_path) == 1, what="the first task to start")
    _click(kernel, ids["cancel"])  # handled while the cell awaits
    kernel.wait_for_update(ids["counts"], lambda u: "cancelled <b>5</b>" in u.get("value", ""))
    open_gate(tmp_path)
    result = kernel.collect(msg_id, timeout=60)
    assert result.ok, result.text
    states = kernel.eval("states")
    assert states[0] == "finished" and states.count("cancelled") == 5, states


def test_table_shows_recent_tasks_escaped_with_their_cell(kernel):
    _, ids = _open_panel(kernel)
    shown = kernel.ok("@task(name='<i>odd</i>')\ndef odd(x):\n    return x\nmap_tasks(odd, [1, 2])")
    cell = shown.reply["content"]["execution_count"]
    escaped = "&lt;i&gt;odd&lt;/i&gt;[1]"
    table = kernel.wait_for_update(ids["table"], lambda u: escaped in u.get("value", ""))["value"]
    assert "<i>odd" not in table
    assert f"[{cell}]" in table


def test_late_registration_and_mistakes_show_in_the_panel(kernel):
    _, ids = _open_panel(kernel)
    kernel.ok(
        "from daglite.backends.local import InlineBackend\n"
        "class Late(InlineBackend):\n"
        "    name = 'late'\n"
        "dnb.register_backend('late', Late)"
    )
    kernel.wait_for("'late' in list(panel.backend.options)")
    _click(kernel, ids["stop"])
    kernel.wait_for("dnb.status().state == 'none'")
    _click(kernel, ids["restart"])  # no session: the panel says so, the kernel raises nothing
    no_session = "No daglite session is open"
    kernel.wait_for_update(ids["error"], lambda u: no_session in u.get("value", ""))
    assert kernel.eval("panel.table.value") == (
        '<i style="color:var(--jp-content-font-color2, #6b7280)">no tasks yet</i>'
    )


def test_objects_whose_repr_or_str_raises_break_no_later_cell(kernel):
    _, ids = _open_panel(kernel)
    kernel.ok(
        "class Nasty:\n"
        "    def __repr__(self):\n"
        "        raise KeyboardInterrupt\n"
        "class Worse(Exception):\n"
        "    def __str__(self):\n"
        "        raise KeyboardInterrupt\n"
        "@task\ndef echo(x):\n    return x\n"
        "@task\ndef fail(x):\n    raise Worse()\n"
    )
    kernel.ok(
        "futures = [dnb.submit(echo, Nasty()), dnb.submit(fail, Nasty())]\n"
        "display(*futures)\n"
        "out = map_tasks(echo, [Nasty()] * 3)"
    )
    later = [kernel.run(f"x = {i}") for i in range(15)]
    assert all(cell.ok for cell in later), [cell.text for cell in later if not cell.ok]
    placeholder = "echo(&lt;Nasty object, repr failed&gt;)"
    kernel.wait_for_update(ids["table"], lambda u: placeholder in u.get("value", ""))
    assert kernel.eval("futures[1].state") == "failed"
    assert kernel.eval("len(out)") == 3
