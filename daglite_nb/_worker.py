"""Code that runs on process pool workers: the worker loop, and errors sent across.

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
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle
from daglite.plugins.reporters import EventReporter

from daglite_nb import _daglite
from daglite_nb._events import run_as
from daglite_nb._text import safe_str

logger = logging.getLogger(__name__)

PARENT_POLL_SECONDS = 0.5
"""How often a helper process (the Dask cluster's host) checks that the kernel is alive."""


# region Pool worker


def serve(conn: Any, daglite_context: dict[str, Any], dataset_queue: Any) -> None:
    """Run a pool worker until the kernel says stop or goes away.

    Args:
        conn: The worker's end of its pipe to the kernel.
        daglite_context: daglite's serialized backend context, entered for the worker's life
            (again when the kernel sends a new one).
        dataset_queue: Where dataset saves go to the session.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    channel = Channel(conn)
    reporter = PipeReporter(channel)
    _daglite.enter_worker_context(reporter, daglite_context, dataset_queue)
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
        if message[0] == "context":
            _daglite.enter_worker_context(reporter, message[1], dataset_queue)
            continue
        _, function_id, blob, header, arguments = message
        if blob is None:
            functions.remember(function_id)
        else:
            functions.remember(function_id, _load_function(blob))
        channel.send(("took",))  # from now on, a crash of this worker is one of these calls'
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

    *tag* is the id of the kernel's `Call` (see `daglite_nb.model.current_call`).
    """
    with _daglite.SubmitContext(map_index=map_index):
        return run_as(tag, func, *args, **kwargs)


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
        safe_str(error),
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
