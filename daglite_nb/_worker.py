"""Code that runs on workers: the process pool's worker loop, and start reports.

A pool worker (see `daglite_nb._pool`) ignores SIGINT (the kernel's interrupt reaches the whole
process group; the kernel cancels pending calls instead), exits as soon as the kernel that owns
it dies, whatever start method made it, and talks to the kernel through its own pipe only:
outcomes, and the daglite events its tasks report.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle
from daglite.plugins.reporters import EventReporter

from daglite_nb import _daglite
from daglite_nb.tracking import FanOut
from daglite_nb.tracking import TaskRecord
from daglite_nb.tracking import Tracker
from daglite_nb.tracking import thread_name

logger = logging.getLogger(__name__)

PARENT_POLL_SECONDS = 0.5
"""How often a helper process (the Dask cluster's host) checks that the kernel is alive."""


# region Pool worker


def serve(conn: Any, setup: Callable[..., None], setup_args: tuple[Any, ...]) -> None:
    """Run a pool worker until the kernel says stop or goes away.

    Args:
        conn: The worker's end of its pipe to the kernel.
        setup: Enters daglite's worker context, given this worker's event reporter and
            *setup_args*.
        setup_args: The rest of *setup*'s arguments.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    channel = Channel(conn)
    setup(PipeReporter(channel), *setup_args)
    channel.send(("ready",))
    functions = FunctionCache()
    cancelled: set[int] = set()
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            return
        if message[0] == "cancel":
            cancelled.add(message[1])
            continue
        _, function_id, blob, header, arguments = message
        if blob is None:
            functions.remember(function_id)
        else:
            functions.remember(function_id, _load_function(blob))
        outcomes = _run_batch(conn, functions[function_id], header, arguments, cancelled)
        channel.send(("ended", outcomes), fallback=_sendable_outcomes)
        cancelled.clear()


def _run_batch(
    conn: Any, func: Callable[..., Any], header: list[Any], arguments: bytes, cancelled: set[int]
) -> list[tuple[int, bool | None, Any]]:
    """Run the calls of one message in order; return (call id, ok, result or error) for each.

    ok is None for a call cancelled before it started.
    """
    try:
        calls = pickle.loads(arguments)
    except BaseException as exc:
        failure = error_payload(exc)
        return [(call_id, False, failure) for call_id, _, _ in header]
    outcomes: list[tuple[int, bool | None, Any]] = []
    for (call_id, tag, map_index), (args, kwargs) in zip(header, calls, strict=True):
        while len(header) > 1 and conn.poll():
            cancelled.add(pickle.loads(conn.recv_bytes())[1])  # only cancels come meanwhile
        if call_id in cancelled:
            outcomes.append((call_id, None, None))
            continue
        try:
            outcomes.append((call_id, True, run_call(func, tag, map_index, args, kwargs)))
        except BaseException as exc:  # SystemExit of a task too: the worker lives on
            outcomes.append((call_id, False, error_payload(exc)))
    return outcomes


def run_call(
    func: Callable[..., Any],
    tag: int | None,
    map_index: int | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run one call as daglite's process backend does (map index in `SubmitContext`).

    *tag* is the tracked call's record id, whose start is reported first (`report_start`).
    """
    with _daglite.SubmitContext(map_index=map_index):
        report_start(tag)
        return func(*args, **kwargs)


def _exit_with_parent() -> None:
    """Exit this worker as soon as the kernel that started it dies (a watchdog thread).

    multiprocessing's parent sentinel closes with the kernel under fork, spawn and forkserver
    alike (under forkserver the worker's parent process is the fork server, not the kernel).
    """
    parent = multiprocessing.parent_process()
    if parent is not None:
        watch = threading.Thread(target=_exit_after, args=(parent,), name="daglite-nb-parent")
        watch.daemon = True
        watch.start()


def _exit_after(parent: Any) -> None:
    parent.join()
    os._exit(1)


def _load_function(blob: bytes) -> Callable[..., Any]:
    try:
        return cloudpickle.loads(blob)
    except BaseException as exc:
        return _Unloadable(exc)


class _Unloadable:
    """Stands in for a task that could not be unpickled here: calling it raises why."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"The task could not be loaded in the process worker: {self.error}")


class FunctionCache(dict):
    """The last `SIZE` callables a worker was sent, by id, least recently used first.

    The kernel keeps one per worker beside the worker's own: both see the same ids in the same
    order, so the kernel knows which callables a worker still has and sends only the others.
    """

    SIZE = 16

    def remember(self, function_id: int, function: Any = None) -> bool:
        """Note a use of *function_id* (with *function* if new); return whether it was known."""
        known = function_id in self
        if known:
            self[function_id] = self.pop(function_id)  # now the most recently used
        else:
            self[function_id] = function
            if len(self) > self.SIZE:
                del self[next(iter(self))]
        return known


class Channel:
    """The worker's end of its pipe: whole messages, from any thread of the worker."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(
        self,
        message: tuple[Any, ...],
        fallback: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None,
    ) -> None:
        """Send *message*; if it does not pickle, send what *fallback* makes of it instead."""
        try:
            blob = cloudpickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        except Exception:
            if fallback is None:
                raise
            blob = cloudpickle.dumps(fallback(message), pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._conn.send_bytes(blob)


def _sendable_outcomes(message: tuple[Any, ...]) -> tuple[Any, ...]:
    """The outcomes of *message* with each result that does not pickle replaced by why."""
    outcomes = []
    for call_id, ok, value in message[1]:
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            error = RuntimeError(f"The result cannot be sent back from the process worker: {exc}")
            ok, value = False, error_payload(error)
        outcomes.append((call_id, ok, value))
    return (message[0], outcomes)


class PipeReporter(EventReporter):
    """daglite's event reporter of a pool worker: events go to the kernel through the pipe."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    @property
    def is_direct(self) -> bool:  # noqa: D102
        return False

    def report(self, event_type: Any, event_data: dict[str, Any]) -> None:
        """Send one event (a lost event must not fail the task, as with daglite's reporters)."""
        try:
            self._channel.send(("event", event_type, event_data))
        except Exception:
            logger.exception("daglite-nb could not report event %r", event_type)


# region Errors across processes


class RemoteTraceback(Exception):
    """The traceback of an error raised in a process worker, as text."""

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


class RemoteError(Exception):
    """An error raised in a process worker that could not be unpickled here."""


def error_payload(error: BaseException) -> tuple[Any, ...]:
    """What a worker sends of *error*: it and its cause pickled (if they pickle), and text."""
    return (
        _dumps(error),
        _dumps(error.__cause__),
        "".join(traceback.format_exception(error)),
        type(error).__name__,
        _safe_str(error),
    )


def rebuild_error(payload: tuple[Any, ...]) -> BaseException:
    """The error a worker sent (`error_payload`), with its cause and its remote traceback."""
    blob, cause_blob, text, kind, message = payload
    error = _loads(blob) or RemoteError(f"{kind}: {message}")
    cause = _loads(cause_blob)
    if cause is not None:
        error.__cause__ = cause
    (cause or error).__cause__ = RemoteTraceback(text)
    return error


def _dumps(value: BaseException | None) -> bytes | None:
    if value is None:
        return None
    try:
        return cloudpickle.dumps(value)
    except Exception:
        return None


def _loads(blob: bytes | None) -> Any:
    if blob is None:
        return None
    try:
        return pickle.loads(blob)
    except Exception:
        return None


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


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

    The report goes through the daglite event reporter of the context the call runs in (a pool
    worker's pipe, a Dask event topic) to the kernel's `StartReports` handler.
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
