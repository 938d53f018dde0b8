"""Task records, their state machine, and the Futures that carry them. No IPython here.

Every call a session backend runs gets a `TaskRecord` (pending -> running -> finished | failed |
cancelled) and comes back as a `LiveFuture`. State lives in plain objects under one lock;
listeners (widgets, the panel) are told *that* something changed and read the state themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import reprlib
import threading
import time
import traceback
from collections import Counter
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import CancelledError
from concurrent.futures import Future
from functools import partial
from typing import Any
from typing import NamedTuple

PENDING = "pending"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
CANCELLED = "cancelled"
STATES = (PENDING, RUNNING, FINISHED, FAILED, CANCELLED)
TERMINAL = frozenset({FINISHED, FAILED, CANCELLED})

RECENT_RECORDS = 200
"""How many finished records keep their detail (counts are kept for all)."""

GROUP_FAILURES = 3
"""How many failures a fan-out keeps to show with their tracebacks."""

FOLD_AT = 1000
"""How many finished calls a `FanOut` lets wait for `Tracker.apply()` before its workers count
them themselves (no flusher applies while no widget is shown)."""

_FINISHED_FIELDS = 4
"""What a `FanOut` notes of each finished call: map index, worker, start and end time."""

CALL_WIDTH = 60
"""Longest shown call text, in characters."""

Listener = Callable[[], None]

_short = reprlib.Repr()
_short.maxstring = 24
_short.maxother = 24
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4


def _shorten(text: str, width: int = CALL_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def safe_repr(value: Any, short: reprlib.Repr = _short) -> str:
    """*value* as *short* writes it, or a placeholder if its `__repr__` raises (anything at all).

    User objects reach the widgets' text from the flusher thread and the end-of-cell hook, where
    an exception (even `KeyboardInterrupt`) would kill the flusher or fail the next cells.
    """
    try:
        return short.repr(value)
    except BaseException:
        return f"<{type(value).__name__} object, repr failed>"


def safe_str(value: Any) -> str:
    """`str(value)`, or a placeholder if its `__str__` raises (see `safe_repr`)."""
    try:
        return str(value)
    except BaseException:
        return f"<{type(value).__name__} object, str failed>"


class _ThisThread(threading.local):
    """What a thread knows about itself (looked up once per thread)."""

    name: str | None = None


_this_thread = _ThisThread()


def thread_name() -> str:
    """The current thread's name (a worker stamps it on each call it starts)."""
    name = _this_thread.name
    if name is None:
        name = _this_thread.name = threading.current_thread().name
    return name


class _Observable:
    """Something with listeners to tell about changes."""

    __slots__ = ("listeners",)

    def __init__(self) -> None:
        self.listeners: tuple[Listener, ...] = ()

    def listen(self, listener: Listener) -> None:
        """Call *listener* after every change."""
        self.listeners = (*self.listeners, listener)

    def unlisten(self, listener: Listener) -> None:
        """Stop calling *listener*."""
        self.listeners = tuple(known for known in self.listeners if known is not listener)

    def notify(self) -> None:
        """Tell every listener that this object changed."""
        for listener in self.listeners:
            listener()


# region Records


