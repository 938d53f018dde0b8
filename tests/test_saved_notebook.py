"""A notebook executed by nbclient keeps each call's outcome in its saved outputs."""

from __future__ import annotations

import nbclient
import nbformat

CELLS = [
    "%load_ext daglite_nb\n%daglite start",
    "import asyncio\n"
    "import daglite_nb as dnb\n"
    "from daglite import task, map_tasks, gather_tasks\n"
    "@task\ndef square(x):\n    return x * x\n"
    "@task\ndef picky(x):\n    if x == 2:\n        raise ValueError('not 2')\n    return x\n"
    "@task\nasync def fetch(x):\n    await asyncio.sleep(0)\n    return x + 1",
    "fut = dnb.submit(square, 7)\ndisplay(fut)\nfut.result()",
    "bad = dnb.submit(picky, 2)\ndisplay(bad)\nbad.exception()",
    "out = map_tasks(square, range(5))",
    "try:\n    map_tasks(picky, range(3))\nexcept Exception:\n    pass",
    "out = await gather_tasks(fetch, range(3))",
    "group = dnb.map(square, range(4))\ndisplay(group)\ngroup.results()",
]

EXPECTED = [
    [],
    [],
    ["<LiveFuture square(7) on thread: finished → 49>"],
    ["<LiveFuture picky(2) on thread: failed: ValueError: not 2>"],
    ["<map_tasks square × 5 on thread: 5 finished>"],
    ["<map_tasks picky × 3 on thread: 2 finished, 1 failed>"],
    ["<gather_tasks fetch × 3 on thread: 3 finished>"],
    ["<dnb.map square × 4 on thread: 4 finished>"],
]


def test_saved_outputs_carry_every_outcome(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    resources = {"metadata": {"path": tmp_path}}
    nbclient.NotebookClient(notebook, timeout=120, resources=resources).execute()
    path = tmp_path / "saved.ipynb"
    nbformat.write(notebook, path)
    saved = nbformat.read(path, as_version=4)
    shown = [
        [
            output["data"]["text/plain"]
            for output in cell.outputs
            if output.get("output_type") == "display_data"
        ]
        for cell in saved.cells
    ]
    assert shown == EXPECTED
    html = saved.cells[5].outputs[0]["data"]["text/html"]
    assert "✖ failed" in html and "picky[2]: ValueError: not 2" in html
