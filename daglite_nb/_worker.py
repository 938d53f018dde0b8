"""Code that runs inside process-pool workers: hardening and calls sent by value."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from daglite_nb import _daglite

PARENT_POLL_SECONDS = 0.5
"""How often a worker checks that the kernel that forked it is still alive."""


def harden_worker(
    parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]
) -> None:
    """Initialize a pool worker for life under a Jupyter kernel.

    The worker ignores SIGINT (the kernel's interrupt reaches the whole process group; the
    coordinator cancels pending work instead) and exits when its parent dies, so a SIGKILLed
    kernel leaves no orphan behind. Then the backend's own initializer runs.

    Args:
        parent_pid: Pid of the process that owns the pool.
        initializer: The pool's original initializer, if any.
        initargs: Arguments for *initializer*.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_exit_when_orphaned, args=(parent_pid,), name="daglite-nb-parent-watch", daemon=True
    ).start()
    if initializer is not None:
        initializer(*initargs)


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


class CallByValue:
    """A picklable call whose callable and arguments travel by value (cloudpickle).

    Functions and classes defined in notebook cells live in `__main__`; pickled by reference, a
    pool forked earlier would run their old body or fail to find them. The callable's bytes are
    memoized per worker, so a fan-out unpickles its task once.
    """

    __slots__ = ("func_blob", "args_blob")

    def __init__(self, func_blob: bytes, args_blob: bytes) -> None:
        self.func_blob = func_blob
        self.args_blob = args_blob

    def __call__(self) -> Any:  # noqa: D102
        args, kwargs = cloudpickle.loads(self.args_blob)
        return _load(self.func_blob)(*args, **kwargs)


@functools.lru_cache(maxsize=16)
def _load(blob: bytes) -> Callable[..., Any]:
    return cloudpickle.loads(blob)


TASK_STARTED = "daglite_nb.task_started"
"""Event type a worker reports through daglite's event reporter when a tracked call starts."""


class ReportStart:
    """A call that first reports, through daglite's event reporter, that it started here.

    Thread workers report straight to the coordinator; process workers through daglite's
    event queue; so "running" means the task really started on its worker.
    """

    __slots__ = ("func", "record_id")

    def __init__(self, func: Callable[..., Any], record_id: int) -> None:
        self.func = func
        self.record_id = record_id

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        reporter = _daglite.event_reporter()
        if reporter is not None:
            worker = {
                "id": self.record_id,
                "thread": threading.current_thread().name,
                "pid": os.getpid(),
                "at": time.time(),
            }
            reporter.report(TASK_STARTED, worker)
        return self.func(*args, **kwargs)


def unwrap(func: Callable[..., Any]) -> tuple[Callable[..., Any], int | None]:
    """Split a `ReportStart` into the callable it wraps and its record id."""
    if isinstance(func, ReportStart):
        return func.func, func.record_id
    return func, None
