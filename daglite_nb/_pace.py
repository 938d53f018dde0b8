"""A sender thread that sends what piled up, at most every `INTERVAL` seconds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

INTERVAL = 0.1
"""How long what a worker has to send may wait before it goes (at most 10 sends a second)."""


class Pacer:
    """Calls *send* on a thread of its own, `INTERVAL` seconds after each first `poke()`.

    Pokes while it waits add nothing: what piled up meanwhile goes in the same send. The thread
    starts on the first poke. A send that fails is logged, and the pacer goes on.

    Args:
        send: Sends whatever is pending (nothing, if it was sent meanwhile).
        name: The thread's name.
    """

    def __init__(self, send: Callable[[], None], name: str) -> None:
        self._send = send
        self._name = name
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def poke(self) -> None:
        """Have what is pending sent within `INTERVAL` seconds."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(INTERVAL)  # the pace of sends, not a wait for anything
            try:
                self._send()
            except Exception:  # a send that fails costs what it carried, never the pacer
                logging.getLogger(__name__).exception("daglite-nb could not send (%s)", self._name)
