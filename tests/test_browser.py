"""JupyterLab in headless Chromium: the panel and the future widgets as a person sees them.

It shows them in JupyterLab's light and dark themes, screenshots each under test-artifacts/
(`widgets-light.png`, `panel-dark.png`, ...; the ones in docs/images/ are copies of them) and
checks that every coloured text in them has a WCAG contrast of at least 4.5:1 on its background.
"""

from __future__ import annotations

import json
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

PANEL = "%daglite panel"
CHECKED = "checked = dnb.map(check, range(4))\nchecked"
FUTURE = "fut = %daglite submit slow_square(3)\nfut"
GROUP = "group = dnb.map(slow_square, range(8))\ngroup"
CELLS = [
    "%load_ext daglite_nb\n%daglite start --max-threads 2",
    "import time\nimport daglite_nb as dnb\nfrom daglite import task\n\n"
    "@task\ndef slow_square(x):\n    time.sleep(0.3)\n    print('squaring', x)\n"
    "    return x * x\n\n"
    "@task\ndef boom(message):\n    raise ValueError(message)\n\n"
    "@task\ndef check(x):\n    if x == 3:\n        raise ValueError(f'{x} is not allowed')\n"
    "    return x",
    PANEL,
    CHECKED,  # before the future, so that the panel's ten recent calls still hold slow_square(3)
    FUTURE,
    "bad = %daglite submit boom('the data was bad')\nbad",
    GROUP,
    "print('default backend:', dnb.status().backend)",
]
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}
CHANGE_THEME = "name => window.jupyterapp.commands.execute('apputils:change-theme', {theme: name})"

ALL_PROMPTS_DONE = """() => {
    const panel = [...document.querySelectorAll('.jp-NotebookPanel')]
        .find(p => !p.classList.contains('lm-mod-hidden'));
    if (!panel) return false;
    const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
    return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p.textContent.trim()));
}"""

CONTRAST = """(el) => {
    // The WCAG contrast of el's text on what lies behind it: el's colour over the backgrounds of
    // its ancestors (each one composited over the next, from the page's white canvas down).
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 1;
    const ctx = canvas.getContext('2d', {willReadFrequently: true});
    const rgba = (css) => {
        ctx.fillStyle = '#010203';
        ctx.fillStyle = css;
        if (ctx.fillStyle === '#010203') throw new Error('cannot read the colour ' + css);
        ctx.clearRect(0, 0, 1, 1);
        ctx.fillRect(0, 0, 1, 1);
        const [r, g, b, a] = ctx.getImageData(0, 0, 1, 1).data;
        return [r, g, b, a / 255];
    };
    const over = ([r, g, b, a], below) => [r, g, b].map((v, i) => v * a + below[i] * (1 - a));
    const luminance = (rgb) => {
        const [r, g, b] = rgb.map(v => {
            v /= 255;
            return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const chain = [];
    for (let node = el; node; node = node.parentElement) chain.unshift(node);
    let background = [255, 255, 255];
    for (const node of chain) {
        background = over(rgba(getComputedStyle(node).backgroundColor), background);
    }
    const colour = getComputedStyle(el).color;
    const [high, low] = [luminance(over(rgba(colour), background)), luminance(background)]
        .sort((a, b) => b - a);
    return {
        text: el.textContent.trim().slice(0, 50),
        style: el.getAttribute('style'),
        colour,
        background: background.map(Math.round),
        backgroundLuminance: luminance(background),
        ratio: (high + 0.05) / (low + 0.05),
    };
}"""

COLOURED_TEXT = f"""(notebook) => [...notebook.querySelectorAll('.jp-OutputArea-output [style]')]
    .filter(el => el.style.color)
    .map({CONTRAST})"""

