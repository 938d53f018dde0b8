"""How a shown call or group is displayed: its live widget, and the static fallbacks it leaves."""

from __future__ import annotations

import contextvars
import uuid
from typing import Any
from typing import TypeVar

import ipywidgets as widgets
from IPython.display import display
from IPython.display import update_display

from daglite_nb.display import render
from daglite_nb.display.flusher import flusher
from daglite_nb.model import PENDING
from daglite_nb.model import Call
from daglite_nb.model import Group
from daglite_nb.tracking import Tracker

W = TypeVar("W")


class StaticView:
    """One shown call or group as text and HTML only, as a viewer without widgets sees it.

    It is displayed with a display id. While its call or group is live, the flusher refreshes
    it; when it ended, its last refresh replaces the output's static fallbacks (text and HTML)
    with the final ones, so a saved notebook, an export or a viewer without widgets shows the
    outcome. That update goes out in the context of the cell that displayed it.
    """

    def __init__(self, unit: Call | Group) -> None:
        self.unit = unit
        self.display_id = uuid.uuid4().hex
        self._context = contextvars.copy_context()
        self._final = False

    def show(self) -> None:
        """Display it in the current cell and keep it live."""
        self._context = contextvars.copy_context()
        display(self.bundle(), raw=True, display_id=self.display_id)
        flusher().add(self)

    def bundle(self) -> dict[str, Any]:
        """The display bundle: the current static fallbacks."""
        unit = self.unit
        if isinstance(unit, Call):
            text, static = render.call_text(unit), render.call_static_html(unit)
        else:
            text, static = render.group_text(unit), render.group_static_html(unit)
        return {"text/plain": text, "text/html": static}

    def refresh(self) -> bool:
        """When the unit ended, leave its final fallbacks (once); return whether it is live.

        The flusher's thread and the end of a cell may both refresh a view that just ended:
        only the first sends the final state.
        """
        if self._final:
            return False
        if not render.ended(self.unit):
            return True
        self._final = True
        self._context.run(update_display, self.bundle(), raw=True, display_id=self.display_id)
        self._context = contextvars.Context()  # the cell's context held the session
        return False


class UnitView(StaticView):
    """A `StaticView` with its live widget.

    A call's widget has a cancel button while it waits (if it can be cancelled), and a folded
    output area once the call writes something (its newest lines).
    """

    def __init__(self, unit: Call | Group, tracker: Tracker | None = None) -> None:
        super().__init__(unit)
        self.line = _html(self._live_html())
        self.cancel: widgets.Button | None = None
        self.widget: widgets.Widget = self.line
        if isinstance(unit, Call) and tracker is not None:
            self.cancel = widgets.Button(
                description="cancel",
                icon="stop",
                tooltip="Cancel this task if it has not started",
                layout={"width": "auto"},  # its own: its display follows its call
                style=_shared(widgets.ButtonStyle),
            )
            self.cancel.on_click(lambda _: tracker.cancel(unit))  # type: ignore[arg-type]
            self.widget = widgets.HBox([self.line, self.cancel], layout=_shared(widgets.Layout))
        self.output: widgets.Accordion | None = None
        self.output_text: widgets.HTML | None = None
        if isinstance(unit, Call):
            self.widget = widgets.VBox([self.widget], layout=_shared(widgets.Layout))
        self._show_cancel()

    def bundle(self) -> dict[str, Any]:
        """The display bundle: the widget view and the current static fallbacks."""
        return {**self.widget._repr_mimebundle_(), **super().bundle()}

    def refresh(self) -> bool:
        """Push what changed; when the unit ended, leave its final fallbacks; return if live."""
        value = self._live_html()
        if value != self.line.value:
            self.line.value = value
        self._show_cancel()
        self._show_output()
        return super().refresh()

    def _live_html(self) -> str:
        unit = self.unit
        if isinstance(unit, Call):
            return render.call_live_html(unit)
        return render.group_live_html(unit)

    def _show_output(self) -> None:
        output = self.unit.output if isinstance(self.unit, Call) else None
        if output is None:
            return
        if self.output is None:
            self.output_text = _html()
            self.output = widgets.Accordion(
                [self.output_text], selected_index=None, layout=_shared(widgets.Layout)
            )
            self.widget.children += (self.output,)  # type: ignore[attr-defined]
        value, title = render.output_html(output), render.output_title(output)
        if value != self.output_text.value:  # type: ignore[union-attr]
            self.output_text.value = value  # type: ignore[union-attr]
        if self.output.titles != (title,):
            self.output.titles = (title,)

    def _show_cancel(self) -> None:
        if self.cancel is not None:
            pending = self.unit.state == PENDING and isinstance(self.unit, Call)
            self.cancel.layout.display = None if pending else "none"


# region Shared parts


_HTML_STYLE = widgets.HTML.class_traits()["style"].klass
"""The style class of an HTML widget (ipywidgets does not export it)."""

_shared_parts: dict[type, Any] = {}


def _shared(kind: type[W]) -> W:
    """The one *kind* (a layout or a style) that the widgets of every view share.

    Nothing sets a shared part, so one model serves them all instead of one per widget: views
    open fewer comms, and a saved notebook keeps each part once. A part closed meanwhile
    (`Widget.close_all()`) is made again.
    """
    part = _shared_parts.get(kind)
    if part is None or part.comm is None:
        part = _shared_parts[kind] = kind()
    return part  # type: ignore[no-any-return]


def _html(value: str = "") -> widgets.HTML:
    """An HTML widget of a view, with the shared layout and style."""
    return widgets.HTML(value, layout=_shared(widgets.Layout), style=_shared(_HTML_STYLE))
