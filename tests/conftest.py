from __future__ import annotations

import pytest

from kernel import Kernel


@pytest.fixture
def kernel(tmp_path):
    """A fresh kernel with daglite_nb loaded, in a temporary working directory."""
    k = Kernel(cwd=str(tmp_path))
    k.ok("%load_ext daglite_nb")
    yield k
    k.close()
