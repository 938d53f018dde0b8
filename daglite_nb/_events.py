"""daglite's hooks, heard in the kernel and on workers: how the tracker learns what runs.

`NotebookEvents` is one daglite plugin, registered once per kernel among daglite's global
plugins, so every daglite session includes it: the notebook's, workflow runs, and the workers'
(daglite ships serializable plugins to its process workers, and daglite-nb's pool and Dask
workers get them the same way). In the kernel its hooks change the open session's tracker
directly; on a worker they report through the worker's daglite event reporter, and the kernel
side of the plugin hands the reports to the tracker.

Every call a session backend runs is wrapped in a `Carrier`: it tells the hooks which submitted
call a task is (the `current_call` context variable), and for a backend that runs calls where
daglite's context does not reach (a plain executor), it brings the session's context along.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from daglite.plugins.hooks.markers import hook_impl

from daglite_nb import _daglite
from daglite_nb._text import Failure
from daglite_nb.tracking import CANCELLED
from daglite_nb.tracking import FAILED
from daglite_nb.tracking import FINISHED
from daglite_nb.tracking import Call
from daglite_nb.tracking import Tracker
from daglite_nb.tracking import original_error
from daglite_nb.tracking import thread_name

current_call: contextvars.ContextVar[Call | int | None] = contextvars.ContextVar(
    "daglite_nb_current_call", default=None
)
"""The submitted call whose task runs in this context: the `Call` in the kernel, its id on a
worker. Tasks nested in it see it too; daglite's parent ids tell them apart."""

EVENT = "daglite_nb.call"
"""The event type of the reports that workers send to the kernel."""


# region The plugin


class NotebookEvents:
    """The daglite plugin that feeds daglite-nb's tracker (one per process; see `events()`).

    Attributes:
        tracker: In the kernel, the open session's tracker (None while no session is open).
        session: In the kernel, the notebook's daglite session: calls of other sessions belong
            to workflow runs.
    """

    def __init__(self, kernel_pid: int | None = None) -> None:
        self.kernel_pid = kernel_pid or os.getpid()
        self.local = self.kernel_pid == os.getpid()
        self.tracker: Tracker | None = None
        self.session: Any = None

    def forget_kernel(self) -> None:
        """In a process forked from the kernel: report like any worker's instance."""
        self.local = False
        self.tracker = self.session = None

    # region Serializable plugin: how daglite ships it to workers

    def to_config(self) -> dict[str, Any]:
        """What a worker needs to make its own instance (daglite's `SerializablePlugin`)."""
        return {"kernel_pid": self.kernel_pid}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NotebookEvents:
        """The instance of this process: the kernel's own, or a worker's that reports."""
        if config.get("kernel_pid") == os.getpid():
            return events()
        return cls(config.get("kernel_pid"))

    # region Event handler plugin: the kernel's side of the workers' reports

    def register_event_handlers(self, registry: Any) -> None:
        """Hand the workers' reports to the tracker (daglite calls this for every session)."""
        registry.register(EVENT, self._on_report)

    def _on_report(self, event_type: Any, report: tuple[Any, ...]) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        kind, task_id, *rest = report
        if kind == "started":
            link, name, parent, index, backend, worker, cached = rest
            tracker.started(link, task_id, name, worker, parent, index, backend)
            if cached:
                tracker.cache_hit(task_id)
                tracker.finished(task_id)
        elif kind == "finished":
            tracker.finished(task_id)
        elif kind == "failed":
            tracker.failed(task_id, Failure(*rest[0]))
        elif kind == "retried":
            tracker.retried(task_id, rest[0])
        elif kind == "iterated":
            tracker.iterated(task_id, rest[0])

    # region daglite's worker-side hooks

    @hook_impl
    def before_node_execute(self, metadata: Any, reporter: Any) -> None:
        """A task call starts."""
        self._started(metadata, reporter, cached=False)

    @hook_impl
    def on_cache_hit(self, metadata: Any, key: str, value: Any, reporter: Any) -> None:
        """A task call returns its result from daglite's cache, without running."""
        self._started(metadata, reporter, cached=True)

    @hook_impl
    def before_node_retry(self, metadata: Any, error: Any, attempt: int, reporter: Any) -> None:
        """A failed task call runs again (daglite's retries)."""
        tracker = self.tracker
        if self.local and tracker is not None:
            tracker.retried(metadata.id, attempt)
        elif not self.local:
            _report(reporter, ("retried", metadata.id, attempt))

    @hook_impl
    def node_iteration(self, metadata: Any, index: int, reporter: Any) -> None:
        """A generator task yielded its item *index*."""
        tracker = self.tracker
        if self.local and tracker is not None:
            tracker.iterated(metadata.id, index)
        elif not self.local:
            _report(reporter, ("iterated", metadata.id, index))

    @hook_impl
    def after_node_execute(
        self, metadata: Any, result: Any, duration: float, reporter: Any
    ) -> None:
        """A task call returned."""
        tracker = self.tracker
        if self.local and tracker is not None:
            tracker.finished(metadata.id, result)
        elif not self.local:
            _report(reporter, ("finished", metadata.id))

    @hook_impl
    def on_node_error(self, metadata: Any, error: Any, duration: float, reporter: Any) -> None:
        """A task call failed, after any retries."""
        tracker = self.tracker
        if self.local and tracker is not None:
            tracker.failed(metadata.id, Failure.of(error))
        elif not self.local:
            _report(reporter, ("failed", metadata.id, tuple(Failure.of(error))))

    def _started(self, metadata: Any, reporter: Any, cached: bool) -> None:
        link = current_call.get()
        if not self.local:
            link = link.id if isinstance(link, Call) else link
            report = (metadata.id, link, metadata.name, metadata.parent_id, metadata.map_index)
            _report(reporter, ("started", *report, metadata.backend, _worker_name(), cached))
            return
        tracker = self.tracker
        if tracker is None:
            return
        session = _daglite.active_session()
        call = tracker.started(
            link,
            metadata.id,
            metadata.name,
            thread_name(),
            metadata.parent_id,
            metadata.map_index,
            metadata.backend,
            session=None if session is self.session else getattr(session, "session_id", None),
            awaited=metadata.is_async,
        )
        if cached and call is not None:
            tracker.cache_hit(metadata.id)
            tracker.finished(metadata.id)

    # region daglite's session hooks: workflow runs

    @hook_impl
    def before_session_start(self, session_id: Any) -> None:
        """A daglite session starts: a workflow run, unless it is the notebook's own."""
        tracker = self.tracker
        if tracker is not None and _daglite.active_session() is not self.session:
            tracker.workflow_started(session_id, _daglite.running_workflow() or "daglite session")

    @hook_impl
    def after_session_end(self, session_id: Any, duration: float) -> None:
        """A daglite session ends."""
        tracker = self.tracker
        if tracker is not None:
            tracker.workflow_ended(session_id)


