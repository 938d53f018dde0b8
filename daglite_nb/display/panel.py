"""The daglite panel: one widget bound to the kernel's session, whichever session that is."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ipywidgets as widgets
from IPython.core.error import UsageError

from daglite_nb import session
from daglite_nb.backends import registry
from daglite_nb.display import render
from daglite_nb.display import widgets_enabled
from daglite_nb.display.flusher import flusher

TABLE_ROWS = 10
"""How many recent tasks the table shows."""


class Panel:
    """The panel's widgets and the controls' actions. There is one per kernel (`panel()`)."""

    def __init__(self) -> None:
        self._quiet_thread: int | None = None
        self._tracker: Any = None
        self.header = widgets.HTML()
        self.backend = widgets.Dropdown(description="backend", layout={"width": "220px"})
        self.error = widgets.HTML()
        self.threads = widgets.BoundedIntText(
            value=0, min=0, max=1024, description="threads", layout={"width": "160px"}
        )
        self.processes = widgets.BoundedIntText(
            value=0, min=0, max=1024, description="processes", layout={"width": "160px"}
        )
        self.address = widgets.Text(
            description="scheduler",
            placeholder="dask: tcp://host:8786 (empty: a local cluster)",
            layout={"width": "360px"},
        )
        self.start = _button("start session", "play", self._start)
        self.stop = _button("stop session", "stop", self._stop)
        self.restart = _button("restart backend", "refresh", self._restart)
        self.cancel = _button("cancel pending", "ban", self._cancel)
        self.details = widgets.HTML()
        self.counts = widgets.HTML()
        self.table = widgets.HTML()
        self.picked = widgets.Dropdown(
            description="output of", options=[], value=None, layout={"width": "360px"}
        )
        self.picked_output = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.header, self.backend, self.error]),
                widgets.HBox([self.threads, self.processes, self.address]),
                widgets.HTML(_SETTINGS_HINT),
                widgets.HBox([self.start, self.stop, self.restart, self.cancel]),
                self.details,
                self.counts,
                self.table,
                self.picked,
                self.picked_output,
            ],
            layout={"border": f"1px solid {render.BORDER}", "padding": "6px"},
        )
        self.backend.observe(self._picked, names="value")
        self._picked_call: int | None = None
        """The id of the call the user picked in `picked` (the refresh restores it there)."""
        self.picked.observe(self._picked_output_of, names="value")
        session.listeners.append(self.changed)
        self._sync_backends()
        self.refresh()

    # region Refreshing

    def changed(self) -> None:
        """Refresh it from now on (the session changed, or its tasks started running)."""
        flusher().add(self)

    def refresh(self) -> bool:
        """Show the current session; return whether it has live tasks (keep refreshing)."""
        current = session.current()
        self._bind(current)
        if current is None:
            self.header.value = render.panel_header_html("stopped", "", None)
            self.counts.value = render.panel_counts_html({})
            self.table.value = render.panel_table_html([])
            self.details.value = ""
            self._show_picked([])
            status_backend = None
        else:
            status = current.status()
            self.header.value = render.panel_header_html("open", status.session_id, status.uptime)
            self.details.value = render.panel_details_html(status.details)
            tracker = current.tracker
            self.counts.value = render.panel_counts_html(tracker.counts)
            latest = tracker.latest(TABLE_ROWS)
            self.table.value = render.panel_table_html(latest)
            self._show_picked(latest)
            status_backend = current.backend
        self._show_backend(status_backend)
        for button in (self.stop, self.restart, self.cancel):
            button.disabled = current is None
        self.start.disabled = current is not None
        return current is not None and current.tracker.busy

    def _show_picked(self, calls: list[Any]) -> None:
        """Offer the recent calls to pick; show what the picked one printed and logged."""
        options = [(call.label, call.id) for call in calls]
        picked = self._picked_call if self._picked_call in {i for _, i in options} else None
        with self._quietly():
            if list(self.picked.options) != options:
                self.picked.options = options
            if self.picked.value != picked:
                self.picked.value = picked
        call = next((c for c in calls if c.id == picked), None)
        value = render.panel_output_html(call)
        if value != self.picked_output.value:
            self.picked_output.value = value

    def _picked_output_of(self, change: dict[str, Any]) -> None:
        if self._quiet_thread != threading.get_ident():
            self._picked_call = change["new"]
            self.changed()

    def _bind(self, current: session.NotebookSession | None) -> None:
        """Follow the tracker of the session that is open now (sessions come and go)."""
        tracker = current.tracker if current is not None else None
        if tracker is self._tracker:
            return
        if self._tracker is not None:
            self._tracker.on_busy = None
        if current is not None:
            current.tracker.on_busy = self.changed
            self.threads.value, self.processes.value = current.worker_counts
            self.address.value = current.options.dask_address or ""
        self._tracker = tracker

    def _sync_backends(self) -> None:
        names = [entry.name for entry in registry.entries()]
        if list(self.backend.options) != names:
            with self._quietly():
                self.backend.options = names

    def _show_backend(self, name: str | None) -> None:
        self._sync_backends()
        if name is not None and self.backend.value != name:
            with self._quietly():
                self.backend.value = name

    # region Actions

    def _picked(self, change: dict[str, Any]) -> None:
        if self._quiet_thread == threading.get_ident() or change["new"] is None:
            return  # the panel itself moved the dropdown
        current = session.current()
        if current is None:
            self.error.value = ""  # the pick becomes the backend of the next start
            return

        def switch() -> None:
            self._configure(current)
            current.use(change["new"])

        self._act(switch)

    def _start(self) -> None:
        self._act(lambda: session.start(backend=self.backend.value, **self._settings()))

    def _stop(self) -> None:
        self._act(session.stop)

    def _restart(self) -> None:
        def restart() -> None:
            current = session.require()
            self._configure(current)
            current.restart_backend()

        self._act(restart)

    def _cancel(self) -> None:
        self._act(lambda: session.require().tracker.cancel_pending())

    def _configure(self, current: session.NotebookSession) -> None:
        current.configure(**self._settings())

    def _settings(self) -> dict[str, Any]:
        return {
            "max_threads": self.threads.value or None,
            "max_processes": self.processes.value or None,
            "dask_address": self.address.value.strip() or None,
        }

    def _act(self, action: Any) -> None:
        """Run a control's action; a mistake shows in the panel, never as a traceback."""
        try:
            action()
        except UsageError as exc:
            self.error.value = f'<span style="color:{render.ERROR}">{html.escape(str(exc))}</span>'
        else:
            self.error.value = ""
        self.changed()

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """Move widgets from here without taking it as the user's pick."""
        self._quiet_thread = threading.get_ident()
        try:
            yield
        finally:
            self._quiet_thread = None

    # region Display

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        current = session.current()
        state, backend = ("open", current.backend) if current else ("stopped", None)
        text = render.panel_text(state, backend)
        data = self.widget._repr_mimebundle_() if widgets_enabled() else {}
        data["text/plain"] = text
        data["text/html"] = f"<code>{html.escape(text)}</code>"
        return data


_SETTINGS_HINT = (
    f'<span style="color:{render.MUTED};font-size:12px">settings (0 or empty = default) apply '
    "when a backend starts or restarts; processes also sizes a local Dask cluster</span>"
)


def _button(description: str, icon: str, action: Any) -> widgets.Button:
    button = widgets.Button(description=description, icon=icon, layout={"width": "auto"})
    button.on_click(lambda _: action())
    return button


_panel: Panel | None = None


def panel() -> Panel:
    """Return the kernel's panel, creating it on first use."""
    global _panel
    if _panel is None:
        _panel = Panel()
    return _panel
