"""Per-cell IPython hooks: carry the session into every cell, cancel on interrupt."""

from __future__ import annotations

from typing import Any

from IPython import get_ipython

from daglite_nb import _daglite
from daglite_nb import session
from daglite_nb.display.flusher import flush_pending


def pre_run_cell(info: Any = None) -> None:
    """Make the kernel's session (or none) the active daglite session of the cell."""
    current = session.current()
    if current is None:
        _daglite.apply_session(None, None)
    else:
        shell = get_ipython()
        # IPython has already counted this cell: its own number is one less.
        current.enter_cell(shell.execution_count - 1 if shell is not None else None)


def post_run_cell(result: Any) -> None:
    """Cancel the futures of an interrupted cell; push the cell's last widget changes."""
    current = session.current()
    if current is not None:
        if isinstance(result.error_in_exec, KeyboardInterrupt):
            current.cancel_cell()
        current.tracker.apply()
    flush_pending()


HOOKS = {"pre_run_cell": pre_run_cell, "post_run_cell": post_run_cell}


def install(shell: Any) -> None:
    """Register the hooks on *shell* (once)."""
    for event, callback in HOOKS.items():
        if callback not in shell.events.callbacks[event]:
            shell.events.register(event, callback)


def uninstall(shell: Any) -> None:
    """Remove the hooks from *shell*."""
    for event, callback in HOOKS.items():
        if callback in shell.events.callbacks[event]:
            shell.events.unregister(event, callback)
