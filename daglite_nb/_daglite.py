"""Every touch of daglite internals, in one place.

daglite 0.9 is a pre-release; when its private names move, this module is the only one to mend.
"""

from __future__ import annotations

import contextvars
import dataclasses
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from daglite._context import BackendContext
from daglite._context import SessionContext
from daglite._context import SubmitContext
from daglite._resolvers import resolve_event_reporter
from daglite.backends.base import Backend
from daglite.backends.local import ProcessBackend
from daglite.backends.local import ThreadBackend
from daglite.backends.manager import BackendManager
from daglite.composers import _AsyncGeneratorWrapper
from daglite.composers import _AsyncWrapper
from daglite.composers import _make_backend_callable
from daglite.datasets.reporters import DirectDatasetReporter
from daglite.datasets.reporters import ProcessDatasetReporter
from daglite.plugins.reporters import EventReporter
from daglite.settings import DagliteSettings
from daglite.tasks import _BaseTask
from daglite.workflows import BaseWorkflow

__all__ = ["BackendContext", "SubmitContext"]  # daglite's, re-exported here


def builtin_backend_types() -> dict[str, type[Backend]]:
    """Return daglite's own name -> backend class table (aliases included)."""
    return dict(BackendManager(session=None, settings=DagliteSettings())._backend_types)


def session_context(ctx: contextvars.Context) -> SessionContext | None:
    """Return the daglite `SessionContext` active in *ctx*."""
    return ctx.run(SessionContext.__var__.get)


def active_manager(ctx: contextvars.Context) -> BackendManager:
    """Return the session-scoped `BackendManager` active in *ctx* (where a session is open).

    Raises:
        RuntimeError: If no daglite session is open in *ctx*.
    """
    manager = ctx.run(BackendManager._active.get)
    if manager is None:
        raise RuntimeError("No daglite session is open in this context.")
    return manager


def apply_session(session: SessionContext | None, manager: BackendManager | None) -> None:
    """Make *session* and *manager* the active daglite session in the current context."""
    SessionContext.__var__.set(session)
    BackendManager._active.set(manager)


def route_gets(
    manager: BackendManager, get: Callable[[Callable[[str | None], Backend], str | None], Backend]
) -> None:
    """Make every backend lookup of *manager* go through `get(manager's own get, name)`.

    daglite keys started backends by the name they were asked for, so `map_tasks(...,
    backend="threads")` would start a second thread pool beside "thread": *get* can map names
    to canonical ones first (and refuse lookups once the session is stopped).
    """
    own_get = manager.get

    def routed_get(backend_name: str | None = None) -> Backend:
        return get(own_get, backend_name)

    manager.get = routed_get  # type: ignore[method-assign]


class _SessionForThreads:
    """Stands in for daglite's global backend manager while a notebook session is open.

    daglite uses its global manager where no session is active, which is the case in a thread
    that a cell starts (threads do not inherit the cell's context): `map_tasks` would run inline
    there, outside the session. This one first makes the notebook session the thread's own.
    """

    def __init__(self, enter: Callable[[], BackendManager]) -> None:
        self._enter = enter

    def get(self, backend_name: str | None = None) -> Backend:
        """Enter the notebook session in this thread, and look *backend_name* up in it."""
        return self._enter().get(backend_name)

    def stop(self) -> None:
        """Nothing: the notebook session stops its backends itself (daglite calls this atexit)."""


def forget_kernel_session() -> None:
    """In a process forked from the kernel, drop the kernel's daglite session.

    The fork copied it: the forking thread's context, and the stand-in global manager.
    """
    apply_session(None, None)
    if isinstance(BackendManager._global, _SessionForThreads):
        BackendManager._global = None


def serve_threads(enter: Callable[[], BackendManager]) -> Callable[[], None]:
    """Have threads without a daglite session enter the notebook's (*enter*) at a backend lookup.

    `map_tasks` looks its backend up first, so it runs in the notebook session in any thread.

    Returns:
        A function that puts daglite's own global manager back.
    """
    previous = BackendManager._global
    stand_in = _SessionForThreads(enter)
    BackendManager._global = stand_in  # type: ignore[assignment]

    def restore() -> None:
        if BackendManager._global is stand_in:
            BackendManager._global = previous

    return restore


event_reporter = resolve_event_reporter
"""Return the daglite event reporter of the current context (a worker's), if any."""

active_session: Callable[[], SessionContext | None] = SessionContext.__var__.get
"""Return the active daglite session of the current context."""


def backend_types(manager: BackendManager) -> dict[str, type[Backend]]:
    """The name -> backend class table of *manager* (daglite's, and what `register` added)."""
    return dict(manager._backend_types)


def set_default_backend(session: SessionContext, name: str) -> None:
    """Make *name* the default backend of daglite's *session* (later lookups without a name)."""
    session.backend = name


def set_settings(session: SessionContext, settings: DagliteSettings) -> None:
    """Give daglite's *session* new settings (backends started from now on read them)."""
    session.settings = settings


