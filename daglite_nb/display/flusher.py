"""One background thread that pushes widget updates, throttled per widget.

A view is marked when its state changes; the flusher refreshes it at most once per
`INTERVAL`, and keeps refreshing a view whose clock still ticks once per `TICK`. A change
after the last refresh always marks the view again, so every view ends on its exact final state.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Protocol

INTERVAL = 0.1
"""Shortest time between two refreshes of one view (at most 10 per second)."""

TICK = 0.5
"""How often a running view refreshes its elapsed time when nothing else changes."""

logger = logging.getLogger(__name__)


class View(Protocol):
    """Something the flusher refreshes."""

    def refresh(self) -> bool:
        """Push the current state; return whether the view's clock still ticks."""
        ...


class Flusher:
    """The throttled refresher (one per process; see `flusher()`)."""

    def __init__(self, interval: float = INTERVAL, tick: float = TICK) -> None:
        self.interval = interval
        self.tick = tick
        self._due: dict[View, float] = {}
        self._last: weakref.WeakKeyDictionary[View, float] = weakref.WeakKeyDictionary()
        self._wake = threading.Condition()
        self._refreshing = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="daglite-nb-flusher", daemon=True)
        self._thread.start()

    def mark(self, view: View, delay: float = 0.0) -> None:
        """Ask for *view* to be refreshed in *delay* seconds, or as soon as its throttle allows."""
        due = self._due.get(view)
        if not delay and due is not None and due <= time.monotonic() + self.interval:
            return  # a refresh is coming within the throttle anyway: it will read the news
        with self._wake:
            due = max(time.monotonic() + delay, self._last.get(view, 0.0) + self.interval)
            if due < self._due.get(view, float("inf")):
                self._due[view] = due
                self._wake.notify()

    def flush(self) -> None:
        """Refresh every view with a pending change now, in this thread.

        Called at the end of each cell, so the final state is sent while the cell is still
        the parent of the messages (tools that save widget state, like nbconvert, keep it).
        """
        with self._wake:
            ready = list(self._due)
            self._due.clear()
            now = time.monotonic()
            for view in ready:
                self._last[view] = now
        self._refresh(ready)

    def _refresh(self, views: list[View]) -> None:
        with self._refreshing:  # the end-of-cell flush and the thread never interleave
            ticking = [view for view in views if self._refresh_one(view)]
        for view in ticking:
            self.mark(view, self.tick)

    def _refresh_one(self, view: View) -> bool:
        # Nothing a refresh raises may kill the flusher or fail the cell that flushes.
        try:
            return view.refresh()
        except BaseException:
            logger.exception("daglite-nb could not refresh a widget")
            return False

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                ready = [view for view, due in self._due.items() if due <= now]
                if not ready:
                    self._wake.wait(min(self._due.values(), default=now + 3600) - now)
                    continue
                for view in ready:
                    del self._due[view]
                    self._last[view] = now
            self._refresh(ready)


_flusher: Flusher | None = None
_lock = threading.Lock()


def flusher() -> Flusher:
    """Return the process's flusher, starting it on first use."""
    global _flusher
    if _flusher is not None:
        return _flusher
    with _lock:
        if _flusher is None:
            _flusher = Flusher()
        return _flusher


def flush_pending() -> None:
    """Push pending widget changes now, if any widget was ever shown (never starts a thread)."""
    if _flusher is not None:
        _flusher.flush()
