"""What an installed daglite-nb tells about itself: one version, types, no stray pre-release."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

from packaging.version import Version

import daglite_nb


def test_the_version_is_the_installed_metadata():
    assert daglite_nb.__version__ == importlib.metadata.version("daglite-nb")


def test_the_package_ships_its_type_information():
    assert (Path(daglite_nb.__file__).parent / "py.typed").is_file()


TYPED_USE = """
from collections.abc import Iterator

from daglite import task

import daglite_nb as dnb


@task
def square(x: int) -> int:
    return x * x


@task
async def later(x: int) -> str:
    return str(x)


@task
def count(n: int) -> Iterator[int]:
    yield from range(n)


reveal_type(dnb.submit(square, 3).result())
reveal_type(dnb.submit(later, 3).result())
reveal_type(dnb.submit(count, 3).result())
reveal_type(dnb.map(square, [1, 2])[0])
reveal_type(dnb.map(square, [1, 2]).results())
"""


def test_submit_and_map_keep_the_task_s_result_type(tmp_path):
    (tmp_path / "use.py").write_text(TYPED_USE)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "use.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    revealed = [line.split('"')[1] for line in checked.stdout.splitlines() if "Revealed" in line]
    expected = ["int", "str", "list[int]", "daglite_nb.futures.LiveFuture[int]", "list[int]"]
    assert revealed == expected, checked.stdout


def test_no_installed_distribution_is_a_pre_release_but_daglite():
    pre = sorted(
        f"{dist.metadata['Name']} {dist.version}"
        for dist in importlib.metadata.distributions()
        if Version(dist.version).is_prerelease and dist.metadata["Name"].lower() != "daglite"
    )
    assert pre == []
