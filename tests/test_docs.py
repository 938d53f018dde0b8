"""Every ```python block of README.md and docs/*.md runs verbatim in a real kernel.

Each file's blocks run in order, as the cells of one fresh kernel started in an empty
directory, so a page's examples must stand on their own.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kernel import Kernel

ROOT = Path(__file__).resolve().parent.parent

FENCE = re.compile(
    r"^(?P<indent>[ ]*)```python[ ]*\n(?P<code>.*?)^(?P=indent)```[ ]*$", re.MULTILINE | re.DOTALL
)
"""A ```python block, also one indented inside a list item; its closing fence is indented alike."""


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """Return the line number and the code (indentation removed) of each python block."""
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        indent = len(match["indent"])
        code = "".join(line[indent:] for line in match["code"].splitlines(keepends=True))
        blocks.append((text.count("\n", 0, match.start()) + 1, code))
    return blocks


PAGES = [
    path
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    if python_blocks(path)
]


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_every_python_block_runs_verbatim(page, tmp_path):
    kernel = Kernel(cwd=str(tmp_path))
    try:
        for line, code in python_blocks(page):
            result = kernel.run(code, timeout=120)
            if not result.ok:
                where = f"{page.relative_to(ROOT)}, the block at line {line}"
                pytest.fail(f"{where}:\n{code}\n{result.text.strip()}", pytrace=False)
        kernel.shutdown()
    finally:
        kernel.close()
