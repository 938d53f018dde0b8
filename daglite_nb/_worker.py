"""Code that runs on workers: process-pool hardening, calls sent by value, start reports."""

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
from daglite_nb.tracking import FanOut
from daglite_nb.tracking import TaskRecord
from daglite_nb.tracking import Tracker
from daglite_nb.tracking import thread_name

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
    memoized per worker, so a fan-out unpickles its task once. The worker reports the start
    of the tracked call *record_id* (see `report_start`).
    """

    __slots__ = ("func_blob", "args_blob", "record_id")

    def __init__(self, func_blob: bytes, args_blob: bytes, record_id: int | None) -> None:
        self.func_blob = func_blob
        self.args_blob = args_blob
        self.record_id = record_id

    def __call__(self) -> Any:  # noqa: D102
        args, kwargs = cloudpickle.loads(self.args_blob)
        report_start(self.record_id)
        return _load(self.func_blob)(*args, **kwargs)


@functools.lru_cache(maxsize=16)
def _load(blob: bytes) -> Callable[..., Any]:
    return cloudpickle.loads(blob)


# region Start reports

TASK_STARTED = "daglite_nb.task_started"
"""Event type a worker reports through daglite's event reporter when a tracked call starts."""


class TrackedCall:
    """A call, sent to run elsewhere, that reports its start there as the tracked call *record_id*.

    (Backends that run calls in the kernel's own process run the `TaskRecord` itself.)
    """

    __slots__ = ("func", "record_id")

    def __init__(self, func: Callable[..., Any], record_id: int) -> None:
        self.func = func
        self.record_id = record_id

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        report_start(self.record_id)
        return self.func(*args, **kwargs)


def unwrap(func: Callable[..., Any]) -> tuple[Callable[..., Any], int | None]:
    """Split a tracked call (`TrackedCall`, `TaskRecord`, `FanOut`) into what it runs and its id.

    A fan-out has no id: its calls run in this process and report their start themselves.
    """
    if isinstance(func, TrackedCall):
        return func.func, func.record_id
    if isinstance(func, TaskRecord):
        return func.func, func.id  # type: ignore[return-value]
    if isinstance(func, FanOut):
        return func.func, None
    return func, None


def report_start(record_id: int | None) -> None:
    """Report, from the worker, that the tracked call *record_id* starts now.

    The report goes through the daglite event reporter of the context the call runs in (the
    process pool's event queue, a Dask event topic) to the kernel's `StartReports` handler.
    """
    reporter = _daglite.event_reporter() if record_id is not None else None
    if reporter is not None:
        report = {"id": record_id, "thread": thread_name(), "pid": os.getpid(), "at": time.time()}
        reporter.report(TASK_STARTED, report)


class StartReports:
    """daglite plugin that hands the workers' start reports (`report_start`) to the tracker.

    It only registers an event handler on the kernel's side: daglite ships to workers only
    plugins that have a config, and this one has none.
    """

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker

    def register_event_handlers(self, registry: Any) -> None:
        """Register the tracker's handler for start reports (called by daglite)."""
        registry.register(TASK_STARTED, self._tracker.on_started)
