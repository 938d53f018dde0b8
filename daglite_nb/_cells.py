"""Per-cell IPython hooks: carry the session into every cell, cancel on interrupt.

They import nothing heavy: until a session is started (which imports daglite), there is nothing
for them to do, so `%load_ext daglite_nb` stays cheap.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from IPython import get_ipython
from IPython import version_info

COUNTED_FIRST = version_info >= (9, 8)
"""Whether IPython counts a cell before its `pre_run_cell` (from 9.8 on), or after it."""


def pre_run_cell(info: Any = None) -> None:
    """Make the kernel's session (or none) the active daglite session of the cell."""
    session = sys.modules.get("daglite_nb.session")
    if session is None:  # no session was ever started in this kernel
        return
    current = session.current()
    if current is None:
        from daglite_nb import _daglite

        _daglite.apply_session(None, None)
    else:
        shell = get_ipython()
        own = shell.execution_count - COUNTED_FIRST if shell is not None else None
        current.enter_cell(own)


def post_run_cell(result: Any) -> None:
    """Cancel the futures of an interrupted cell; push the cell's last widget changes.

    A cell interrupted while it blocks ends with `KeyboardInterrupt`; one interrupted while it
    awaits ends with `asyncio.CancelledError` (ipykernel cancels the cell's coroutine).
    """
    session = sys.modules.get("daglite_nb.session")
    if session is None:
        return
    current = session.current()
    if current is not None:
        if isinstance(result.error_in_exec, (KeyboardInterrupt, asyncio.CancelledError)):
            current.cancel_cell()
        current.cell_ended()
    flusher = sys.modules.get("daglite_nb.display.flusher")
    if flusher is not None:
        flusher.flush_pending()


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