class TaskRecord(_Observable):
    """One task call and what is known about it.

    Attributes:
        final: finished, failed or cancelled, once the call ended.
        worker: Thread name, process id or Dask worker that ran the call, once it started.
        future: While the call is live: the backend's Future, which cancels it.
        live_future: daglite-nb's own calls on backends elsewhere: the caller's `LiveFuture`,
            until `Tracker.ended` resolves it.
        func: What the record runs when a backend calls it (see `__call__`).
    """

    __slots__ = (
        "id",
        "name",
        "backend",
        "map_index",
        "cell",
        "group",
        "direct",
        "submitted",
        "started",
        "ended",
        "final",
        "worker",
        "error",
        "future",
        "live_future",
        "func",
        "tracker",
        "_args",
        "_kwargs",
        "_call",
    )

    def __init__(
        self,
        record_id: int,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        backend: str,
        map_index: int | None,
        cell: int | None,
        group: TaskGroup | None,
        direct: bool = False,
    ) -> None:
        self.listeners: tuple[Listener, ...] = ()
        self.id = record_id
        self.name = name
        self.backend = backend
        self.map_index = map_index
        self.cell = cell
        self.group = group
        self.direct = direct
        self.submitted = time.time()
        self.started: float | None = None
        self.ended: float | None = None
        self.final: str | None = None
        self.worker: str | None = None
        self.error: BaseException | None = None
        self.future: Future[Any] | None = None
        self.live_future: LiveFuture | None = None
        self.func: Callable[..., Any] | None = None
        self.tracker: Tracker | None = None
        self._args: tuple[Any, ...] | None = args
        self._kwargs: dict[str, Any] | None = kwargs
        self._call: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run `func` as this call, in this process, and record its start and end.

        Backends that run calls in the kernel's own process get the record itself as the
        callable, so the worker thread stamps the real start and the outcome on it. A failed
        direct call raises the task's own exception, not daglite's `TaskError`: the backend's
        Future, which is the caller's `LiveFuture` (see `LiveFuture.adopt`), raises it.
        """
        tracker: Tracker = self.tracker  # type: ignore[assignment]
        tracker.started(self, thread_name(), time.time())
        try:
            result = self.func(*args, **kwargs)  # type: ignore[misc]
        except BaseException as error:
            tracker.ended(self, FAILED, error)
            if not self.direct:
                raise
            failure = _original(error)
        else:
            tracker.ended(self, FINISHED, None, result)
            return result
        raise failure  # outside the `except`: the task's exception keeps its own context

    @property
    def state(self) -> str:
        """pending, running, finished, failed or cancelled."""
        return self.final or (PENDING if self.started is None else RUNNING)

    @property
    def call(self) -> str:
        """The call as text, shortened: `task_fn(1, y=2)`."""
        if self._call is None:
            parts = [safe_repr(a) for a in self._args or ()]
            parts += [f"{k}={safe_repr(v)}" for k, v in (self._kwargs or {}).items()]
            self._call = _shorten(f"{self.name}({', '.join(parts)})")
            self._args = self._kwargs = None  # the call's arguments need not outlive the text
        return self._call

    @property
    def elapsed(self) -> float:
        """Seconds since the task started (or was submitted), up to its end."""
        begin = self.started or self.submitted
        return max((self.ended or time.time()) - begin, 0.0)


class Failure(NamedTuple):
    """A failure as a fan-out shows it: one line, and the traceback to fold open."""

    summary: str
    traceback: str

    @classmethod
    def of(cls, error: BaseException | None) -> Failure:
        """Format *error* now."""
        if error is None:
            return cls("", "")
        summary = f"{type(error).__name__}: {safe_str(error)}"
        return cls(summary, "".join(traceback.format_exception(error)))


class TaskGroup(_Observable):
    """A fan-out: counts by state over its records, and its first failures."""

    def __init__(self, label: str, backend: str, tracker: Tracker | None = None) -> None:
        super().__init__()
        self.label = label
        self.backend = backend
        self.tracker = tracker
        self.total = 0
        """Calls submitted so far (only the submitting thread counts them)."""
        self.done = 0
        """Calls that reached a final state."""
        self.ended_counts: dict[str, int] = dict.fromkeys(TERMINAL, 0)
        self.failures: list[Failure] = []
        self.created = time.time()
        self.ended: float | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Tasks by state (the running ones as of the tracker's last `apply()`)."""
        done = self.done
        running = max(0, min(self.running_count(), self.total - done)) if self.ended is None else 0
        return {PENDING: self.total - done - running, RUNNING: running, **self.ended_counts}

    def running_count(self) -> int:
        """How many of its calls run (as of the tracker's last `apply()`)."""
        return self.tracker.running_in(self) if self.tracker is not None else 0

    @property
    def elapsed(self) -> float:
        """Seconds since the first submission, up to the last end."""
        return (self.ended or time.time()) - self.created

    @property
    def rate(self) -> float:
        """Finished tasks per second so far."""
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, if it can be told."""
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 and self.ended is None else None


class FanOut(TaskGroup):
    """A `map_tasks` fan-out whose calls run in this process, kept in columns: no record per call.

    The backend runs the fan-out itself as each call's callable. The call finds its map index
    through daglite's `SubmitContext` and, with no lock, stamps its start in `running` and
    appends its end to `finished` (or `aborted`); the tracker counts the ends in batches
    (`Tracker.apply`). A call adds no object that outlives it: the columns hold daglite's own
    argument tuples and Futures, and numbers and names, which the garbage collector need not
    visit. They are let go all at once when no call is left; daglite's `map_tasks` holds as
    much until it returns. Records are made only to show calls (`record`). Only the thread that
    opened a fan-out adds calls to it; they share its submit time (`created`).

    Attributes:
        args: The positional arguments of the calls: map index -> args.
        kwargs: The keyword arguments of the calls that have some: map index -> kwargs.
        futures: The backend's Futures of the calls, to cancel those that wait.
        running: The calls that run: map index -> (worker, start time).
        finished: The calls that finished since the last count, flat: map index, worker, start
            time, end time, and so on (one `extend` per call, which no other thread can split).
        aborted: The calls that failed or were cancelled since the last count: (map index,
            (worker, start time) or None, end time, final state, exception).
    """

    def __init__(
        self, label: str, backend: str, tracker: Tracker, func: Callable[..., Any], cell: int | None
    ) -> None:
        from daglite_nb._daglite import map_index_var

        super().__init__(label, backend, tracker)
        self.func = func
        self.cell = cell
        self.args: dict[int, tuple[Any, ...]] = {}
        self.kwargs: dict[int, dict[str, Any]] = {}
        self.futures: dict[int, Future[Any]] = {}
        self.running: dict[int, tuple[str, float]] = {}
        self.finished: list[Any] = []
        self.aborted: list[tuple[int, tuple[str, float] | None, float, str, BaseException]] = []
        self._map_index = map_index_var()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run `func` as the call of the current map index; record its start and end."""
        index: int = self._map_index.get().map_index  # type: ignore[union-attr,assignment]
        tracker: Tracker = self.tracker  # type: ignore[assignment]
        worker = _this_thread.name or thread_name()
        began = time.time()
        running = self.running
        running[index] = (worker, began)
        if not tracker.signalled and self.listeners:
            tracker.touch(self)
        try:
            result = self.func(*args, **kwargs)
        except BaseException as error:
            self.abort(index, FAILED, error)
            raise
        del running[index]
        finished = self.finished
        finished.extend((index, worker, began, time.time()))
        if not tracker.signalled or len(finished) >= FOLD_AT * _FINISHED_FIELDS:
            tracker.fan_out_ended(self)
        return result

    def abort(self, index: int, state: str, error: BaseException | None = None) -> None:
        """Record that call *index* failed (with *error*) or was cancelled, in *state*."""
        tracker: Tracker = self.tracker  # type: ignore[assignment]
        failure = _failure(self, error)
        with tracker.lock:
            if failure is not None and len(self.failures) < GROUP_FAILURES:
                self.failures.append(failure)
            start = self.running.pop(index, None)
            self.aborted.append((index, start, time.time(), state, error))  # type: ignore[arg-type]
        tracker.fan_out_ended(self)

    @property
    def waiting_ends(self) -> int:
        """How many calls ended since the last count."""
        return len(self.finished) // _FINISHED_FIELDS + len(self.aborted)

    def take_ends(self, keep: int) -> tuple[dict[str, int], list[tuple[Any, ...]]]:
        """Take the calls that ended since the last time (under the tracker's lock).

        Returns:
            How many ended, by final state, and, to keep as detail, the ends of the last *keep*
            finished calls and of all the others.
        """
        finished, aborted = self.finished, self.aborted
        size = len(finished)  # what workers append meanwhile stays for the next time
        shown = finished[max(size - keep * _FINISHED_FIELDS, 0) : size]
        del finished[:size]
        failed_or_cancelled = aborted[:]
        del aborted[:]
        counts = dict.fromkeys(TERMINAL, 0)
        counts[FINISHED] = size // _FINISHED_FIELDS
        columns = (shown[i::_FINISHED_FIELDS] for i in range(_FINISHED_FIELDS))
        ends = [
            (index, (worker, began), ended, FINISHED, None)
            for index, worker, began, ended in zip(*columns, strict=True)
        ]
        for end in failed_or_cancelled:
            counts[end[3]] += 1
        ends += failed_or_cancelled
        return counts, [
            (self, index, *self._arguments(index), start, ended, state, error)
            for index, start, ended, state, error in ends
        ]

    def cancel_waiting(self) -> int:
        """Cancel the calls that have not started; return how many were cancelled."""
        cancelled = 0
        running, futures = self.running, self.futures
        for index, future in list(futures.items()):
            # Popped as it is cancelled, so that no other cancel counts it again.
            if index not in running and future.cancel() and futures.pop(index, None):
                self.abort(index, CANCELLED)
                cancelled += 1
        return cancelled

    def running_count(self) -> int:
        """How many of its calls run now."""
        return len(self.running)

    def record(
        self,
        index: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start: tuple[str, float] | None = None,
        ended: float | None = None,
        final: str | None = None,
        error: BaseException | None = None,
    ) -> TaskRecord:
        """A record of call *index*, made to show it (the fan-out keeps none)."""
        record = TaskRecord(0, self.label, args, kwargs, self.backend, index, self.cell, self)
        record.submitted = self.created
        if start is not None:
            record.worker, record.started = start
        record.ended, record.final, record.error = ended, final, error
        return record

    def live_records(self, count: int) -> list[TaskRecord]:
        """Records of the running calls and of the last waiting ones, at most *count*.

        The calls wait in the order they were submitted (executors take them first in, first
        out), so the waiting ones are the last.
        """
        running = dict(self.running)
        total = self.total
        waiting = min(max(total - self.done - self.waiting_ends - len(running), 0), count)
        shown = [*running.items(), *((i, None) for i in range(total - waiting, total))]
        return [
            self.record(index, *self._arguments(index), start)
            for index, start in shown[-count:]
            if index in self.args and (start is not None or index not in running)
        ]

    def _arguments(self, index: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return self.args[index], self.kwargs.get(index, {})


# region Tracker


class _FanOuts(threading.local):
    """The fan-outs a thread's `map_tasks` calls join (one per task name)."""

    def __init__(self) -> None:
        self.by_name: dict[str, TaskGroup] = {}
        """Fan-outs of records, by task name."""
        self.by_func: dict[Callable[..., Any], FanOut] = {}
        """Fan-outs that run here (`FanOut`), by the callable they run."""


class Tracker(_Observable):
    """Every call of one session: live ones, a bounded tail of ended ones, and counts.

    A call costs as little as possible while it runs. daglite's `map_tasks` calls that run in
    this process are kept in the columns of their `FanOut`, whose workers append their ends to
    a list without a lock. Every other call gets a `TaskRecord` among the live ones: its worker
    stamps the start on it and appends it to a list of starts, and its end is recorded under
    `lock` (the final state, the counts, the failures). `apply()` counts the starts and the
    fan-outs' ends and tells the listeners what changed; readers apply before they read, and
    while widgets are shown the flusher applies at most 10 times a second (`on_events`).
    """

    def __init__(self, recent: int = RECENT_RECORDS) -> None:
        super().__init__()
        self.lock = threading.RLock()
        self.cell: int | None = None
        self.on_fan_out: Callable[[TaskGroup], None] | None = None
        self.on_events: Callable[[], None] | None = None
        self._ended: dict[str, int] = dict.fromkeys(TERMINAL, 0)
        self._running: dict[TaskGroup | None, int] = {}
        """Calls running, by fan-out: starts counted by `apply()`, minus the ends since."""
        self._starts: list[TaskGroup | None] = []
        """The fan-outs of calls that started since the last `apply()` (workers append)."""
        self._live: dict[int, TaskRecord] = {}
        self._fanned: dict[FanOut, None] = {}
        """The fan-outs with calls that have not ended."""
        self._recent: deque[TaskRecord | tuple[Any, ...]] = deque(maxlen=recent)
        """The calls that ended last: records, and the ends of fan-out calls (`fan_out_ended`)."""
        self._changed: dict[int, _Observable] = {}
        self.signalled = False
        """Whether the listeners are to be told at the next `apply()` (and the flusher knows)."""
        self._next_id = itertools.count(1).__next__
        self._fan_outs = _FanOuts()

    # region Reading

    @property
    def counts(self) -> dict[str, int]:
        """Tasks by state, for every task of the session."""
        self.apply()
        with self.lock:
            live = len(self._live)
            running = max(0, min(sum(self._running.values()), live))
            for fan_out in list(self._fanned):  # the submitting thread adds without the lock
                live += fan_out.total - fan_out.done
                running += len(fan_out.running)
            return {PENDING: live - running, RUNNING: running, **self._ended}

    @property
    def busy(self) -> bool:
        """Whether some call has not ended."""
        return bool(self._live or self._fanned)

    @property
    def recent(self) -> list[TaskRecord]:
        """Records of the calls that ended last, oldest first."""
        with self.lock:
            records = [_as_record(entry) for entry in self._recent]
        return sorted(records, key=_end_time)  # fan-outs count finished calls in batches

    def latest(self, count: int) -> list[TaskRecord]:
        """The *count* most recent records (ended or not), newest first."""
        with self.lock:
            ended = sorted(map(_as_record, list(self._recent)[-count:]), key=_end_time)
            live = list(self._live.values())
            for fan_out in list(self._fanned):
                live += fan_out.live_records(count)
        live.sort(key=lambda record: record.submitted)
        return [*ended, *live][-count:][::-1]

    def live_futures(self) -> list[Future[Any]]:
        """The backend Futures of the calls that have not ended."""
        with self.lock:
            futures = [record.future for record in self._live.values() if record.future]
            for fan_out in list(self._fanned):
                futures += list(fan_out.futures.values())
        return futures

    # region Creating

    def new_record(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        backend: str,
        map_index: int | None,
        group: TaskGroup | None = None,
        direct: bool = False,
    ) -> TaskRecord:
        """Create a pending record for a call of *name* about to be submitted to *backend*.

        Args:
            name: The task's name.
            args: The call's positional arguments.
            kwargs: The call's keyword arguments.
            backend: The backend's name.
            map_index: The call's index in its fan-out, if it is in one.
            group: The fan-out of a direct call (`dnb.map`).
            direct: Whether it is daglite-nb's own call (`dnb.submit`, `dnb.map`): its future
                raises a failed task's own exception, not daglite's `TaskError`. Other calls
                with a map index (daglite's `map_tasks` on backends elsewhere) form automatic
                fan-outs: index 0 opens one, the next indexes of the same task on this thread
                join it.
        """
        fresh = False
        if not direct and map_index is not None:
            fan_outs = self._fan_outs.by_name
            if map_index == 0:
                group = fan_outs[name] = TaskGroup(name, backend, self)
                fresh = True
            else:
                group = fan_outs.get(name)
        record = TaskRecord(
            self._next_id(), name, args, kwargs, backend, map_index, self.cell, group, direct
        )
        self._live[record.id] = record
        if group is not None:
            group.total += 1
        if not self.signalled:
            self._added(group)
        if fresh and self.on_fan_out is not None:
            self.on_fan_out(group)  # type: ignore[arg-type]
        return record

    def open_fan_out(
        self,
        name: str,
        backend: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> FanOut:
        """Open a `FanOut` with call 0 of daglite's `map_tasks` of *func*, run here by *backend*.

        It replaces the fan-out of the same task name this thread had.
        """
        fan_outs = self._fan_outs.by_func
        for known in [key for key, fan_out in fan_outs.items() if fan_out.label == name]:
            del fan_outs[known]
        fan_out = fan_outs[func] = FanOut(name, backend, self, func, self.cell)
        self.fan_out_call(func, args, kwargs, 0)
        if self.on_fan_out is not None:
            self.on_fan_out(fan_out)
        return fan_out

    def fan_out_call(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        map_index: int,
    ) -> FanOut | None:
        """Add call *map_index* of *func* to this thread's `FanOut` of *func*, if it is its next.

        Returns:
            The fan-out, which the backend runs as the call; None if the call continues none
            (then it gets a record).
        """
        fan_out = self._fan_outs.by_func.get(func)
        if fan_out is None or fan_out.total != map_index:
            return None
        fan_out.total = map_index + 1  # first: the tables are renewed only when no call is left
        fan_out.args[map_index] = args
        if kwargs:
            fan_out.kwargs[map_index] = kwargs
        self._fanned[fan_out] = None
        if not self.signalled:
            self._added(fan_out)
        return fan_out

    def _added(self, group: TaskGroup | None) -> None:
        # A call was added (to *group*): tell who watches.
        if group is not None and group.listeners:
            self.touch(group)
        if self.listeners:  # the panel lists the new call
            self._signal()

    def track(self, inner: Future[Any], record: TaskRecord, ends_here: bool) -> None:
        """Follow *inner*, the backend's Future for the call *record*.

        If the call records its own end (*ends_here*: the backend runs the record), only
        `cancel` can end it otherwise, and *inner* is not watched at all (a done-callback
        would slow every call); else *inner* tells the end.
        """
        if not ends_here:
            inner.add_done_callback(partial(self.settle, record))
        if record.final is None:
            record.future = inner

    # region State changes

    def started(self, record: TaskRecord, worker: str, at: float) -> None:
        """Record that the call *record* started on *worker* at time *at*.

        No lock: called by the thread that runs the call, which alone ends it later (a call
        that started cannot be cancelled). Reports from elsewhere go through `reported`.
        """
        if record.started is not None or record.final is not None:  # reported twice, or late
            return
        record.worker = worker
        record.started = at
        self._starts.append(record.group)
        if record.listeners:
            self.touch(record)
        elif record.group is not None and record.group.listeners and not self.signalled:
            self.touch(record.group)

    def reported(self, record_id: int, worker: str, at: float) -> None:
        """Record that call *record_id* started, as reported from a thread that does not end it."""
        with self.lock:  # against its end, recorded meanwhile by another thread
            record = self._live.get(record_id)
            if record is not None:
                self.started(record, worker, at)

    def on_started(self, event_type: Any, data: dict[str, Any]) -> None:
        """Handle a worker's report that a call started (daglite event handler).

        The worker is named by the report (Dask workers), else by its thread if it runs in
        this process, else by its process id.
        """
        worker = data.get("worker")
        if worker is None:
            here = data["pid"] == os.getpid()
            worker = data["thread"] if here else f"pid {data['pid']}"
        self.reported(data["id"], worker, data["at"])

    def settle(self, record: TaskRecord, inner: Future[Any]) -> None:
        """Record the end of the call *record* from its finished Future *inner*."""
        try:
            error = inner.exception()
        except CancelledError:
            self.ended(record, CANCELLED)
            return
        if error is None:
            self.ended(record, FINISHED, result=inner.result())
        else:
            self.ended(record, FAILED, error)

    def ended(
        self,
        record: TaskRecord,
        state: str,
        error: BaseException | None = None,
        result: Any = None,
    ) -> None:
        """Record that the call *record* ended in *state* (with *error*, or *result*).

        Its `LiveFuture`, if it has one, gets the outcome too, after the record is final.
        """
        now = time.time()
        group = record.group
        if error is not None and record.direct:
            error = _original(error)
        failure = _failure(group, error)
        with self.lock:
            if record.final is not None:  # a second cancel
                return
            record.final, record.ended, record.error = state, now, error
            record.future = None  # no cycle between records and futures once settled
            if record.started is not None:
                self._running[group] = self._running.get(group, 0) - 1
            del self._live[record.id]
            self._ended[state] += 1
            self._recent.append(record)
            if record.listeners:
                self._changed[id(record)] = record
            if group is not None:
                group.ended_counts[state] += 1
                group.done += 1
                if failure is not None and len(group.failures) < GROUP_FAILURES:
                    group.failures.append(failure)
                if group.done == group.total:
                    group.ended = now
                if group.listeners:
                    self._changed[id(group)] = group
        live_future = record.live_future
        if live_future is not None:
            record.live_future = None  # the future keeps its record, not the other way round
            live_future.take(state, error, result)
        if not self.signalled:
            self._signal()

    def fan_out_ended(self, fan_out: FanOut) -> None:
        """Calls of *fan_out* ended: count them at the next `apply()`, or now if many wait."""
        if fan_out.waiting_ends >= FOLD_AT:
            with self.lock:
                self._count_ends(fan_out)
        if not self.signalled:
            self.touch(fan_out)

    def _count_ends(self, fan_out: FanOut) -> None:
        # Under the lock: count the calls of *fan_out* that ended since the last time.
        counts, kept = fan_out.take_ends(self._recent.maxlen or 0)
        self._recent.extend(kept)
        for state, count in counts.items():
            self._ended[state] += count
            fan_out.ended_counts[state] += count
            fan_out.done += count
        if fan_out.done == fan_out.total:  # no call left: let go of the columns
            fan_out.ended = time.time()
            fan_out.args, fan_out.kwargs, fan_out.futures = {}, {}, {}
            self._fanned.pop(fan_out, None)
        if fan_out.listeners:
            self._changed[id(fan_out)] = fan_out

    def running_in(self, group: TaskGroup) -> int:
        """How many calls of *group* ran at the last `apply()`."""
        return self._running.get(group, 0)

    def touch(self, observable: _Observable) -> None:
        """Have *observable*'s listeners told at the next `apply()`."""
        with self.lock:
            self._changed[id(observable)] = observable
        if not self.signalled:
            self._signal()

    def cancel(self, record: TaskRecord) -> bool:
        """Cancel the call *record* if it has not started; return whether it is cancelled."""
        future = record.future
        if future is None or not _cancel_backend_future(future):
            return record.final == CANCELLED
        self.ended(record, CANCELLED)
        return True

    def cancel_pending(self, cell: int | None = None, backend: str | None = None) -> int:
        """Cancel pending calls (of *cell*, on *backend*, if given); return how many."""
        with self.lock:
            records = list(self._live.values())
            fan_outs = list(self._fanned)
        cancelled = sum(
            self.cancel(record)
            for record in records
            if record.started is None and _matches(record, cell, backend)
        )
        for fan_out in fan_outs:
            if _matches(fan_out, cell, backend):
                cancelled += fan_out.cancel_waiting()
        return cancelled

    def apply(self) -> None:
        """Count the calls that started; tell the listeners what changed since the last time."""
        with self.lock:
            starts = self._starts
            begun = len(starts)
            running = self._running
            for group, count in Counter(starts[:begun]).items():
                running[group] = running.get(group, 0) + count
            for group in [group for group, count in running.items() if not count]:
                del running[group]  # else every fan-out that ever ran would stay here
            del starts[:begun]  # what workers append meanwhile stays for the next time
            for fan_out in list(self._fanned):
                if fan_out.waiting_ends:
                    self._count_ends(fan_out)
            signalled, self.signalled = self.signalled, False
            changed, self._changed = self._changed, {}
        if not signalled:
            return
        for observable in changed.values():
            observable.notify()
        if self.listeners:
            self.notify()

    def _signal(self) -> None:
        self.signalled = True
        if self.on_events is not None:
            self.on_events()


def _matches(call: TaskRecord | FanOut, cell: int | None, backend: str | None) -> bool:
    """Whether *call* (a record, or a fan-out's calls) is of *cell* and on *backend*, if given."""
    return (cell is None or call.cell == cell) and (backend is None or call.backend == backend)


def _failure(group: TaskGroup | None, error: BaseException | None) -> Failure | None:
    """*error* formatted for *group*, if the group shows it.

    Formatted at once: an exception that is raised again grows later frames.
    """
    if error is None or group is None or len(group.failures) >= GROUP_FAILURES:
        return None
    return Failure.of(error)


def _end_time(record: TaskRecord) -> float:
    return record.ended or 0.0


def _as_record(entry: TaskRecord | tuple[Any, ...]) -> TaskRecord:
    """The record of an ended call, as `Tracker` keeps it (a fan-out call's end is a tuple)."""
    if isinstance(entry, TaskRecord):
        return entry
    fan_out, *end = entry
    return fan_out.record(*end)


# region Futures


WAKE_SECONDS = 0.1
"""How often a cell that awaits futures wakes its event loop (see `wait_awake`)."""


async def wait_awake(
    futures: list[Future[Any]], timeout: float | None = None
) -> tuple[set[Future[Any]], set[Future[Any]]]:
    """`concurrent.futures.wait` for a cell with top-level `await`: `(done, pending)`.

    The event loop wakes every `WAKE_SECONDS` while it waits: ipykernel turns the interrupt
    of an awaiting cell into a callback that runs only when the loop next wakes up, so with
    nothing else to wake it the interrupt would take effect only when a future finished.
    """
    wrapped = {asyncio.wrap_future(future): future for future in futures}
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    pending = set(wrapped)
    while pending:
        step = WAKE_SECONDS if deadline is None else min(WAKE_SECONDS, deadline - loop.time())
        if step <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=step)
    return {wrapped[f] for f in wrapped.keys() - pending}, {wrapped[f] for f in pending}


async def _result_awake(future: Future[Any]) -> Any:
    """Await *future*'s result, waking the event loop meanwhile (see `wait_awake`)."""
    await wait_awake([future])
    return future.result()


def _cancel_backend_future(future: Future[Any]) -> bool:
    """Cancel the backend's *future*; an adopted `LiveFuture` as the plain Future it was."""
    if isinstance(future, LiveFuture):  # its own cancel() comes here through `Tracker.cancel`
        return Future.cancel(future)
    return future.cancel()  # a backend's own cancel, e.g. the Dask backend's, which tells Dask


def _original(error: BaseException) -> BaseException:
    """The user's exception behind daglite's `TaskError` wrapper."""
    from daglite.exceptions import TaskError

    if isinstance(error, TaskError) and error.__cause__ is not None:
        return error.__cause__
    return error


class LiveFuture(Future):
    """A `concurrent.futures.Future` that knows its task's state and shows it live.

    On the backends that run calls in the kernel's process (inline, thread) it *is* the
    backend's own Future, adopted (`adopt`): one Future per call, not two. Elsewhere it is made
    with its task's record and gets the outcome as the record ends (`take`). Either way `cancel()`
    cancels the backend's Future, and a failed task raises its own exception, not daglite's
    `TaskError`. In a notebook it displays as a live status widget.
    """

    def __init__(self, record: TaskRecord, tracker: Tracker) -> None:
        super().__init__()
        self.record = record
        self.tracker = tracker

    @classmethod
    def adopt(cls, future: Future[Any], record: TaskRecord, tracker: Tracker) -> LiveFuture:
        """Turn the backend's plain *future* for the call *record* into its `LiveFuture`.

        Only for calls that record their own end before the backend resolves *future*, so its
        state is final by the time `result()` returns (creating a second Future per call costs
        more than the rest of its tracking together).
        """
        future.__class__ = cls
        adopted: LiveFuture = future  # type: ignore[assignment]
        adopted.record = record
        adopted.tracker = tracker
        return adopted

    @property
    def state(self) -> str:
        """pending, running, finished, failed or cancelled."""
        return self.record.state

    @property
    def task_name(self) -> str:
        """Name of the task."""
        return self.record.name

    @property
    def backend(self) -> str:
        """Name of the backend that runs it."""
        return self.record.backend

    @property
    def worker(self) -> str | None:
        """Thread name or process id of the worker that ran it, once it started."""
        return self.record.worker

    @property
    def elapsed(self) -> float:
        """Seconds it has been running (or waiting, before it started)."""
        return self.record.elapsed

    def cancel(self) -> bool:
        """Cancel the task if it has not started; return whether it was cancelled."""
        return self.cancelled() or self.tracker.cancel(self.record)

    def __await__(self) -> Any:
        return _result_awake(self).__await__()

    def take(self, state: str, error: BaseException | None, result: Any) -> None:
        """Take the call's outcome (from `Tracker.ended`, once the record is final)."""
        if state == CANCELLED:
            super().cancel()
        elif error is not None:
            self.set_exception(error)
        else:
            self.set_result(result)

    def __repr__(self) -> str:
        return f"<LiveFuture {self.record.call} on {self.record.backend}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        from daglite_nb.display import future_bundle

        return future_bundle(self)


class LiveFutureGroup(Sequence[LiveFuture]):
    """The futures of one fan-out, shown as one progress bar."""

    def __init__(self, group: TaskGroup, futures: list[LiveFuture]) -> None:
        self.group = group
        self._futures = futures

    def __getitem__(self, index: Any) -> Any:
        return self._futures[index]

    def __len__(self) -> int:
        return len(self._futures)

    def results(self, timeout: float | None = None) -> list[Any]:
        """Wait for every future and return their results in order (the first error raises)."""
        return [future.result(timeout) for future in self._futures]

    def __repr__(self) -> str:
        return f"<LiveFutureGroup {self.group.label} × {len(self)} on {self.group.backend}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        from daglite_nb.display import group_bundle

        return group_bundle(self.group, repr(self))
