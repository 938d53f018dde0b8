"""Everything that shows daglite-nb objects in a notebook; the only importer of ipywidgets."""

from __future__ import annotations

import os

from daglite_nb.model import Call
from daglite_nb.model import Group
from daglite_nb.tracking import Tracker

WIDGETS_VARIABLE = "DAGLITE_NB_WIDGETS"
"""The environment variable that switches widgets off (`0`, `false`, `no`, `off`), as in CI."""


def widgets_enabled() -> bool:
    """Whether calls, groups and the panel show widgets (see `WIDGETS_VARIABLE`)."""
    return os.environ.get(WIDGETS_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")


def show(unit: Call | Group, tracker: Tracker | None = None) -> None:
    """Display the live widget of a call (cancellable through *tracker*) or a group.

    With widgets switched off, its static text and HTML, which still end with its outcome.
    """
    from daglite_nb.display.widgets import StaticView
    from daglite_nb.display.widgets import UnitView

    view = UnitView(unit, tracker) if widgets_enabled() else StaticView(unit)
    view.show()
