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
from daglite_nb.tracking import Tracker


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
        follow(future.tracker)
        self._changed()

    def refresh(self) -> bool:
        """Push the state; keep ticking while the task has not ended."""
        self.future.tracker.apply()
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
        if group.tracker is not None:
            follow(group.tracker)
        self._changed()

    def refresh(self) -> bool:
        """Push the counts; keep ticking until the fan-out ended."""
        if self.group.tracker is not None:
            self.group.tracker.apply()
        self.widget.value = render.group_live_html(self.group)
        return self.group.ended is None

    def _changed(self) -> None:
        flusher().mark(self)


class _Applier:
    """Folds a tracker's news in from the flusher thread, so shown widgets follow its tasks."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        tracker.on_events = self.mark

    def mark(self) -> None:
        flusher().mark(self)

    def refresh(self) -> bool:
        self.tracker.apply()
        return False


def follow(tracker: Tracker) -> None:
    """Have the flusher apply *tracker*'s changes as they come (once widgets show them)."""
    if tracker.on_events is None:
        _Applier(tracker)


def bundle(widget: widgets.Widget, text: str, html: str) -> dict[str, Any]:
    """A display bundle: the widget view plus static text and HTML fallbacks."""
    data = widget._repr_mimebundle_()
    data["text/plain"] = text
    data["text/html"] = html
    return data
