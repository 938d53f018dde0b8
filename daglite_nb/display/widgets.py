"""The live widgets: one per displayed future, one per fan-out."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from daglite_nb.display import render
from daglite_nb.display.flusher import flusher
from daglite_nb.tracking import PENDING
from daglite_nb.tracking import TERMINAL
from daglite_nb.tracking import LiveFuture
from daglite_nb.tracking import TaskGroup


class FutureView:
    """A future's status line and, while it is pending, its cancel button."""

    def __init__(self, future: LiveFuture) -> None:
        self.future = future
        self.line = widgets.HTML(render.future_live_html(future.record, future))
        self.cancel = widgets.Button(
            description="cancel", icon="stop", tooltip="Cancel this task if it has not started"
        )
        self.cancel.layout.width = "auto"
        self.cancel.on_click(lambda _: future.cancel())
        self.widget = widgets.HBox([self.line, self.cancel])
        self._show_cancel(future.record.state == PENDING)
        future.record.listen(self._changed)
        self._changed()

    def refresh(self) -> bool:
        """Push the state; keep ticking while the task has not ended."""
        record = self.future.record
        self.line.value = render.future_live_html(record, self.future)
        self._show_cancel(record.state == PENDING)
        return record.state not in TERMINAL

    def _changed(self) -> None:
        flusher().mark(self)

    def _show_cancel(self, visible: bool) -> None:
        self.cancel.layout.display = None if visible else "none"


class GroupView:
    """A fan-out's progress bar and summary, in one widget."""

    def __init__(self, group: TaskGroup) -> None:
        self.group = group
        self.widget = widgets.HTML(render.group_live_html(group))
        group.listen(self._changed)
        self._changed()

    def refresh(self) -> bool:
        """Push the counts; keep ticking until the fan-out ended."""
        self.widget.value = render.group_live_html(self.group)
        return self.group.ended is None

    def _changed(self) -> None:
        flusher().mark(self)


def bundle(widget: widgets.Widget, text: str, html: str) -> dict[str, Any]:
    """A display bundle: the widget view plus static text and HTML fallbacks."""
    data = widget._repr_mimebundle_()
    data["text/plain"] = text
    data["text/html"] = html
    return data
