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
from daglite_nb.tracking import RUNNING_RECORD
from daglite_nb.tracking import TaskRecord
from daglite_nb.tracking import running_record

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
    memoized per worker, so a fan-out unpickles its task once. The call runs as the tracked
    call *record_id*, so the worker reports its start (see `StartReports`).
    """

    __slots__ = ("func_blob", "args_blob", "record_id")

    def __init__(self, func_blob: bytes, args_blob: bytes, record_id: int | None) -> None:
        self.func_blob = func_blob
        self.args_blob = args_blob
        self.record_id = record_id

    def __call__(self) -> Any:  # noqa: D102
        args, kwargs = cloudpickle.loads(self.args_blob)
        with running_record(self.record_id):
            return _load(self.func_blob)(*args, **kwargs)


@functools.lru_cache(maxsize=16)
def _load(blob: bytes) -> Callable[..., Any]:
    return cloudpickle.loads(blob)


# region Start reports

TASK_STARTED = "daglite_nb.task_started"
"""Event type a worker reports through daglite's event reporter when a tracked call starts."""


class TrackedCall:
    """A call, sent to run elsewhere, that runs there as the tracked call *record_id*.

    (Backends that run calls in the kernel's own process run the `TaskRecord` itself.)
    """

    __slots__ = ("func", "record_id")

    def __init__(self, func: Callable[..., Any], record_id: int) -> None:
        self.func = func
        self.record_id = record_id

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        with running_record(self.record_id):
            return self.func(*args, **kwargs)


def unwrap(func: Callable[..., Any]) -> tuple[Callable[..., Any], int | None]:
    """Split a tracked call (`TrackedCall` or `TaskRecord`) into what it runs and its id."""
    if isinstance(func, TrackedCall):
        return func.func, func.record_id
    if isinstance(func, TaskRecord):
        return func.func, func.id  # type: ignore[return-value]
    return func, None


class _Here(threading.local):
    """What a worker thread knows about itself (looked up once per thread)."""

    name: str | None = None

    def thread_name(self) -> str:
        """The current thread's name."""
        name = self.name
        if name is None:
            name = self.name = threading.current_thread().name
        return name


_here = _Here()


class StartReports:
    """daglite plugin that reports, from the worker, the real start of every tracked call.

    daglite calls its `before_node_execute` hook on the worker right before a task's body runs.
    In the kernel's own process (inline and thread workers) the report goes straight to the
    session's tracker; elsewhere (process pools, Dask workers) daglite rebuilds this plugin
    from `to_config`, without a tracker, and the report travels through the worker's daglite
    event reporter to the handler that `register_event_handlers` installed.
    """

    def __init__(self, tracker: Any = None) -> None:
        self._tracker = tracker

    def to_config(self) -> dict[str, Any]:
        """Nothing to configure: workers rebuild the plugin without the tracker."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StartReports:
        """Rebuild the plugin in a worker process."""
        return cls()

    def register_event_handlers(self, registry: Any) -> None:
        """Hand workers' start reports to the tracker (called by daglite on the coordinator)."""
        if self._tracker is not None:
            registry.register(TASK_STARTED, self._tracker.on_started)

    @_daglite.hook_impl
    def before_node_execute(self, metadata: Any, reporter: Any) -> None:
        """Report that the tracked call running here starts now (daglite hook)."""
        running = RUNNING_RECORD.get()
        if running is None:
            return
        if self._tracker is not None:  # in the kernel: the call's record, or a TrackedCall's id
            if isinstance(running, TaskRecord):
                self._tracker.started(running, _here.thread_name(), time.time())
            else:  # a backend that runs calls here but takes their end from its Futures
                self._tracker.reported(running, _here.thread_name(), time.time())
        elif reporter is not None:
            thread = _here.thread_name()
            report = {"id": running, "thread": thread, "pid": os.getpid(), "at": time.time()}
            reporter.report(TASK_STARTED, report)