def _worker_name() -> str:
    """Where this worker runs: a Dask worker's name, or its process id."""
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            return str(distributed.get_worker().name)
        except ValueError:  # not a Dask worker
            pass
    return f"pid {os.getpid()}"


def _report(reporter: Any, report: tuple[Any, ...]) -> None:
    if reporter is not None:
        reporter.report(EVENT, report)


_events: NotebookEvents | None = None


def events() -> NotebookEvents:
    """The plugin of this process, registered with daglite's global plugins on first use."""
    global _events
    if _events is None:
        from daglite.plugins.manager import register_plugins

        _events = NotebookEvents()
        register_plugins(_events)
    return _events


# region Carriers


class Carrier:
    """What a session backend runs for one call: the task, as the tracker's *call*.

    It marks the context of the task as the call's (`current_call`), so daglite's hooks know
    which submitted call started. It records the end itself when no hook did (a task that
    raised a `BaseException`, which daglite lets through). A call of daglite-nb's own
    (*direct*) raises the task's own exception, not daglite's `TaskError`. With a *context*, a
    call that runs where no daglite session is active (the thread of a plain executor) runs in
    a copy of it, so its task finds the session. Pickled, it becomes a `RemoteCarrier`.
    """

    __slots__ = ("func", "call", "tracker", "direct", "context")

    def __init__(
        self,
        func: Callable[..., Any],
        call: Call,
        tracker: Tracker,
        direct: bool,
        context: contextvars.Context | None = None,
    ) -> None:
        self.func = func
        self.call = call
        self.tracker = tracker
        self.direct = direct
        self.context = context

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        if self.context is not None and _daglite.active_session() is None:
            return self.context.copy().run(self._run, args, kwargs)
        return self._run(args, kwargs)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self.call
        token = current_call.set(call)
        try:
            result = self.func(*args, **kwargs)
        except BaseException as error:
            own = original_error(error)
            if call.ended is None:
                end_with(self.tracker, call, own)
            if not self.direct:
                raise
            failure = own
        else:
            if call.ended is None:
                self.tracker.ended(call, FINISHED)
            return result
        finally:
            current_call.reset(token)
        raise failure  # outside the `except`: the task's exception keeps its own context

    def __reduce__(self) -> Any:
        return (RemoteCarrier, (self.func, self.call.id))


def end_with(tracker: Tracker, call: Call, error: BaseException) -> None:
    """End *call* with *error*: cancelled if it was the kernel's interrupt, else failed.

    The interrupt reaches the kernel's main thread only: elsewhere a `KeyboardInterrupt` is
    what the task raised.
    """
    if (
        isinstance(error, KeyboardInterrupt)
        and threading.current_thread() is threading.main_thread()
    ):
        tracker.ended(call, CANCELLED, reason="interrupted")
    else:
        tracker.ended(call, FAILED, failure=Failure.of(error))


class RemoteCarrier:
    """A `Carrier` sent to run in another process: the task, and the id of its call."""

    __slots__ = ("func", "call_id")

    def __init__(self, func: Callable[..., Any], call_id: int) -> None:
        self.func = func
        self.call_id = call_id

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        token = current_call.set(self.call_id)
        try:
            return self.func(*args, **kwargs)
        finally:
            current_call.reset(token)


def unwrap(func: Callable[..., Any]) -> tuple[Callable[..., Any], int | None]:
    """Split what a backend was handed into the task and the id of its call, if tracked.

    daglite-nb's own backends that run calls in other processes send these two, not the
    carrier (their workers mark `current_call` themselves).
    """
    if isinstance(func, Carrier):
        return func.func, func.call.id
    return func, None


def run_as(call_id: int | None, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `func(*args, **kwargs)` on a worker as the call *call_id* (see `current_call`)."""
    token = current_call.set(call_id)
    try:
        return func(*args, **kwargs)
    finally:
        current_call.reset(token)
