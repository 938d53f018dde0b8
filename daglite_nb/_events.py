"""daglite's hooks, heard in the kernel and on workers: how the tracker learns what runs.

`NotebookEvents` is one daglite plugin, registered once per kernel among daglite's global
plugins, so every daglite session includes it: the notebook's, workflow runs, and the workers'
(daglite ships serializable plugins to its process workers, and daglite-nb's pool and Dask
workers get them the same way, as a `WorkerEvents`). In the kernel its hooks change the open
session's tracker directly; on a worker they report through the worker's daglite event
reporter, and the kernel's plugin hands the reports to the tracker.

A session backend runs each submitted call as its `Call` (see `daglite_nb.model.Call`), which
tells the hooks which submitted call a task is (the `current_call` context variable). A call sent
to another process travels as a `RemoteCarrier`: its task and its id.

What a submitted call prints or logs goes to it (see `daglite_nb._output`): in the kernel to the
tracker directly; on a worker as reports, sent before the report of the call's end. Records of
daglite's task logger travel as daglite's own log events, marked with the call's id.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

from daglite.logging.core import LOGGER_EVENT
from daglite.plugins.hooks.markers import hook_impl

from daglite_nb import _daglite
from daglite_nb import _output
from daglite_nb._text import Failure
from daglite_nb.model import Call
from daglite_nb.model import current_call
from daglite_nb.model import this_thread
from daglite_nb.tracking import Tracker

EVENT = "daglite_nb.call"
"""The event type of the reports that workers send to the kernel."""


# region The plugin


class NotebookEvents:
    """The kernel's daglite plugin, which feeds daglite-nb's tracker (see `events()`).

    Its hooks change the open session's tracker directly. The calls that a session backend runs
    as their `Call` start and end there: the hooks only tell such a call which task it is (and
    its retries, cache hits and items); every other task call is made a call by its hooks.
    Workers get a `WorkerEvents` instead (through daglite's plugin serialization), and the
    kernel's instance hands their reports to the tracker.

    Attributes:
        tracker: The open session's tracker (None while no session is open).
        session: The notebook's daglite session: calls of other sessions belong to workflow
            runs.
    """

    def __init__(self) -> None:
        self.kernel_pid = os.getpid()
        self.tracker: Tracker | None = None
        self.session: Any = None
        _output.install(_write)

    def forget_kernel(self) -> None:
        """In a process forked from the kernel: see nothing (its workers have their own)."""
        self.tracker = self.session = None

    # region Serializable plugin: how daglite ships it to workers

    def to_config(self) -> dict[str, Any]:
        """What a worker needs to make its own instance (daglite's `SerializablePlugin`)."""
        return {"kernel_pid": self.kernel_pid}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """The instance of this process: the kernel's own, or a worker's that reports."""
        if config.get("kernel_pid") == os.getpid():
            return events()
        return WorkerEvents(config.get("kernel_pid"))

    # region Event handler plugin: the workers' reports

    def register_event_handlers(self, registry: Any) -> None:
        """Hand the workers' reports to the tracker (daglite calls this for every session)."""
        registry.register(EVENT, self._on_report)
        registry.register(LOGGER_EVENT, self._on_log)

    def _on_report(self, event_type: Any, report: tuple[Any, ...]) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        kind, task_id, link, *rest = report
        if kind == "started":
            name, parent, index, backend, is_async, worker, cached, at = rest
            task = _Reported(task_id, name, parent, index, backend, is_async)
            tracker.started(link, task, worker, at)
            if cached:
                tracker.cache_hit(task_id, link)
                tracker.finished(task_id, link, at=at)
        elif kind == "finished":
            tracker.finished(task_id, link, at=rest[0])
        elif kind == "failed":
            tracker.failed(task_id, link, rest[0], at=rest[1])
        elif kind == "retried":
            tracker.retried(task_id, link, rest[0])
        elif kind == "iterated":
            tracker.iterated(task_id, link, rest[0])
        elif kind == _output.OUTPUT_EVENT:
            tracker.reported_output(link, *rest)

    def _on_log(self, event_type: Any, event: dict[str, Any]) -> None:
        """A record of daglite's task logger, from a worker: to its call, if it is enabled.

        As for a record that a task logs in the kernel: its logger's level here decides
        (`WARNING` unless the notebook configured logging), and it reads as the first handler
        of the root logger formats it (as Python's last-resort handler does, without one).
        """
        tracker = self.tracker
        extra = event.get("extra") or {}
        call_id = extra.get("daglite_nb_call")
        level = logging.getLevelName(event.get("level", "INFO"))
        logger = logging.getLogger(event.get("name"))
        if tracker is None or call_id is None or not logger.isEnabledFor(level):
            return
        message = event.get("message", "")
        if event.get("exc_info"):
            message = f"{message}\n{event['exc_info']}"
        fields = {"name": logger.name, "levelname": event.get("level"), "levelno": level}
        record = logging.makeLogRecord({**extra, **fields, "msg": message, "args": ()})
        handlers = logging.getLogger().handlers
        handler = handlers[0] if handlers else logging.lastResort
        formatter = (handler.formatter if handler is not None else None) or logging.Formatter()
        tracker.reported_output(call_id, formatter.format(record) + "\n", 0)

    # region daglite's worker-side hooks, in the kernel

    @hook_impl
    def before_node_execute(self, metadata: Any) -> None:
        """A task call starts."""
        tracker = self.tracker
        if tracker is not None:
            link = current_call.get()
            worker = this_thread.name
            if link is None or not link.start(metadata, worker):  # type: ignore[union-attr]
                tracker.started(link, metadata, worker)

    @hook_impl
    def on_cache_hit(self, metadata: Any) -> None:
        """A task call returns its result from daglite's cache, without running."""
        tracker = self.tracker
        if tracker is not None:
            link = current_call.get()
            worker = this_thread.name
            if link is not None and link.start(metadata, worker):  # type: ignore[union-attr]
                tracker.cache_hit(metadata.id, link)  # the call ends itself, with the result
            elif tracker.started(link, metadata, worker) is not None:
                tracker.cache_hit(metadata.id, link)
                tracker.finished(metadata.id, link)

    @hook_impl
    def before_node_retry(self, metadata: Any, attempt: int) -> None:
        """A failed task call runs again (daglite's retries)."""
        if self.tracker is not None:
            self.tracker.retried(metadata.id, current_call.get(), attempt)

    @hook_impl
    def node_iteration(self, metadata: Any, index: int) -> None:
        """A generator task yielded its item *index*."""
        if self.tracker is not None:
            self.tracker.iterated(metadata.id, current_call.get(), index)

    @hook_impl
    def after_node_execute(self, metadata: Any, result: Any) -> None:
        """A task call returned (a submitted call ends itself, with its result)."""
        tracker = self.tracker
        if tracker is not None:
            link = current_call.get()
            if link is None or link.task_id is not metadata.id:  # type: ignore[union-attr]
                tracker.finished(metadata.id, link, result)

    @hook_impl
    def on_node_error(self, metadata: Any, error: Any) -> None:
        """A task call failed, after any retries (a submitted call ends itself, with why)."""
        tracker = self.tracker
        if tracker is not None:
            link = current_call.get()
            if link is None or link.task_id is not metadata.id:  # type: ignore[union-attr]
                tracker.failed(metadata.id, link, Failure.of(error))

    def workflow_session(self) -> Any:
        """The id of the daglite session of a workflow run this thread runs in, if any."""
        session = _daglite.active_session()
        return None if session is self.session else getattr(session, "session_id", None)

    # region daglite's session hooks: workflow runs

    @hook_impl
    def before_session_start(self, session_id: Any) -> None:
        """A daglite session starts: a workflow run, unless it is the notebook's own."""
        tracker = self.tracker
        if tracker is not None and _daglite.active_session() is not self.session:
            tracker.workflow_started(session_id, _daglite.running_workflow() or "daglite session")

    @hook_impl
    def after_session_end(self, session_id: Any) -> None:
        """A daglite session ends."""
        tracker = self.tracker
        if tracker is not None:
            tracker.workflow_ended(session_id)


class WorkerEvents:
    """The daglite plugin of a worker: its hooks report to the kernel (see `NotebookEvents`)."""

    def __init__(self, kernel_pid: int | None) -> None:
        self.kernel_pid = kernel_pid
        _output.install(_write)
        _output.add_call_to_records(before=worker_output.send)

    def to_config(self) -> dict[str, Any]:  # noqa: D102
        return {"kernel_pid": self.kernel_pid}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WorkerEvents:  # noqa: D102
        return cls(config.get("kernel_pid"))

    @hook_impl
    def before_node_execute(self, metadata: Any, reporter: Any) -> None:
        """A task call starts."""
        self._report_start(metadata, reporter, cached=False)

    @hook_impl
    def on_cache_hit(self, metadata: Any, reporter: Any) -> None:
        """A task call returns its result from daglite's cache, without running."""
        self._report_start(metadata, reporter, cached=True)

    @hook_impl
    def before_node_retry(self, metadata: Any, attempt: int, reporter: Any) -> None:
        """A failed task call runs again (daglite's retries)."""
        _report(reporter, ("retried", metadata.id, _link_id(), attempt))

    @hook_impl
    def node_iteration(self, metadata: Any, index: int, reporter: Any) -> None:
        """A generator task yielded its item *index*."""
        _report(reporter, ("iterated", metadata.id, _link_id(), index))

    @hook_impl
    def after_node_execute(self, metadata: Any, reporter: Any) -> None:
        """A task call returned (what its call wrote goes first)."""
        link = _link_id()
        worker_output.send(link)
        _report(reporter, ("finished", metadata.id, link, time.time()))

    @hook_impl
    def on_node_error(self, metadata: Any, error: Any, reporter: Any) -> None:
        """A task call failed, after any retries (what its call wrote goes first)."""
        link = _link_id()
        worker_output.send(link)
        _report(reporter, ("failed", metadata.id, link, Failure.of(error), time.time()))

    def _report_start(self, metadata: Any, reporter: Any, cached: bool) -> None:
        task = (metadata.name, metadata.parent_id, metadata.map_index, metadata.backend)
        report = ("started", metadata.id, _link_id(), *task, metadata.is_async)
        _report(reporter, (*report, _worker_name(), cached, time.time()))


def _worker_name() -> str:
    """Where this worker runs: a Dask worker's name, or its process id."""
    global _not_dask
    pid = os.getpid()
    if _not_dask != pid:
        distributed = sys.modules.get("distributed")
        try:
            if distributed is not None:
                return str(distributed.get_worker().name)
        except ValueError:  # not a Dask worker, and this process never will be
            _not_dask = pid
    return f"pid {pid}"


_not_dask = -1
"""The process id of this process once it found it is no Dask worker (not of its forks)."""


def _report(reporter: Any, report: tuple[Any, ...]) -> None:
    if reporter is not None:
        reporter.report(EVENT, report)


worker_output = _output.WorkerOutput(EVENT)
"""What the calls of this worker process wrote and did not send yet."""


def _write(link: Call | int, text: str) -> bool:
    """Where a submitted call's write goes (see `daglite_nb._output.TaskStream`)."""
    if isinstance(link, int):
        return worker_output.write(link, text)
    tracker = link.tracker
    return tracker is not None and tracker.wrote(link, text)


_events: NotebookEvents | None = None


def reports_to(report: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """Where a pool hands its workers' events: daglite-nb's own reports straight to the tracker.

    Every other event (daglite's task logger, other plugins) goes to *report*, daglite's event
    reporter of the session.
    """
    own = events()._on_report

    def hand(event_type: Any, event_data: Any) -> None:
        (own if event_type == EVENT else report)(event_type, event_data)

    return hand


def events() -> NotebookEvents:
    """The plugin of this process, registered with daglite's global plugins on first use."""
    global _events
    if _events is None:
        from daglite.plugins.manager import register_plugins

        _events = NotebookEvents()
        register_plugins(_events)
    return _events


# region Calls in other processes


class RemoteCarrier:
    """A submitted `Call` sent to run in another process: its task, and its id."""

    __slots__ = ("func", "call_id")

    def __init__(self, func: Callable[..., Any], call_id: int) -> None:
        self.func = func
        self.call_id = call_id

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        return run_as(self.call_id, self.func, *args, **kwargs)


def unwrap(func: Callable[..., Any]) -> tuple[Callable[..., Any], int | None]:
    """Split what a backend was handed into the task and the id of its call, if tracked.

    daglite-nb's own backends that run calls in other processes send these two, not the call
    (their workers mark `current_call` themselves, see `run_as`).
    """
    if isinstance(func, Call):
        return func.func, func.id  # type: ignore[return-value]
    return func, None


def _link_id() -> int | None:
    """The id of the submitted call this worker's task runs in, as the kernel knows it."""
    link = current_call.get()
    return link.id if isinstance(link, Call) else link


class _Reported(NamedTuple):
    """What a worker reports of a task call that started (as `TaskMetadata` tells it)."""

    id: Any
    name: str
    parent_id: Any
    map_index: int | None
    backend: str
    is_async: bool


def run_as(call_id: int | None, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `func(*args, **kwargs)` on a worker as the call *call_id* (see `current_call`).

    What the call wrote after its task's hooks (or without them) is sent as it returns.
    """
    token = current_call.set(call_id)
    try:
        return func(*args, **kwargs)
    finally:
        current_call.reset(token)
        if call_id is not None:
            worker_output.send(call_id)
