"""JupyterLab in headless Chromium: the panel and the future widgets as a person sees them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

CELLS = [
    "%load_ext daglite_nb\n%daglite start --max-threads 2",
    "import time\nimport daglite_nb as dnb\nfrom daglite import task\n\n"
    "@task\ndef slow_square(x):\n    time.sleep(0.3)\n    print('squaring', x)\n"
    "    return x * x\n\n"
    "@task\ndef boom(message):\n    raise ValueError(message)",
    "%daglite panel",
    "fut = %daglite submit slow_square(3)\nfut",
    "bad = %daglite submit boom('the data was bad')\nbad",
    "group = dnb.map(slow_square, range(8))\ngroup",
    "print('default backend:', dnb.status().backend)",
]

ALL_PROMPTS_DONE = """() => {
    const panel = [...document.querySelectorAll('.jp-NotebookPanel')]
        .find(p => !p.classList.contains('lm-mod-hidden'));
    if (!panel) return false;
    const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
    return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p.textContent.trim()));
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on loopback serving a notebook made of CELLS."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(notebook, tmp_path / "demo.ipynb")
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser",
            "--ip", "127.0.0.1", f"--port={port}", "--ServerApp.token=", "--ServerApp.password=",
            f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=None",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "JupyterLab did not start"
            time.sleep(0.5)
    yield f"{url}/lab/tree/demo.ipynb?reset"
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def test_panel_and_widgets_in_jupyterlab(lab):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=BROWSER_ARGS, headless=True
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(lab)
        notebook = page.locator(".jp-NotebookPanel:visible")
        notebook.wait_for(timeout=60_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
        page.keyboard.press("Control+b")  # hide the file browser
        page.locator("#jp-MainMenu .lm-MenuBar-itemLabel:text-is('Run')").click()
        page.locator(".lm-Menu:visible .lm-Menu-itemLabel:text-is('Run All Cells')").click()
        page.wait_for_function(ALL_PROMPTS_DONE, timeout=120_000, polling=250)

        # The future widgets and the progress bar reach their final states.
        for selector in (
            ".daglite-nb-future:has-text('finished'):has-text('slow_square(3)'):has-text('9')",
            ".daglite-nb-future:has-text('failed'):has-text('ValueError: the data was bad')",
            ".daglite-nb-group:has-text('8/8'):has-text('finished')",
        ):
            notebook.locator(selector).first.wait_for(timeout=60_000)
        # The panel counts them.
        notebook.locator(".widget-html:has-text('finished 9'):has-text('failed 1')").wait_for(
            timeout=30_000
        )

        # A future's output folds open on click; the panel shows the output of a picked call.
        future = notebook.locator(".jp-CodeCell").nth(CELLS.index(CELLS[3]))
        future.locator(".jupyter-widget-Collapse-header:has-text('output · 1 line')").click()
        future.locator("pre.daglite-nb-output:has-text('squaring 3')").wait_for(timeout=30_000)
        notebook.get_by_label("output of").select_option("slow_square(3)")
        notebook.locator(".widget-html pre:has-text('squaring 3')").nth(1).wait_for(timeout=30_000)

        # Pick another backend in the panel's dropdown; the kernel's session follows.
        notebook.get_by_label("backend").select_option("inline")
        last_cell = notebook.locator(".jp-CodeCell").nth(len(CELLS) - 1)
        last_cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        last_cell.locator(".jp-OutputArea-output:has-text('default backend: inline')").wait_for(
            timeout=30_000
        )

        ARTIFACTS.mkdir(exist_ok=True)
        page.evaluate("document.activeElement && document.activeElement.blur()")
        notebook.screenshot(path=str(ARTIFACTS / "notebook.png"))
        panel_output = notebook.locator(".jp-CodeCell").nth(CELLS.index("%daglite panel"))
        panel_output = panel_output.locator(".jp-OutputArea")
        panel_output.scroll_into_view_if_needed()
        panel_output.screenshot(path=str(ARTIFACTS / "panel.png"))
        browser.close()
    assert (ARTIFACTS / "panel.png").stat().st_size > 10_000
