"""Echoed output: the lines that calls print, labelled, in the output area of their cell.

A cell gets its echo display when one of its calls first prints while it runs, or when it ends
with calls still live; late lines update that display (JupyterLab drops plain output that
arrives after its cell finished, but not updates of a display), so they reach their cell
whenever they come, and a saved notebook keeps them.
"""

from __future__ import annotations

import contextvars
import threading
import uuid
from collections import OrderedDict
from collections import deque

from IPython.display import display
from IPython.display import update_display

from daglite_nb._output import cut
from daglite_nb._output import tail_text
from daglite_nb.display.flusher import flusher
from daglite_nb.model import Call

ECHO_LINES = 200
"""How many of its newest echoed lines a cell shows."""

CELLS = 100
"""How many cells' echo displays the session keeps updating (the newest)."""


class CellEcho:
    """The echo display of one cell: its calls' newest lines, each as `[call] line`."""

    def __init__(self, context: contextvars.Context) -> None:
        self.display_id = uuid.uuid4().hex
        self._context = context
        self._lines: deque[str] = deque(maxlen=ECHO_LINES)
        self._count = 0
        self._shown = 0
        self._lock = threading.Lock()
        context.copy().run(display, {"text/plain": ""}, raw=True, display_id=self.display_id)

    def add(self, label: str, lines: list[str]) -> None:
        """Echo *lines* of the call *label*, at the flusher's next refresh."""
        with self._lock:
            self._lines.extend(f"[{label}] {cut(line)}" for line in lines[-ECHO_LINES:])
            self._count += len(lines)
        flusher().add(self)

    def refresh(self) -> bool:
        """Update the display with the lines echoed since the last refresh (the flusher's)."""
        with self._lock:
            if self._count == self._shown:
                return False
            self._shown = count = self._count
            lines = list(self._lines)
        update = {"text/plain": tail_text(lines, count - len(lines))}
        self._context.copy().run(update_display, update, raw=True, display_id=self.display_id)
        return False


class Echo:
    """The echo displays of a session's cells (see the module)."""

    def __init__(self) -> None:
        self._cells: OrderedDict[int | None, CellEcho] = OrderedDict()
        self._cell: tuple[int | None, contextvars.Context] | None = None
        self._lock = threading.Lock()

    def cell_started(self, cell: int | None) -> None:
        """A cell starts to run (in its own context, which its echo display needs)."""
        self._cell = (cell, contextvars.copy_context())

    def cell_ended(self, live: bool) -> None:
        """The running cell ends; with *live* calls, it gets its echo display now."""
        if live:
            self._display(self._cell)
        self._cell = None

    def lines(self, call: Call, lines: list[str]) -> None:
        """Echo *lines* that *call* printed, in its cell, if that cell has (or gets) a display."""
        with self._lock:
            echo = self._cells.get(call.cell)
        running = self._cell
        if echo is None and running is not None and running[0] == call.cell:
            echo = self._display(running)
        if echo is not None:
            echo.add(call.label, lines)

    def _display(self, cell: tuple[int | None, contextvars.Context] | None) -> CellEcho | None:
        if cell is None:
            return None
        number, context = cell
        with self._lock:
            echo = self._cells.get(number)
            if echo is None:
                echo = self._cells[number] = CellEcho(context)
                if len(self._cells) > CELLS:
                    self._cells.popitem(last=False)
        return echo
