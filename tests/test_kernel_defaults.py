"""Defaults people set once: `%config DagliteMagics.*`, and widgets switched off for CI."""

from __future__ import annotations

from kernel import Kernel

VIEW = "application/vnd.jupyter.widget-view+json"

TASKS = """
import daglite_nb as dnb
from daglite import task, map_tasks

@task
def square(x):
    return x * x
"""


def test_config_sets_the_default_backend_and_progress_of_every_start(kernel):
    kernel.ok(TASKS)
    kernel.ok('%config DagliteMagics.default_backend = "inline"')
    kernel.ok("%config DagliteMagics.progress = False")
    assert "backend: inline" in kernel.ok("%daglite start").stdout
    mapped = kernel.ok("map_tasks(square, [1, 2])")
    assert [o for o in mapped.outputs if "display_id" in o.get("transient", {})] == []
    kernel.ok("dnb.stop()\ndnb.start()")
    assert kernel.eval("(dnb.status().backend, dnb.session.current().options.progress)") == (
        "inline",
        False,
    )
    kernel.ok("%daglite stop")
    assert "backend: thread" in kernel.ok("%daglite start --backend thread").stdout


def test_with_widgets_switched_off_outputs_are_text_and_html_that_end_with_the_outcome(tmp_path):
    kernel = Kernel(cwd=str(tmp_path), env={"DAGLITE_NB_WIDGETS": "0"})
    try:
        kernel.ok("%load_ext daglite_nb")
        kernel.ok(TASKS)
        kernel.ok("%daglite start")
        shown = kernel.ok("fut = dnb.submit(square, 7)\nfut.result()\nfut")
        mapped = kernel.ok("map_tasks(square, range(3))")
        panel = kernel.ok("%daglite panel")
        outputs = shown.outputs + mapped.outputs + panel.outputs
        assert outputs and all(VIEW not in output["data"] for output in outputs)
        texts = [output["data"]["text/plain"] for output in shown.outputs + mapped.outputs]
        assert "<LiveFuture square(7) on thread: finished → 49>" in texts
        assert "<map_tasks square × 3 on thread: 3 finished>" in texts
        cells = {cell.reply["parent_header"]["msg_id"] for cell in (shown, mapped)}
        opened = [m for m in kernel.iopub if m["msg_type"] == "comm_open"]
        assert not [m for m in opened if m["parent_header"].get("msg_id") in cells]
    finally:
        kernel.close()