THEME_SHOWN = f"""([name, light]) => {{
    if (document.body.dataset.jpThemeName !== name) return false;
    const panel = [...document.querySelectorAll('.jp-NotebookPanel')]
        .find(p => !p.classList.contains('lm-mod-hidden'));
    const badge = panel && panel.querySelector('.daglite-nb-future b');
    if (!badge) return false;
    const seen = ({CONTRAST})(badge).backgroundLuminance;
    return light ? seen > 0.8 : seen < 0.1;
}}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on loopback serving a notebook made of CELLS.

    Its settings and workspaces live in *tmp_path*: it starts in the light theme, asks nothing
    about news, and a theme switch does not reach the user's own JupyterLab settings.
    """
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    root = tmp_path / "root"
    root.mkdir()
    nbformat.write(notebook, root / "demo.ipynb")
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "themes.jupyterlab-settings").write_text(
        json.dumps({"theme": THEMES["light"], "adaptive-theme": False})
    )
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser",
            "--ip", "127.0.0.1", f"--port={port}", "--ServerApp.token=", "--ServerApp.password=",
            f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
            f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to switch the theme
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

        # The future widgets and the progress bars reach their final states.
        for selector in (
            ".daglite-nb-future:has-text('finished'):has-text('slow_square(3)'):has-text('9')",
            ".daglite-nb-future:has-text('failed'):has-text('ValueError: the data was bad')",
            ".daglite-nb-group:has-text('8/8'):has-text('finished')",
            ".daglite-nb-group:has-text('4/4'):has-text('failed'):has-text('3 is not allowed')",
        ):
            notebook.locator(selector).first.wait_for(timeout=60_000)
        # The panel counts them.
        notebook.locator(".widget-html:has-text('finished 12'):has-text('failed 2')").wait_for(
            timeout=30_000
        )

        # A future's output folds open on click; the panel shows the output of a picked call.
        future = notebook.locator(".jp-CodeCell").nth(CELLS.index(FUTURE))
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

        # In each theme: screenshots, and every coloured text readable on its background.
        seen = {}
        for theme, name in THEMES.items():
            page.evaluate(CHANGE_THEME, name)
            page.wait_for_function(
                THEME_SHOWN, arg=[name, theme == "light"], timeout=60_000, polling=250
            )
            page.evaluate("document.activeElement && document.activeElement.blur()")
            _screenshot_widgets(page, notebook, ARTIFACTS / f"widgets-{theme}.png")
            panel_output = notebook.locator(".jp-CodeCell").nth(CELLS.index(PANEL))
            panel_output.locator(".jp-OutputArea").screenshot(
                path=str(ARTIFACTS / f"panel-{theme}.png")
            )
            seen[theme] = notebook.evaluate(COLOURED_TEXT)
        browser.close()
    (ARTIFACTS / "contrast.json").write_text(json.dumps(seen, indent=1, ensure_ascii=False))

    for theme, measured in seen.items():
        texts = " | ".join(m["text"] for m in measured)
        for state in ("pending", "running", "finished", "failed", "cancelled"):
            assert state in texts, f"no coloured {state} text in the {theme} theme: {texts}"
        assert "ValueError: the data was bad" in texts, "the failure's summary is coloured"
        assert "settings (0 or empty = default)" in texts, "the panel's hint is coloured"
        bad = [m for m in measured if m["ratio"] < 4.5]
        assert not bad, f"contrast below 4.5:1 in the {theme} theme: {bad}"
    light, dark = ({m["style"]: m for m in seen[t]} for t in THEMES)
    assert all(m["backgroundLuminance"] > 0.8 for m in light.values())
    assert all(m["backgroundLuminance"] < 0.1 for m in dark.values())
    same = [style for style in light if light[style]["colour"] == dark.get(style, {}).get("colour")]
    assert not same, f"colours that do not follow the theme: {same}"
    for theme in THEMES:
        for image in (f"widgets-{theme}.png", f"panel-{theme}.png"):
            assert (ARTIFACTS / image).stat().st_size > 10_000


def _screenshot_widgets(page, notebook, path: Path) -> None:
    """A screenshot of the cells from the failing fan-out to the finished one, widgets and all."""
    first = notebook.locator(".jp-CodeCell").nth(CELLS.index(CHECKED))
    last = notebook.locator(".jp-CodeCell").nth(CELLS.index(GROUP))
    first.evaluate("el => el.scrollIntoView({block: 'start', behavior: 'instant'})")
    top, bottom = first.bounding_box(), last.bounding_box()
    assert top and bottom, "the widgets' cells are shown"
    height = bottom["y"] + bottom["height"] + 8 - top["y"]
    assert height <= page.viewport_size["height"] - top["y"], "the widgets' cells fit the page"
    clip = {"x": top["x"], "y": top["y"], "width": top["width"], "height": height}
    page.screenshot(path=str(path), clip=clip)
