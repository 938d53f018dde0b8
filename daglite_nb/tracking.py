"""One model of every task call daglite runs in the kernel's session. No IPython here.

A `Call` is one task call. Calls submitted through a session backend exist from their submission
(pending); every other call (a task called directly, awaited, gathered, run by a workflow, nested
in another task, on any backend) is first seen when daglite's hooks report that it started (see
`daglite_nb._events`). A `Group` counts the calls of one fan-out (`map_tasks`, `dnb.map`,
`gather_tasks`) or of a workflow run; the fan-outs that the calls of a group (or a single call)
make inside them nest under it as child groups, one per task name.

The `Tracker` changes calls only under its lock and keeps every count as it changes; widgets and
the panel read it at their own pace. A call that ended keeps text, never objects: no arguments,
results, exceptions or frames.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import CancelledError
from concurrent.futures import Future
from typing import Any
from typing import Generic
from typing import TypeVar

from daglite_nb._daglite import active_session as _active_session
from daglite_nb._text import Failure
from daglite_nb._text import result_text

R = TypeVar("R")

PENDING = "pending"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
CANCELLED = "cancelled"
STATES = (PENDING, RUNNING, FINISHED, FAILED, CANCELLED)
ENDED = (FINISHED, FAILED, CANCELLED)

_UNKNOWN = object()
"""Stands for a result that a worker's report does not carry."""

RECENT_CALLS = 200
"""How many ended calls the tracker keeps to show (counts are kept for all)."""

GROUP_FAILURES = 3
"""How many failures a group keeps to show with their tracebacks."""


current_call: contextvars.ContextVar[Call | int | None] = contextvars.ContextVar(
    "daglite_nb_current_call", default=None
)
"""The submitted call whose task runs in this context: the `Call` in the kernel, its id on a
worker. Tasks nested in it see it too; daglite's parent ids tell them apart."""


class _ThisThread(threading.local):
    """What a thread knows about itself, looked up on its first use (`this_thread.name`)."""

    def __init__(self) -> None:
        self.name = threading.current_thread().name


this_thread = _ThisThread()
"""The current thread's name, which a worker stamps on each call it starts."""


# region Calls and groups