def sync_plugins(session: SessionContext) -> bool:
    """Add to *session* the global plugins registered after it opened; return if any were.

    daglite copies the global plugins into a session when it opens. Event handlers of the new
    plugins are registered with the session's event registry, as daglite does at the start.
    """
    from daglite.plugins.base import isinstance_event_handler_plugin
    from daglite.plugins.manager import _get_global_plugin_manager

    manager = session.plugin_manager
    added = [p for p in _get_global_plugin_manager().get_plugins() if not manager.is_registered(p)]
    for plugin in added:
        manager.register(plugin)
        if isinstance_event_handler_plugin(plugin) and session.event_processor is not None:
            plugin.register_event_handlers(session.event_processor._registry)
    return bool(added)


def started_backend(manager: BackendManager, name: str) -> Backend | None:
    """Return backend *name* if *manager* has started it."""
    return manager._backends.get(name)


def started_backends(manager: BackendManager) -> dict[str, Backend]:
    """Return the backends *manager* has started, by the name they were requested under."""
    return dict(manager._backends)


def forget_backend(manager: BackendManager, name: str) -> Backend | None:
    """Remove backend *name* from *manager*'s started ones (the next `get` starts it anew)."""
    return manager._backends.pop(name, None)


def runs_event_loop(func: Callable[..., Any]) -> bool:
    """Tell whether *func* is daglite's wrapper that calls `asyncio.run` (async tasks in maps)."""
    return isinstance(func, (_AsyncWrapper, _AsyncGeneratorWrapper))


def map_index_var() -> contextvars.ContextVar[SubmitContext | None]:
    """The context variable through which a call on a worker finds its index in a fan-out."""
    return SubmitContext.__var__


def task_name(func: Callable[..., Any]) -> str:
    """Return the task name behind *func* (a daglite task, a map wrapper or a plain callable).

    A name template (`@task(name="load-{x}")`) names each call differently: the task is then
    known by its function's name (daglite resolves each call's own name when it runs).
    """
    func = getattr(func, "_task", func)  # daglite's async and generator map wrappers
    name = getattr(func, "name", None) or getattr(func, "__name__", None)
    if isinstance(name, str) and "{" in name:
        name = getattr(getattr(func, "func", None), "__name__", name)
    return name if isinstance(name, str) else type(func).__name__


def running_workflow() -> str | None:
    """The name of the daglite workflow whose call is on this thread's stack, if any.

    daglite's session hooks do not say which workflow opened the session: its `__call__`
    frame does.
    """
    frame: FrameType | None = sys._getframe(1)
    for _ in range(32):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, BaseWorkflow):
            return owner.name
        frame = frame.f_back
    return None


def backend_callable(func: Callable[..., Any], verb: str) -> Callable[..., Any]:
    """Turn *func* into what daglite's `map_tasks` hands a backend (tasks, async, generators)."""
    return _make_backend_callable(func, verb)


# region Backends


def backend_session(backend: Backend) -> SessionContext | None:
    """The daglite session *backend* was started in (`Backend.start` keeps it)."""
    return backend._session


def backend_settings(backend: Backend) -> DagliteSettings:
    """The settings *backend* was started with."""
    return backend._settings


def abandon_thread_pool(backend: ThreadBackend) -> None:
    """Shut daglite's thread backend's pool down without waiting for its running calls.

    Pending calls are cancelled; running ones finish in their threads (daglite's own stop
    waits for them, past the kernel's shutdown budget).
    """
    backend._executor.shutdown(wait=False, cancel_futures=True)


def default_process_context() -> Any:
    """The multiprocessing context daglite's process backend picks for this platform."""
    return ProcessBackend._determine_mp_context()


class DatasetQueue:
    """A multiprocessing queue through which process workers hand dataset saves to the session.

    daglite's own process backend does the same: workers put save requests on the queue, and
    the session's dataset processor performs them (and fires the dataset hooks) in the kernel.
    """

    def __init__(self, session: SessionContext | None, context: Any) -> None:
        self.queue = context.Queue()
        self._processor = session.dataset_processor if session is not None else None
        self._source = self._processor.add_source(self.queue) if self._processor else None

    def close(self) -> None:
        """Perform the saves still queued, then close the queue."""
        if self._processor is not None and self._source is not None:
            self._processor.flush()
            self._processor.remove_source(self._source)
        self.queue.close()


def enter_worker_context(
    event_reporter: EventReporter, context_data: dict[str, Any], dataset_queue: Any
) -> None:
    """Enter daglite's backend context in a process worker, for the rest of its life.

    Tasks on the worker then find the session's plugins and stores, report events through
    *event_reporter*, and hand dataset saves to *dataset_queue* (see `DatasetQueue`).
    """
    context = BackendContext.from_dict(
        context_data,
        event_reporter=event_reporter,
        dataset_reporter=ProcessDatasetReporter(dataset_queue),
    )
    context.__enter__()


def saving_worker_context(context_data: dict[str, Any]) -> BackendContext:
    """Daglite's backend context for a remote worker that saves datasets itself (Dask).

    It has no event reporter yet (see `with_event_reporter`); the dataset store must be
    reachable from the worker.
    """
    return BackendContext.from_dict(dict(context_data), dataset_reporter=DirectDatasetReporter())


def with_event_reporter(context: BackendContext, reporter: EventReporter | None) -> BackendContext:
    """A copy of *context* whose tasks report their events through *reporter*."""
    return dataclasses.replace(context, event_reporter=reporter)


def is_task(func: Any) -> bool:
    """Tell whether *func* is a daglite task (`@task`), which backends run as it is."""
    return isinstance(func, _BaseTask)
