"""Code that runs on process pool workers: the worker loop, and errors sent across.

A pool worker (see `daglite_nb._pool`) ignores SIGINT (the kernel's interrupt reaches the whole
process group; the kernel cancels pending calls instead), exits as soon as the kernel that owns
it dies, whatever start method made it, and talks to the kernel through its own pipe only:
outcomes, and the daglite events its tasks report.
"""

from __future__ import annotations

import itertools
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
from daglite_nb._events import run_as
from daglite_nb._pace import Pacer
from daglite_nb._text import safe_str

logger = logging.getLogger(__name__)

PARENT_POLL_SECONDS = 0.5
"""How often a helper process (the Dask cluster's host) checks that the kernel is alive."""


# region Pool worker


def serve(
    conn: Any, progress: Progress, daglite_context: dict[str, Any], dataset_queue: Any
) -> None:
    """Run a pool worker until the kernel says stop or goes away.

    Args:
        conn: The worker's end of its pipe to the kernel.
        progress: What the worker shares with the kernel while it runs calls.
        daglite_context: daglite's serialized backend context, entered for the worker's life
            (again when the kernel sends a new one).
        dataset_queue: Where dataset saves go to the session.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    outbox = Outbox(conn)
    reporter = PipeReporter(outbox)
    _daglite.enter_worker_context(reporter, daglite_context, dataset_queue)
    outbox.send(("ready",))
    functions = FunctionCache()
    runner = Runner(progress, outbox)
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            return
        if message[0] == "context":
            _daglite.enter_worker_context(reporter, message[1], dataset_queue)
            continue
        _, function_id, blob, header, arguments = message
        if blob is None:
            functions.remember(function_id)
        else:
            functions.remember(function_id, _load_function(blob))
        runner.run(functions[function_id], header, arguments)
        outbox.flush()


SLOTS = 4096
"""The cancel flags a worker has: more than the calls it ever holds (two `_pool.MAX_BATCH`)."""


class Progress:
    """What a worker and the kernel share in memory, read and written without a message.

    The worker numbers the calls it is sent in order (their places, as the kernel does). A call
    starts under `lock`, after the worker took its cancel flag; the kernel cancels a call that a
    worker holds under `lock` too, by setting that flag, so a call is either started or
    cancelled, never both, and cancelling never waits for a busy worker to read a message.

    Attributes:
        running: The id of the call the worker runs now, -1 between calls (whom a crash costs).
        started: The id of the call it started last: that call and those before it can no
            longer be cancelled.
        lock: Held to start a call, and to cancel one.
    """

    def __init__(self, context: Any) -> None:
        self._values = context.RawArray("q", [-1, -1])
        self._cancelled = context.RawArray("b", SLOTS)
        self.lock = context.Lock()

    @property
    def running(self) -> int:  # noqa: D102
        return self._values[0]

    @property
    def started(self) -> int:  # noqa: D102
        return self._values[1]

    def start(self, call_id: int) -> None:
        """The call *call_id* starts: it is running, and started."""
        self._values[1] = self._values[0] = call_id

    def stop(self) -> None:
        """The running call ended."""
        self._values[0] = -1

    def cancel(self, place: int) -> None:
        """The kernel cancels the call at *place* (under `lock`, before the worker reached it)."""
        self._cancelled[place % SLOTS] = 1

    def take(self, place: int) -> bool:
        """The worker reached the call at *place*: whether it was cancelled (the flag clears)."""
        cancelled = self._cancelled[place % SLOTS] == 1
        self._cancelled[place % SLOTS] = 0
        return cancelled


class Runner:
    """Runs the calls of each message from the kernel (a batch), one after another.

    Each call's outcome goes to the outbox as it ends: (call id, ok, result or error, seconds
    it ran); ok is None for a call cancelled before it started (see `Progress`).
    """

    def __init__(self, progress: Progress, outbox: Outbox) -> None:
        self._progress = progress
        self._outbox = outbox
        self._places = itertools.count()

    def run(self, func: Callable[..., Any], header: list[Any], arguments: bytes) -> None:
        """Run the calls of *header* (id, tag, map index) with their pickled *arguments*."""
        try:
            calls = pickle.loads(arguments)
        except BaseException as exc:
            failure = error_payload(exc)
            for call_id, _, _ in header:
                with self._progress.lock:  # as if it started: the kernel cancels it no more
                    self._progress.take(next(self._places))
                    self._progress.start(call_id)
                self._outbox.ended((call_id, False, failure, 0.0))
            self._progress.stop()
            return
        for (call_id, tag, map_index), (args, kwargs) in zip(header, calls, strict=True):
            with self._progress.lock:
                cancelled = self._progress.take(next(self._places))
                if not cancelled:
                    self._progress.start(call_id)
            if cancelled:
                self._outbox.ended((call_id, None, None, 0.0))
            else:
                self._outbox.ended(self._run_one(func, call_id, tag, map_index, args, kwargs))

    def _run_one(
        self,
        func: Callable[..., Any],
        call_id: int,
        tag: int | None,
        map_index: int | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[int, bool, Any, float]:
        began = time.perf_counter()
        try:
            ok, value = True, run_call(func, tag, map_index, args, kwargs)
        except BaseException as exc:  # SystemExit of a task too: the worker lives on
            ok, value = False, error_payload(exc)
        seconds = time.perf_counter() - began
        self._progress.stop()
        return call_id, ok, value, seconds


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


class Outbox:
    """What a worker sends the kernel: daglite's events and the calls' outcomes, in order.

    Both pile up and go as one message (`("sent", events, outcomes)`): when a batch of calls
    ends (`flush`), and at most `daglite_nb._pace.INTERVAL` seconds after the first of them
    (a `Pacer`), so a long call's start and output reach the kernel while it runs. Any thread
    of the worker may add to it; messages go out whole and in order.
    """

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._piles: tuple[list[Any], list[Any]] = ([], [])
        """The events and the outcomes not sent yet (a new pair after each send)."""
        self._pacer = Pacer(self.flush, "daglite-nb-outbox")

    def report(self, event_type: Any, event_data: Any) -> None:
        """Add one of daglite's events."""
        self._add(0, (event_type, event_data))

    def ended(self, outcome: tuple[Any, ...]) -> None:
        """Add the outcome of a call (see `Runner`)."""
        self._add(1, outcome)

    def _add(self, pile: int, item: Any) -> None:
        with self._lock:
            first = not any(self._piles)
            self._piles[pile].append(item)
        if first:
            self._pacer.poke()

    def flush(self) -> None:
        """Send what piled up, if anything."""
        with self._lock:
            if not any(self._piles):
                return
            (events, outcomes), self._piles = self._piles, ([], [])
            self._send(_sendable(("sent", events, outcomes)))

    def send(self, message: tuple[Any, ...]) -> None:
        """Send *message* at once."""
        with self._lock:
            self._send(cloudpickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def _send(self, blob: bytes) -> None:
        self._conn.send_bytes(blob)


def _sendable(message: tuple[Any, list[Any], list[Any]]) -> bytes:
    """*message* pickled; if it does not pickle, without what does not.

    An event that does not pickle is dropped (and logged, as daglite's reporters do); a result
    that does not pickle is replaced by why.
    """
    try:
        return cloudpickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    except Exception:
        kind, events, outcomes = message
        events = [event for event in events if _pickles(event, f"event {event[0]!r}")]
        outcomes = [_sendable_outcome(outcome) for outcome in outcomes]
        return cloudpickle.dumps((kind, events, outcomes), pickle.HIGHEST_PROTOCOL)


def _pickles(value: Any, what: str) -> bool:
    try:
        cloudpickle.dumps(value)
    except Exception:
        logger.exception("daglite-nb could not report %s", what)
        return False
    return True


def _sendable_outcome(outcome: tuple[Any, ...]) -> tuple[Any, ...]:
    """*outcome*, with a result that does not pickle replaced by why."""
    call_id, ok, value, seconds = outcome
    try:
        cloudpickle.dumps(value)
    except Exception as exc:
        error = RuntimeError(f"The result cannot be sent back from the process worker: {exc}")
        ok, value = False, error_payload(error)
    return (call_id, ok, value, seconds)


class PipeReporter(EventReporter):
    """daglite's event reporter of a pool worker: events go to the kernel through the pipe."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    @property
    def is_direct(self) -> bool:  # noqa: D102
        return False

    def report(self, event_type: Any, event_data: dict[str, Any]) -> None:
        """Send one event, with the next message to the kernel (see `Outbox`)."""
        self._outbox.report(event_type, event_data)


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
