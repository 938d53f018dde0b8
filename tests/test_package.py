"""What an installed daglite-nb tells about itself: one version, types, no stray pre-release."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from packaging.version import Version

import daglite_nb


def test_the_version_is_the_installed_metadata():
    assert daglite_nb.__version__ == importlib.metadata.version("daglite-nb")


def test_the_package_ships_its_type_information():
    assert (Path(daglite_nb.__file__).parent / "py.typed").is_file()


def test_no_installed_distribution_is_a_pre_release_but_daglite():
    pre = sorted(
        f"{dist.metadata['Name']} {dist.version}"
        for dist in importlib.metadata.distributions()
        if Version(dist.version).is_prerelease and dist.metadata["Name"].lower() != "daglite"
    )
    assert pre == []
