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
from concurrent.futures import Future
from functools import partial
from queue import Empty
from queue import SimpleQueue
from typing import Any
from typing import NamedTuple

PENDING = "pending"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
CANCELLED = "cancelled"
STATES = (PENDING, RUNNING, FINISHED, FAILED, CANCELLED)
TERMINAL = frozenset({FINISHED, FAILED, CANCELLED})
_NEXT = {PENDING: {RUNNING, *TERMINAL}, RUNNING: set(TERMINAL)}

_SUBMITTED, _STARTED, _SETTLED = object(), object(), object()
"""The kinds of events a tracker's inbox carries."""

APPLY_EVERY = 4096
"""Events a tracker lets pile up, with nobody reading, before the submitting thread applies."""

RECENT_RECORDS = 200
"""How many finished records keep their detail (counts are kept for all)."""

GROUP_FAILURES = 3
"""How many failures a fan-out keeps to show with their tracebacks."""

CALL_WIDTH = 60
"""Longest shown call text, in characters."""

Listener = Callable[[], None]

_NO_MODE: tuple[bool, TaskGroup | None, TaskGroup | None] = (False, None, None)
"""A thread's submission mode: daglite-nb's own calls?, their group, the automatic fan-out."""

_short = reprlib.Repr()
_short.maxstring = 24
_short.maxother = 24
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4