class Call:
    """One task call and what is known of it.

    Attributes:
        name: The task's name; daglite's resolved name (`load-a[3]`) once the call started (see
            `label`).
        text: The call with its arguments (`square(7)`), for calls submitted one by one.
        parent: The call inside which this one runs, if any.
        group: The group this call counts in, if any.
        index: Its index in a fan-out, if it is in one.
        task_id: daglite's id of the call (`TaskMetadata.id`), once it started.
        attempts: How many times daglite retried it.
        cached: Whether its result came from daglite's cache.
        items: How many items a generator task yielded.
        outcome: A finished call's result as text (calls submitted one by one).
        failure: A failed call's error as text.
        reason: Why a call was cancelled, when not by a plain `cancel()`.
        future: While the call has not ended: the backend's Future, which cancels it.
        live_future: A call submitted with `dnb.submit` to a backend elsewhere: the caller's
            `LiveFuture`, which gets the outcome when the call ends.
        children: The groups of the fan-outs this call made, by task name.
        func: While a submitted call has not ended: the task it runs (see `__call__`).
        tracker: Likewise, the tracker it reports its end to.
        direct: Whether it is daglite-nb's own call (`dnb.submit`, `dnb.map`): it raises a
            failed task's own exception, not daglite's `TaskError`.
        context: For a backend whose executor does not carry daglite's context: the context of
            its submission, which the call runs in.
    """

    __slots__ = (
        "id",
        "name",
        "backend",
        "cell",
        "parent",
        "group",
        "text",
        "index",
        "submitted",
        "task_id",
        "state",
        "started",
        "ended",
        "worker",
        "attempts",
        "cached",
        "items",
        "outcome",
        "failure",
        "reason",
        "future",
        "live_future",
        "children",
        "func",
        "tracker",
        "direct",
        "context",
    )

    def __init__(
        self,
        call_id: int,
        name: str,
        backend: str,
        cell: int | None,
        parent: Call | None = None,
        group: Group | None = None,
        text: str | None = None,
        index: int | None = None,
    ) -> None:
        self.id = call_id
        self.name = name
        self.backend = backend
        self.cell = cell
        self.parent = parent
        self.group = group
        self.text = text
        self.index = index
        self.submitted = time.time()
        self.task_id: Any = None
        self.state = PENDING
        self.started: float | None = None
        self.ended: float | None = None
        self.worker: str | None = None
        self.attempts = 0
        self.cached = False
        self.items = 0
        self.outcome: str | None = None
        self.failure: Failure | None = None
        self.reason: str | None = None
        self.future: Future[Any] | None = None
        self.live_future: LiveFuture[Any] | None = None
        self.children: dict[str, Group] | None = None
        self.func: Callable[..., Any] | None = None
        self.tracker: Tracker | None = None
        self.direct = False
        self.context: contextvars.Context | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task as this call: what a session backend runs for a submitted call.

        It marks the task's context as this call's (`current_call`), so daglite's hooks know
        which submitted call started. It records the end itself when no hook did (a task that
        raised a `BaseException`, which daglite lets through). Run where no daglite session is
        active (the thread of a plain executor), it runs in its submission's `context`.
        """
        context = self.context
        if context is not None and _active_session() is None:
            return context.copy().run(self, *args, **kwargs)
        tracker, func = self.tracker, self.func
        token = current_call.set(self)
        try:
            result = func(*args, **kwargs)  # type: ignore[misc]
        except BaseException as error:
            own = original_error(error)
            if self.ended is None:
                tracker.raised(self, own)  # type: ignore[union-attr]
            if not self.direct:
                raise
            failure = own
        else:
            if self.ended is None:
                outcome = result_text(result) if self.alone else None
                tracker.ended(self, FINISHED, outcome)  # type: ignore[union-attr]
            return result
        finally:
            current_call.reset(token)
        raise failure  # outside the `except`: the task's exception keeps its own context

    def start(self, task: Any, worker: str) -> bool:
        """Start as the submitted call whose own task *task* is (daglite's `TaskMetadata`).

        Returns False if *task* is not its own (a task nested in it), or the call ended.
        No lock: only the thread that runs a call starts it, and a call that runs can no
        longer be cancelled.
        """
        if self.task_id is not None or self.ended is not None:
            return False
        self.task_id, self.name, self.worker = task.id, task.name, worker
        self.started, self.state = time.time(), RUNNING
        return True

    @property
    def alone(self) -> bool:
        """Whether it is shown on its own (with its result), not counted in a group."""
        return self.group is None and self.parent is None

    def __reduce__(self) -> Any:
        # Pickled, a submitted call travels as its task and its id (to another process).
        from daglite_nb._events import RemoteCarrier

        return (RemoteCarrier, (self.func, self.id))

    @property
    def label(self) -> str:
        """What the call is shown as: its text, or its name with its index (`load-a[3]`)."""
        if self.text is not None:
            return self.text
        if self.task_id is None and self.index is not None:
            return f"{self.name}[{self.index}]"
        return self.name

    @property
    def elapsed(self) -> float:
        """Seconds it ran (or has been waiting, before it started), up to its end."""
        begin = self.started or self.submitted
        return max((self.ended or time.time()) - begin, 0.0)

    def __repr__(self) -> str:
        return f"<Call {self.label} on {self.backend}: {self.state}>"


class Group:
    """The calls of one fan-out or workflow run, counted by state.

    Attributes:
        kind: `map_tasks`, `dnb.map`, `gather_tasks` or `workflow` (nested groups: `calls`).
        label: The task's name (a workflow's name).
        owner: For a nested group, the call or group whose calls made its calls.
        live: Its calls that have not ended. A call joins and leaves it in one step each, so
            the group always knows whether calls are left, even if an interrupt lands in the
            middle of the bookkeeping (the kernel's main thread does some of it). How many of
            them run is read from them (`counts`): a start changes its call only.
        ended_counts: Its calls that ended, by state.
        retried: Calls that daglite retried at least once.
        cached: Calls whose result came from the cache.
        items: Items that its generator calls yielded.
        failures: The failures to show, as (call, failure): those of the calls with the lowest
            map indexes (in the order of the calls, not of their ends).
        reason: Why calls were cancelled, if a reason was given (the session stopped).
        closed: For a top-level group: no more calls join it (its fan-out was submitted, its
            cell ended, its workflow ended). A nested group is closed once its owner ended.
        children: Nested groups, by task name.
    """

    def __init__(
        self,
        kind: str,
        label: str,
        backend: str,
        cell: int | None,
        owner: Call | Group | None = None,
    ) -> None:
        self.kind = kind
        self.label = label
        self.backend = backend
        self.cell = cell
        self.owner = owner
        self.live: set[Call] = set()
        self.ended_counts = dict.fromkeys(ENDED, 0)
        self.retried = 0
        self.cached = 0
        self.items = 0
        self.failures: list[tuple[Call, Failure]] = []
        self.reason: str | None = None
        self.closed = False
        self.created = time.time()
        self.last_end = self.created
        self.children: dict[str, Group] = {}

    @property
    def counts(self) -> dict[str, int]:
        """Calls by state."""
        return _counts(list(self.live), self.ended_counts)

    @property
    def done(self) -> int:
        """Calls that ended."""
        ended = self.ended_counts
        return ended[FINISHED] + ended[FAILED] + ended[CANCELLED]

    @property
    def total(self) -> int:
        """Calls counted so far, live and ended.

        Submitted calls count from their submission; the others (nested calls on process
        workers, `gather_tasks`, workflows) from their start.
        """
        return self.done + len(self.live)

    @property
    def complete(self) -> bool:
        """Whether every call counted so far ended (more may still join, unless `ended`)."""
        return not self.live and all(c.complete for c in list(self.children.values()))

    @property
    def ended(self) -> bool:
        """Whether every call ended and none can join any more."""
        owner = self.owner
        if owner is None:
            closed = self.closed
        elif isinstance(owner, Call):
            closed = owner.ended is not None
        else:
            closed = owner.ended
        return closed and self.complete

    @property
    def state(self) -> str:
        """Running or pending until its calls ended, then failed, cancelled or finished.

        Failed if any call failed, else cancelled if any was cancelled.
        """
        if self.kind == "workflow":  # its calls are counted by task, in its children
            if not self.ended:
                return RUNNING
            states = {child.state for child in list(self.children.values())}
            return next((s for s in (FAILED, CANCELLED) if s in states), FINISHED)
        ended = self.ended_counts
        if not self.total or not self.complete:
            return RUNNING if self.done or _any_running(list(self.live)) else PENDING
        if ended[FAILED]:
            return FAILED
        return CANCELLED if ended[CANCELLED] else FINISHED

    @property
    def elapsed(self) -> float:
        """Seconds from its first call to its last end (or now)."""
        return (self.last_end if self.ended else time.time()) - self.created

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far, if it can be told (all calls are known)."""
        done, elapsed = self.done, self.elapsed
        if self.ended or not done or elapsed <= 0 or not self.closed or done == self.total:
            return None
        return (self.total - done) * elapsed / done

    def __repr__(self) -> str:
        return f"<Group {self.kind} {self.label} × {self.total} on {self.backend}: {self.state}>"


def _keep_failure(failures: list[tuple[Call, Failure]], call: Call, failure: Failure) -> None:
    """Keep the failure of *call* among the `GROUP_FAILURES` of the earliest calls."""
    failures.append((call, failure))
    failures.sort(key=lambda kept: (kept[0].index is None, kept[0].index or 0, kept[0].id))
    del failures[GROUP_FAILURES:]


def _counts(live: list[Call], ended: dict[str, int]) -> dict[str, int]:
    """Calls by state: the live ones as they are now, and the counts of the ended ones."""
    running = sum(call.state is RUNNING for call in live)
    return {PENDING: len(live) - running, RUNNING: running, **ended}


def _any_running(live: list[Call]) -> bool:
    return any(call.state is RUNNING for call in live)


# region Tracker


class _FanOut(threading.local):
    """The fan-out a thread is submitting: daglite's `map_tasks` submits items 0, 1, 2, ...

    `current` is the callable it submits and its group (`gather_tasks`: no callable).
    """

    current: tuple[Any, Group | None] = (None, None)


class Tracker:
    """Every call of one session: the live ones, the last ended ones, and counts.

    Args:
        on_show: Called, on the kernel's main thread, with each new top-level group (a
            `map_tasks`, `gather_tasks` or workflow run of a cell) and each awaited top-level
            call that the main thread makes, to show it in the cell.
        recent: How many ended calls to keep.
    """

    def __init__(
        self,
        on_show: Callable[[Call | Group], None] | None = None,
        recent: int = RECENT_CALLS,
    ) -> None:
        self.lock = threading.Lock()
        self.cell: int | None = None
        self.on_show = on_show
        self.on_busy: Callable[[], None] | None = None
        """Called when a call is made while none was live (a shown panel refreshes again)."""
        self.workflow_of: Callable[[], Any] = lambda: None
        """Tells, in the thread of a call first seen by its task, the session id of the
        workflow run it belongs to, if any (see `workflow_started`)."""
        self.ended_counts = dict.fromkeys(ENDED, 0)
        self.live: dict[int, Call] = {}
        """Calls that have not ended, by id, in the order they were made."""
        self.recent: deque[Call] = deque(maxlen=recent)
        self._by_task: dict[Any, Call] = {}
        """Live calls that started, by daglite's task id."""
        self._workflows: dict[Any, Group] = {}
        """Workflow runs under way, by daglite's session id."""
        self._open: list[tuple[Group, bool]] = []
        """Top-level groups that calls may still join, each with whether the main thread made
        it (those close when the cell ends)."""
        self._ids = itertools.count(1).__next__
        self._fan_out = _FanOut()
        self.closed: str | None = None
        """Why the tracker stopped taking calls (the session ended), once it did."""

    # region Reading

    @property
    def counts(self) -> dict[str, int]:
        """Every call of the session, by state."""
        return _counts(list(self.live.values()), self.ended_counts)

    @property
    def busy(self) -> bool:
        """Whether some call has not ended."""
        return bool(self.live)

    def latest(self, count: int) -> list[Call]:
        """The *count* most recent calls, live ones first (newest first), then ended ones."""
        with self.lock:
            live = list(itertools.islice(reversed(self.live.values()), count))
            ended = list(itertools.islice(reversed(self.recent), count - len(live)))
        return live + ended

    def live_futures(self) -> list[Future[Any]]:
        """The backend Futures of the calls that have not ended."""
        with self.lock:
            return [call.future for call in self.live.values() if call.future is not None]

    def call(self, call_id: int) -> Call | None:
        """The live call *call_id*, if it has not ended."""
        return self.live.get(call_id)

    # region Submitted calls

    def submitted(
        self,
        name: str,
        backend: str,
        parent: Call | None,
        map_index: int | None = None,
        func: Any = None,
        group: Group | None = None,
        text: str | None = None,
        direct: bool = False,
    ) -> Call:
        """A new pending call of *func*, about to be submitted to *backend* (see `Call`).

        Args:
            name: The task's name.
            backend: The backend's name.
            parent: The call inside which it is submitted (a nested fan-out), if any.
            map_index: Its index in daglite's `map_tasks` fan-out: index 0 opens a group, the
                next indexes of the same *func* on the same thread join it.
            func: What the backend runs (identifies a `map_tasks` fan-out).
            group: The group of a `dnb.map` call.
            text: The call with its arguments, for a call submitted on its own.
            direct: Whether it is daglite-nb's own call (see `Call.direct`).
        """
        opened = False
        if group is None and map_index is not None:
            fan_func, fan_group = self._fan_out.current
            if map_index and fan_func is func:  # the next call of this thread's fan-out
                group = fan_group
            else:
                group, opened = self._map_group(name, backend, parent, map_index, func)
        call = Call(self._ids(), name, backend, self.cell, parent, group, text, map_index)
        call.func, call.tracker = func, self
        if direct:
            call.direct = True
        idle = not self.live
        self.live[call.id] = call
        if group is not None:
            group.live.add(call)
        if opened:
            self._show(group)  # type: ignore[arg-type]
        if idle and self.on_busy is not None:
            self.on_busy()
        return call

    def _map_group(
        self, name: str, backend: str, parent: Call | None, index: int, func: Any
    ) -> tuple[Group | None, bool]:
        # Item 0 opens a group: returns it, and whether it is a new top-level one. Any other
        # item that continues no fan-out of this thread (a hand-made map_index) has none.
        if index:
            return None, False
        previous = self._fan_out.current[1]
        if previous is not None and previous.owner is None:
            previous.closed = True  # this thread moved on to another fan-out
        group = self.group("map_tasks", name, backend, parent)
        self._fan_out.current = (func, group)
        return group, group.owner is None

    def group(self, kind: str, label: str, backend: str, parent: Call | None = None) -> Group:
        """A group for a fan-out; nested under *parent*'s (or its group's) groups of *label*.

        The fan-outs that the calls of one group make join one child group per task name, so
        a nested `map_tasks` in each of a hundred calls shows as one line, not a hundred.
        """
        if parent is not None:
            return self._child(parent.group or parent, label, backend)
        group = Group(kind, label, backend, self.cell)
        main = threading.current_thread() is threading.main_thread()
        with self.lock:
            self._open.append((group, main))
        return group

    def _show(self, unit: Call | Group) -> None:
        """Show a new top-level call or group of the kernel's main thread in its cell."""
        if self.on_show is not None and threading.current_thread() is threading.main_thread():
            self.on_show(unit)

    def _child(self, owner: Call | Group, label: str, backend: str) -> Group:
        with self.lock:
            children = owner.children
            if children is None:
                children = owner.children = {}
            group = children.get(label)
            if group is None:
                group = children[label] = Group("calls", label, backend, owner.cell, owner)
        return group

    def close(self, group: Group) -> None:
        """No more calls join the top-level *group* (`dnb.map` submitted all of its calls)."""
        group.closed = True

    def cell_ended(self) -> None:
        """The cell ended: no more calls join the groups its fan-outs made (main thread)."""
        with self.lock:
            for group, main in self._open:
                group.closed = group.closed or main
            self._open = [(group, main) for group, main in self._open if not group.closed]
            self._fan_out.current = (None, None)

    # region Events (daglite's hooks, or the backend's Futures)

    def started(self, link: Call | int | None, task: Any, worker: str) -> Call | None:
        """A task call started (daglite's `before_node_execute`, or `on_cache_hit`).

        Args:
            link: The submitted call (or its id) whose context the task runs in (see
                `current_call`); None for a task called in no submitted call.
            task: daglite's `TaskMetadata` of the call (or what a worker reported of it: `id`,
                `name`, `parent_id`, `map_index`, `backend`, `is_async`).
            worker: Where it runs: a thread's name, `pid N`, a Dask worker.

        Returns:
            The call, or None if the tracker no longer takes calls, or the submitted call had
            been cancelled meanwhile.
        """
        if isinstance(link, int):
            link = self.live.get(link, _GONE)
        if self.closed or link is _GONE or (link is not None and link.ended is not None):
            return None
        if link is not None and link.start(task, worker):  # the submitted call's own task
            return link
        call = self._first_seen(link, task, worker)
        group = call.group
        if group is not None and group.kind == "gather_tasks" and group.total == 1:  # its first
            self._show(group)
        elif task.is_async and call.parent is None and group is None:
            self._show(call)
        return call

    def _first_seen(self, link: Call | None, task: Any, worker: str) -> Call:
        """A running call that no submission announced: nested, direct, gathered, workflow."""
        parent = self._find(task.parent_id, link) if task.parent_id is not None else None
        index = task.map_index
        label = task.name.removesuffix(f"[{index}]") if index is not None else task.name
        workflow = self._workflows.get(self.workflow_of()) if self._workflows else None
        group: Group | None = None
        if parent is not None:
            group = self._child(parent.group or parent, label, task.backend)
        elif workflow is not None:
            group = self._child(workflow, label, task.backend)
        elif index is not None:
            group = self._gather_group(label, task.backend, index)
        call = Call(self._ids(), task.name, task.backend, self.cell, parent, group, index=index)
        call.task_id, call.worker = task.id, worker
        call.state, call.started = RUNNING, time.time()
        with self.lock:
            idle = not self.live
            self.live[call.id] = call
            if group is not None:
                group.live.add(call)
            self._by_task[task.id] = call
        if idle and self.on_busy is not None:
            self.on_busy()
        return call

    def _find(self, task_id: Any, link: Call | int | None) -> Call | None:
        """The live call of daglite's task *task_id*.

        That is the submitted call *link* (or the call of that id) if the task is its own;
        else a call first seen by its task (`_first_seen`), which the tracker keeps by task id.
        """
        if isinstance(link, int):
            link = self.live.get(link)
        if link is not None and (link.task_id is task_id or link.task_id == task_id):
            return link
        return self._by_task.get(task_id)

    def _gather_group(self, label: str, backend: str, index: int) -> Group:
        # gather_tasks starts items 0, 1, 2, ... of one task in order, on one thread.
        func, group = self._fan_out.current
        if index == 0 or group is None or group.label != label or func is not None:
            group = self.group("gather_tasks", label, backend)
            self._fan_out.current = (None, group)
        return group

    def retried(self, task_id: Any, link: Call | int | None, attempt: int) -> None:
        """The call of task *task_id* is retried (daglite's attempt number *attempt*, from 1)."""
        call = self._find(task_id, link)
        if call is None:
            return
        with self.lock:
            if call.attempts == 0 and call.group is not None:
                call.group.retried += 1
            call.attempts = attempt

    def cache_hit(self, task_id: Any, link: Call | int | None) -> None:
        """The result of the call of task *task_id* came from daglite's cache."""
        call = self._find(task_id, link)
        if call is not None and not call.cached:
            with self.lock:
                call.cached = True
                if call.group is not None:
                    call.group.cached += 1

    def iterated(self, task_id: Any, link: Call | int | None, index: int) -> None:
        """The generator task *task_id* yielded its item *index*."""
        call = self._find(task_id, link)
        if call is not None:
            added = index + 1 - call.items
            call.items = index + 1
            if call.group is not None and added > 0:
                with self.lock:
                    call.group.items += added

    def finished(self, task_id: Any, link: Call | int | None, result: Any = _UNKNOWN) -> None:
        """The call of task *task_id* returned *result* (`after_node_execute`, a cache hit).

        A call shown on its own (submitted alone, or made directly by a cell) keeps its result
        as text; workers do not send results (the backend's Future brings them, see `settle`).
        """
        call = self._find(task_id, link)
        if call is not None:
            shown = result is not _UNKNOWN and call.alone
            self.ended(call, FINISHED, outcome=result_text(result) if shown else None)

    def failed(self, task_id: Any, link: Call | int | None, failure: Failure) -> None:
        """The call of task *task_id* failed, after any retries (daglite's `on_node_error`)."""
        call = self._find(task_id, link)
        if call is not None:
            self.ended(call, FAILED, failure=failure)

    def raised(self, call: Call, error: BaseException) -> None:
        """*call* ended with *error*, which no hook saw: cancelled if it was the interrupt.

        Else it failed. The kernel's interrupt reaches its main thread only: elsewhere a
        `KeyboardInterrupt` is what the task raised.
        """
        main = threading.current_thread() is threading.main_thread()
        if isinstance(error, KeyboardInterrupt) and main:
            self.ended(call, CANCELLED, reason="interrupted")
        else:
            self.ended(call, FAILED, failure=Failure.of(error))

    def ended(
        self,
        call: Call,
        state: str,
        outcome: str | None = None,
        failure: Failure | None = None,
        reason: str | None = None,
    ) -> bool:
        """Record that *call* ended in *state*; return False if it had ended already.

        Whoever takes the call out of the live ones ends it: that step comes first, so two
        ends never both count, and an interrupt in the middle can cost a count, never leave
        a group that waits for a call forever. The call keeps text only.
        """
        with self.lock:
            if self.live.pop(call.id, None) is None:
                return False
            group = call.group
            if group is not None:
                group.live.discard(call)
            call.state, call.ended = state, time.time()
            if call.func is None and call.task_id is not None:  # first seen by its task
                self._by_task.pop(call.task_id, None)
            call.func = call.tracker = call.future = call.context = None
            if outcome is not None:
                call.outcome = outcome
            if failure is not None:
                call.failure = failure
            if reason is not None:
                call.reason = reason
            self.ended_counts[state] += 1
            self.recent.append(call)
            if group is not None:
                group.ended_counts[state] += 1
                group.last_end = call.ended
                if failure is not None:
                    _keep_failure(group.failures, call, failure)
                if reason is not None and group.reason is None:
                    group.reason = reason
        return True

    def settle(self, call: Call, future: Future[Any]) -> None:
        """End *call* from its backend's finished *future*, unless daglite's hooks did already.

        Hooks tell how a task ended; the Future also tells what no hook sees: a worker that
        died, an argument that could not be sent, a cancellation.
        """
        live_future, call.live_future = call.live_future, None  # it goes with its result
        if future.cancelled():
            self.ended(call, CANCELLED, reason=call.reason)
            if live_future is not None:
                live_future.take_cancel()
            return
        error = future.exception()
        if error is None:
            result = future.result()
            outcome = result_text(result) if call.alone else None
            if not self.ended(call, FINISHED, outcome=outcome) and call.outcome is None:
                call.outcome = outcome  # a worker's report ended it first, without the result
            if live_future is not None:
                live_future.set_result(result)
        else:
            own = original_error(error)
            self.ended(call, FAILED, failure=Failure.of(own))
            if live_future is not None:
                live_future.set_exception(own)

    # region Workflows

    def workflow_started(self, session: Any, name: str) -> None:
        """A workflow run (a daglite session other than the notebook's) started."""
        group = self.group("workflow", name, "")
        with self.lock:
            self._workflows[session] = group
        self._show(group)

    def workflow_ended(self, session: Any) -> None:
        """The workflow run *session* ended."""
        with self.lock:
            group = self._workflows.pop(session, None)
        if group is not None:
            group.closed = True

    # region Cancelling

    def cancel(self, call: Call, reason: str | None = None) -> bool:
        """Cancel *call* if it has not started; return whether it is cancelled.

        A pending call that never got a backend Future (its submission was interrupted) is
        just ended.
        """
        future = call.future
        if call.state != PENDING:
            return call.state == CANCELLED
        call.reason = reason
        if future is not None and not _cancel_backend_future(future):
            return call.state == CANCELLED
        self.ended(call, CANCELLED, reason=reason)
        return True

    def cancel_pending(
        self, cell: int | None = None, backend: str | None = None, reason: str | None = None
    ) -> int:
        """Cancel pending calls (of *cell*, on *backend*, if given); return how many."""
        with self.lock:
            calls = [
                call
                for call in self.live.values()
                if call.state == PENDING
                and (cell is None or call.cell == cell)
                and (backend is None or call.backend == backend)
            ]
        return sum(self.cancel(call, reason) for call in reversed(calls))

    def shut(self, reason: str) -> None:
        """The session ended: every call that has not ended gets its final word, *reason*.

        Pending calls are cancelled; running ones (whose outcome the session no longer
        receives) end as cancelled too, with the reason. No call joins afterwards.
        """
        self.cancel_pending(reason=reason)
        with self.lock:
            self.closed = reason
            calls = list(self.live.values())
            workflows = list(self._workflows.values())
            groups = [group for group, _ in self._open] + workflows
            self._open = []
        for call in calls:
            live_future, call.live_future = call.live_future, None
            ended = self.ended(call, CANCELLED, reason=f"{reason} while it ran")
            if ended and live_future is not None:
                live_future.take_cancel()
        for group in groups:
            group.closed = True


_GONE = Call(0, "", "", None)
"""Stands for a submitted call that ended before its task reported a start."""


# region Futures


def original_error(error: BaseException) -> BaseException:
    """The user's exception behind daglite's `TaskError` wrapper."""
    from daglite.exceptions import TaskError

    if isinstance(error, TaskError) and error.__cause__ is not None:
        return error.__cause__
    return error


def _cancel_backend_future(future: Future[Any]) -> bool:
    """Cancel the backend's *future*; an adopted `LiveFuture` as the plain Future it was."""
    if isinstance(future, LiveFuture):  # its own cancel() comes here through `Tracker.cancel`
        return Future.cancel(future)
    return future.cancel()  # a backend's own cancel, e.g. the Dask backend's, which tells Dask


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


async def _result_awake(future: Future[R]) -> R:
    """Await *future*'s result, waking the event loop meanwhile (see `wait_awake`)."""
    await wait_awake([future])
    return future.result()


class LiveFuture(Future, Generic[R]):  # type: ignore[type-arg]
    """A `concurrent.futures.Future` that knows its task's state and shows it live.

    On the backends that run calls in the kernel's process (inline, thread) it *is* the
    backend's own Future, adopted (`adopt`): one Future per call, not two. Elsewhere it is made
    for its call and gets the outcome when the call ends (`Tracker.settle`). Either way
    `cancel()` cancels the backend's Future, and a failed task raises its own exception, not
    daglite's `TaskError`. In a notebook it displays as a live status widget.
    """

    call: Call
    tracker: Tracker

    def __init__(self, call: Call, tracker: Tracker) -> None:
        super().__init__()
        self.call = call
        self.tracker = tracker

    @classmethod
    def adopt(cls, future: Future[Any], call: Call, tracker: Tracker) -> LiveFuture[Any]:
        """Turn the backend's plain *future* for *call* into its `LiveFuture`.

        Only for calls that end (through daglite's hooks) before the backend resolves *future*,
        so its state is final by the time `result()` returns.
        """
        future.__class__ = cls
        adopted: LiveFuture[Any] = future  # type: ignore[assignment]
        adopted.call = call
        adopted.tracker = tracker
        return adopted

    @property
    def state(self) -> str:
        """pending, running, finished, failed or cancelled."""
        return self.call.state

    @property
    def task_name(self) -> str:
        """Name of the task (daglite's resolved name, once it started)."""
        return self.call.name

    @property
    def backend(self) -> str:
        """Name of the backend that runs it."""
        return self.call.backend

    @property
    def worker(self) -> str | None:
        """Thread name, process id or Dask worker that ran it, once it started."""
        return self.call.worker

    @property
    def elapsed(self) -> float:
        """Seconds it has been running (or waiting, before it started)."""
        return self.call.elapsed

    def cancel(self) -> bool:
        """Cancel the task if it has not started; return whether it was cancelled."""
        return self.cancelled() or self.tracker.cancel(self.call)

    def take_cancel(self) -> None:
        """Become cancelled, as the call was (from `Tracker.settle` or `Tracker.close`)."""
        Future.cancel(self)

    def __await__(self) -> Any:
        return _result_awake(self).__await__()

    def __repr__(self) -> str:
        return f"<LiveFuture {self.call.label} on {self.call.backend}: {self.call.state}>"

    def _ipython_display_(self) -> None:
        from daglite_nb.display import show

        show(self.call, self.tracker)


class LiveFutureGroup(Sequence[LiveFuture[R]]):
    """The futures of one `dnb.map` fan-out, shown as one progress bar."""

    def __init__(self, group: Group, futures: list[LiveFuture[R]]) -> None:
        self.group = group
        self._futures = futures

    def __getitem__(self, index: Any) -> Any:
        return self._futures[index]

    def __len__(self) -> int:
        return len(self._futures)

    def results(self, timeout: float | None = None) -> list[R]:
        """Wait for every future and return their results in order (the first error raises)."""
        return [future.result(timeout) for future in self._futures]

    def __repr__(self) -> str:
        return f"<LiveFutureGroup {self.group.label} × {len(self)} on {self.group.backend}>"

    def _ipython_display_(self) -> None:
        from daglite_nb.display import show

        show(self.group)


__all__ = [
    "CANCELLED",
    "FAILED",
    "FINISHED",
    "PENDING",
    "RUNNING",
    "Call",
    "CancelledError",
    "Group",
    "LiveFuture",
    "LiveFutureGroup",
    "Tracker",
]
