"""One background thread that refreshes the shown widgets of live calls, at a fixed pace.

Widgets pull: while a view is live, the flusher asks it to refresh every `INTERVAL` seconds, and
the view sends only what changed (at most one message per widget per refresh). A view that
reports it is done (its call or group ended) gets no more refreshes: its last refresh sent the
exact final state. The end-of-cell hook and the session's end refresh every view at once, in
their own thread, so final states go out while the cell (or the kernel) is still there.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

INTERVAL = 0.1
"""Time between two refreshes of a view (at most 10 messages per second per widget)."""

logger = logging.getLogger(__name__)


class View(Protocol):
    """Something the flusher refreshes."""

    def refresh(self) -> bool:
        """Push the current state; return whether the view is still live."""
        ...


class Flusher:
    """The refresher (one per process; see `flusher()`)."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._views: dict[View, int] = {}
        """Live views, each with how many times it was added: a view added again while it was
        being refreshed stays, even if that refresh said it was done."""
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daglite-nb-flusher", daemon=True)
        self._thread.start()

    def add(self, view: View) -> None:
        """Refresh *view* from now on, until it reports that it is done."""
        with self._lock:
            self._views[view] = self._views.get(view, 0) + 1
        self._wake.set()

    def flush(self) -> None:
        """Refresh every live view now, in this thread."""
        with self._lock:
            views = dict(self._views)
        self._refresh(views)

    def _refresh(self, views: dict[View, int]) -> None:
        with self._refreshing:  # the end-of-cell flush and the thread never interleave
            done = [view for view in views if not _refresh_one(view)]
        if done:
            with self._lock:
                for view in done:
                    if self._views.get(view) == views[view]:  # not added again meanwhile
                        del self._views[view]

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._tick():
                time.sleep(self.interval)  # the pace of refreshes, not a wait for anything

    def _tick(self) -> bool:
        """Refresh every live view once; return whether there were any.

        Its own frame, so that no view outlives its last refresh in a local variable.
        """
        with self._lock:
            views = dict(self._views)
            if not views:
                self._wake.clear()
                return False
        self._refresh(views)
        return True


def _refresh_one(view: View) -> bool:
    # Nothing a refresh raises may kill the flusher or fail the cell that flushes.
    try:
        return view.refresh()
    except BaseException:
        logger.exception("daglite-nb could not refresh a widget")
        return False


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
    """Refresh every live view now, if any widget was ever shown (never starts a thread)."""
    if _flusher is not None:
        _flusher.flush()