def _shorten(text: str, width: int = CALL_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


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
    """One task call and what is known about it."""

    __slots__ = (
        "id",
        "name",
        "backend",
        "map_index",
        "cell",
        "group",
        "state",
        "worker",
        "submitted",
        "started",
        "ended",
        "future",
        "error",
        "direct",
        "_call",
        "_args",
    )

    def __init__(
        self,
        record_id: int,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        backend: str,
        map_index: int | None,
        cell: int | None,
        group: TaskGroup | None,
        direct: bool = False,
    ) -> None:
        self.listeners = ()
        self.id = record_id
        self.name = name
        self.backend = backend
        self.map_index = map_index
        self.cell = cell
        self.group = group
        self.state = PENDING
        self.worker: str | None = None
        self.submitted = time.time()
        self.started: float | None = None
        self.ended: float | None = None
        self.future: Future[Any] | None = None  # while live: the Future to cancel
        self.error: BaseException | None = None
        self.direct = direct
        self._call: str | None = None
        self._args: tuple[tuple[Any, ...], dict[str, Any]] | None = (args, kwargs)

    @property
    def call(self) -> str:
        """The call as text, shortened: `task_fn(1, y=2)`."""
        if self._call is None:
            args, kwargs = self._args or ((), {})
            parts = [_short.repr(a) for a in args]
            parts += [f"{k}={_short.repr(v)}" for k, v in kwargs.items()]
            self._call = _shorten(f"{self.name}({', '.join(parts)})")
            self._args = None
        return self._call

    def settle_callback(self, tracker: Tracker) -> Callable[[Future[Any]], Any]:
        """A done-callback that records the end of this task on *tracker*."""
        return partial(tracker.settle, self)

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
        return cls(f"{type(error).__name__}: {error}", "".join(traceback.format_exception(error)))


class TaskGroup(_Observable):
    """A fan-out: counts by state over its records, and its first failures."""

    def __init__(self, label: str, backend: str, tracker: Tracker | None = None) -> None:
        super().__init__()
        self.label = label
        self.backend = backend
        self.tracker = tracker
        self.total = 0
        self.counts: Counter[str] = Counter()
        self.failures: list[Failure] = []
        self.created = time.time()
        self.ended: float | None = None

    @property
    def done(self) -> int:
        """Tasks that reached a final state."""
        return self.total - self.counts[PENDING] - self.counts[RUNNING]

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


# region Tracker


class _Direct:
    """The `with` block of `Tracker.direct` (a class: cheaper than a generator per call)."""

    __slots__ = ("_local", "_group")

    def __init__(self, local: threading.local, group: TaskGroup | None) -> None:
        self._local = local
        self._group = group

    def __enter__(self) -> None:
        self._local.mode = (True, self._group, None)

    def __exit__(self, *exc: object) -> None:
        self._local.mode = _NO_MODE


class Tracker(_Observable):
    """All records of one session: live ones, a bounded tail of finished ones, and counts.

    Submitting threads and workers never wait for each other here: each change is put on an
    inbox (a `queue.SimpleQueue`, no Python lock), and `apply()` folds what has arrived into the
    records, groups and counts in one batch under `lock`, then tells the listeners once per
    changed object. Readers apply before they read; while widgets are shown, the flusher applies
    at most 10 times a second (`on_events`); otherwise the submitting thread applies every
    `APPLY_EVERY` events, so the inbox stays bounded.
    """

    def __init__(self, recent: int = RECENT_RECORDS) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.recent: deque[TaskRecord] = deque(maxlen=recent)
        self.cell: int | None = None
        self.on_fan_out: Callable[[TaskGroup], None] | None = None
        self.on_events: Callable[[], None] | None = None
        self._counts: Counter[str] = Counter()
        self._live: dict[int, TaskRecord] = {}
        self._inbox: SimpleQueue[tuple[Any, ...]] = SimpleQueue()
        self._signalled = False
        self._ids = itertools.count(1)
        self._local = threading.local()

    # region Reading

    @property
    def counts(self) -> Counter[str]:
        """Tasks by state, for every task of the session."""
        self.apply()
        with self.lock:
            return self._counts.copy()

    @property
    def live(self) -> dict[int, TaskRecord]:
        """Records of the tasks that have not ended, by id."""
        self.apply()
        with self.lock:
            return dict(self._live)

    def latest(self, count: int) -> list[TaskRecord]:
        """The *count* most recent records (ended or not), newest first."""
        live = self.live
        with self.lock:
            recent = list(self.recent)
        return [*recent, *live.values()][-count:][::-1]

    # region Creating

    def track(self, inner: Future[Any], record: TaskRecord) -> Future[Any]:
        """Follow *inner* on *record*; return the Future the caller should get.

        daglite-nb's own calls get a `LiveFuture`; other calls (daglite's `map_tasks`, which
        never shows its futures) keep the backend's Future, which saves an object per task.
        """
        future: Future[Any] = LiveFuture(record, inner, self) if record.direct else inner
        record.future = future
        inner.add_done_callback(future._settle if record.direct else record.settle_callback(self))  # type: ignore[union-attr]
        return future

    def new_record(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        backend: str,
        map_index: int | None,
    ) -> TaskRecord:
        """Create a pending record for a call about to be submitted."""
        direct, explicit, auto = getattr(self._local, "mode", _NO_MODE)
        group, fresh = explicit, False
        if explicit is None and map_index is not None:
            if map_index == 0:
                group, fresh = TaskGroup(name, backend, self), True
                self._local.mode = (direct, None, group)
            else:
                group = auto
        elif auto is not None:
            self._local.mode = (direct, explicit, None)
        record = TaskRecord(
            next(self._ids),
            name,
            args,
            kwargs,
            backend=backend,
            map_index=map_index,
            cell=self.cell,
            group=group,
            direct=direct,
        )
        self._post((_SUBMITTED, record))
        if fresh and self.on_fan_out is not None:
            self.apply()  # the bar appears with its first task counted
            self.on_fan_out(group)  # type: ignore[arg-type]
        elif self._inbox.qsize() > APPLY_EVERY:
            self.apply()
        return record

    def direct(self, group: TaskGroup | None = None) -> _Direct:
        """Mark the calls this thread submits inside a `with` block as daglite-nb's own.

        Their futures raise a failed task's original exception (not daglite's `TaskError`), and
        their map-indexed calls join *group* instead of an automatic fan-out.
        """
        return _Direct(self._local, group)

    # region State changes

    def on_started(self, event_type: Any, data: dict[str, Any]) -> None:
        """Handle a worker's report that a call started (daglite event handler)."""
        worker = data.get("worker") or _worker_name(data["thread"], data["pid"])
        self._post((_STARTED, data["id"], worker, data["at"]))

    def settle(self, record: TaskRecord, inner: Future[Any]) -> str:
        """Record the end of *inner* on *record*; return its final state."""
        error = None
        if inner.cancelled():
            state = CANCELLED
        else:
            error = inner.exception()
            state = FINISHED if error is None else FAILED
        record.ended = time.time()
        record.future = None  # no cycle between records and futures once settled
        failure = None
        if error is not None:
            record.error = _original(error) if record.direct else error
            if record.group is not None and len(record.group.failures) < GROUP_FAILURES:
                # Formatted now: the exception may be re-raised and grow later frames.
                failure = Failure.of(record.error)
        self._post((_SETTLED, record, state, failure))
        return state

    def cancel_pending(self, cell: int | None = None) -> int:
        """Cancel pending tasks (of cell *cell* only, if given); return how many were cancelled."""
        futures = [
            r.future
            for r in self.live.values()
            if r.future is not None and (cell is None or r.cell == cell)
        ]
        return sum(future.cancel() for future in futures)

    def apply(self) -> None:
        """Fold the changes that have arrived into records, groups and counts; notify."""
        if self._inbox.empty():
            return
        changed: dict[int, _Observable] = {}
        with self.lock:
            self._signalled = False
            while True:
                try:
                    event = self._inbox.get_nowait()
                except Empty:
                    break
                record = self._apply(event)
                if record is not None:
                    for observable in (record, record.group):
                        if observable is not None and observable.listeners:
                            changed[id(observable)] = observable
        for observable in changed.values():
            observable.notify()
        if self.listeners:
            self.notify()

    def _post(self, event: tuple[Any, ...]) -> None:
        self._inbox.put(event)
        if not self._signalled and self.on_events is not None:
            self._signalled = True
            self.on_events()

    def _apply(self, event: tuple[Any, ...]) -> TaskRecord | None:
        kind = event[0]
        if kind is _SUBMITTED:
            record = event[1]
            self._live[record.id] = record
            self._counts[PENDING] += 1
            if record.group is not None:
                record.group.total += 1
                record.group.counts[PENDING] += 1
            return record
        if kind is _STARTED:
            record = self._live.get(event[1])
            if record is None:  # already settled: the report came in late
                return None
            record.worker, record.started = event[2], event[3]
            return record if self._move(record, RUNNING) else None
        _, record, state, failure = event
        self._move(record, state)
        del self._live[record.id]
        self.recent.append(record)
        group = record.group
        if group is not None:
            if failure is not None and len(group.failures) < GROUP_FAILURES:
                group.failures.append(failure)
            if group.done == group.total:
                group.ended = record.ended
        return record

    def _move(self, record: TaskRecord, state: str) -> bool:
        old = record.state
        if state not in _NEXT.get(old, ()):
            return False
        counts = self._counts
        counts[old] -= 1
        counts[state] += 1
        if record.group is not None:
            counts = record.group.counts
            counts[old] -= 1
            counts[state] += 1
        record.state = state
        return True


def _worker_name(thread: str, pid: int) -> str:
    return thread if pid == os.getpid() else f"pid {pid}"


# region Futures


def _original(error: BaseException) -> BaseException:
    """The user's exception behind daglite's `TaskError` wrapper."""
    from daglite.exceptions import TaskError

    if isinstance(error, TaskError) and error.__cause__ is not None:
        return error.__cause__
    return error


class LiveFuture(Future):
    """A `concurrent.futures.Future` that knows its task's state and shows it live.

    It follows the backend's own Future: `cancel()` cancels that one, and results, exceptions
    and cancellation flow back. In a notebook it displays as a live status widget.
    """

    def __init__(self, record: TaskRecord, inner: Future[Any], tracker: Tracker) -> None:
        super().__init__()
        self.record = record
        self._inner: Future[Any] | None = inner
        self.tracker = tracker

    @property
    def state(self) -> str:
        """pending, running, finished, failed or cancelled."""
        self.tracker.apply()
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
        self.tracker.apply()
        return self.record.worker

    @property
    def elapsed(self) -> float:
        """Seconds it has been running (or waiting, before it started)."""
        self.tracker.apply()
        return self.record.elapsed

    def cancel(self) -> bool:
        """Cancel the task if it has not started; return whether it was cancelled."""
        inner = self._inner
        return self.cancelled() or (inner is not None and inner.cancel())

    def __await__(self) -> Any:
        return asyncio.wrap_future(self).__await__()

    def _settle(self, inner: Future[Any]) -> None:
        state = self.tracker.settle(self.record, inner)
        self._inner = None
        if state == CANCELLED:
            super().cancel()
        elif state == FAILED:
            self.set_exception(self.record.error)
        else:
            self.set_result(inner.result())

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
