"""Everything that shows daglite-nb objects in a notebook; the only importer of ipywidgets."""

from __future__ import annotations

from typing import Any

from daglite_nb.tracking import LiveFuture
from daglite_nb.tracking import TaskGroup


def future_bundle(future: LiveFuture) -> dict[str, Any]:
    """The display bundle of a future: a live status widget with static fallbacks."""
    from daglite_nb.display import render
    from daglite_nb.display.widgets import FutureView
    from daglite_nb.display.widgets import bundle

    view = FutureView(future)
    return bundle(
        view.widget, render.future_text(future.record), render.future_static_html(future.record)
    )


def group_bundle(group: TaskGroup, text: str) -> dict[str, Any]:
    """The display bundle of a fan-out: one live progress widget with static fallbacks."""
    from daglite_nb.display import render
    from daglite_nb.display.widgets import GroupView
    from daglite_nb.display.widgets import bundle

    return bundle(GroupView(group).widget, text, render.group_static_html(text))


def show_group(group: TaskGroup) -> None:
    """Display a fan-out's progress widget in the current cell."""
    from IPython.display import display

    text = f"<map_tasks {group.label} on {group.backend}>"
    display(group_bundle(group, text), raw=True)
