"""Everything that shows daglite-nb objects in a notebook; the only importer of ipywidgets."""

from __future__ import annotations

from daglite_nb.model import Call
from daglite_nb.model import Group
from daglite_nb.tracking import Tracker


def show(unit: Call | Group, tracker: Tracker | None = None) -> None:
    """Display the live widget of a call (cancellable through *tracker*) or a group."""
    from daglite_nb.display.widgets import UnitView

    UnitView(unit, tracker).show()
