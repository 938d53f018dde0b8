"""The model of every task call daglite runs in the kernel's session: calls and their groups.

A `Call` is one task call. Calls submitted through a session backend exist from their submission
(pending); every other call (a task called directly, awaited, gathered, run by a workflow, nested
in another task, on any backend) is first seen when daglite's hooks report that it started (see
`daglite_nb._events`). A `Group` counts the calls of one fan-out (`map_tasks`, `dnb.map`,
`gather_tasks`) or of a workflow run; the fan-outs that the calls of a group (or a single call)
make inside them nest under it as child groups, one per task name.

Only the session's `daglite_nb.tracking.Tracker` changes calls and groups; widgets and the
panel read them at their own pace. A call that ended keeps text, never objects: no arguments,
results, exceptions or frames. No IPython here.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING
from typing import Any

from daglite_nb._daglite import active_session as _active_session
from daglite_nb._text import Failure
from daglite_nb._text import result_text

if TYPE_CHECKING:
    from daglite_nb._output import Output
    from daglite_nb.futures import LiveFuture
    from daglite_nb.tracking import Tracker

PENDING = "pending"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
CANCELLED = "cancelled"
STATES = (PENDING, RUNNING, FINISHED, FAILED, CANCELLED)
ENDED = (FINISHED, FAILED, CANCELLED)

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
        output: What the call printed and logged (bounded, see `daglite_nb._output`), if any.
        future: While the call has not ended: the backend's Future, which cancels it.
        live_future: A call submitted with `dnb.submit` to a backend elsewhere: the caller's
            `LiveFuture`, which gets the outcome when the call ends.
        children: The groups of the fan-outs this call made, by task name.
        alone: Whether it is shown on its own (with its result), not counted in a group: it has
            neither a group nor a parent.
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
        "output",
        "future",
        "live_future",
        "children",
        "alone",
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
        func: Callable[..., Any] | None = None,
        tracker: Tracker | None = None,
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
        self.output: Output | None = None
        self.future: Future[Any] | None = None
        self.live_future: LiveFuture[Any] | None = None
        self.children: dict[str, Group] | None = None
        self.alone = group is None and parent is None
        self.func = func
        self.tracker = tracker
        self.direct = False
        self.context: contextvars.Context | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task as this call: what a session backend runs for a submitted call.

        It marks the task's context as this call's (`current_call`), so daglite's hooks know
        which submitted call started. It records the end itself when no hook did (a task that
        raised a `BaseException`, which daglite lets through). Run where no daglite session is
        active (the thread of a plain executor), it runs in its submission's `context`. IPython
        leaves its frame out of the tracebacks it shows (`__tracebackhide__`).
        """
        __tracebackhide__ = True
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

    def start(self, task: Any, worker: str, at: float | None = None) -> bool:
        """Start, at *at* (or now), as the submitted call whose own task *task* is.

        *task* is daglite's `TaskMetadata`, or what a worker reported of it.

        Returns False if *task* is not its own (a task nested in it), or the call ended.
        No lock: only the thread that runs a call starts it, and a call that runs can no
        longer be cancelled.
        """
        if self.task_id is not None or self.ended is not None:
            return False
        self.task_id, self.name, self.worker = task.id, task.name, worker
        self.started, self.state = at or time.time(), RUNNING
        return True

    def adopt(self, future: Future[Any]) -> None:
        """Be run by *future*, and end as it does.

        A backend that says so before the call can run makes sure that an interrupt between
        taking the call and returning its Future cannot lose it.
        """
        tracker = self.tracker
        if tracker is None:  # it ended (was cancelled) before the backend took it
            future.cancel()
        else:
            tracker.adopt(self, future)

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
        return state_counts(list(self.live), self.ended_counts)

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
        if not self.total:
            return FINISHED if self.ended else PENDING  # a fan-out of nothing finishes at once
        if not self.complete:
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


def state_counts(live: list[Call], ended: dict[str, int]) -> dict[str, int]:
    """Calls by state: the live ones as they are now, and the counts of the ended ones."""
    running = sum(call.state is RUNNING for call in live)
    return {PENDING: len(live) - running, RUNNING: running, **ended}


def _any_running(live: list[Call]) -> bool:
    return any(call.state is RUNNING for call in live)


def original_error(error: BaseException) -> BaseException:
    """The user's exception behind daglite's `TaskError` wrapper."""
    from daglite.exceptions import TaskError

    if isinstance(error, TaskError) and error.__cause__ is not None:
        return error.__cause__
    return error
