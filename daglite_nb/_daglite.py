"""Every touch of daglite internals, in one place.

daglite 0.9 is a pre-release; when its private names move, this module is the only one to mend.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from daglite._context import BackendContext
from daglite._context import SessionContext
from daglite._context import SubmitContext
from daglite._resolvers import resolve_event_reporter
from daglite.backends.base import Backend
from daglite.backends.manager import BackendManager
from daglite.composers import _AsyncGeneratorWrapper
from daglite.composers import _AsyncWrapper
from daglite.composers import _make_backend_callable
from daglite.settings import DagliteSettings
from daglite.tasks import _BaseTask

__all__ = ["BackendContext", "SubmitContext"]  # daglite's, re-exported here


def builtin_backend_types() -> dict[str, type[Backend]]:
    """Return daglite's own name -> backend class table (aliases included)."""
    return dict(BackendManager(session=None, settings=DagliteSettings())._backend_types)


def session_context(ctx: contextvars.Context) -> SessionContext | None:
    """Return the daglite `SessionContext` active in *ctx*."""
    return ctx.run(SessionContext.__var__.get)


def active_manager(ctx: contextvars.Context) -> BackendManager | None:
    """Return the session-scoped `BackendManager` active in *ctx*."""
    return ctx.run(BackendManager._active.get)


def apply_session(session: SessionContext | None, manager: BackendManager | None) -> None:
    """Make *session* and *manager* the active daglite session in the current context."""
    SessionContext.__var__.set(session)
    BackendManager._active.set(manager)


def route_names(manager: BackendManager, canonical: Callable[[str], str]) -> None:
    """Make *manager* map every backend name through *canonical* before looking it up.

    daglite keys started backends by the name they were asked for, so `map_tasks(...,
    backend="threads")` would start a second thread pool beside "thread".
    """
    get = manager.get

    def get_canonical(backend_name: str | None = None) -> Backend:
        return get(canonical(backend_name) if backend_name else backend_name)

    manager.get = get_canonical  # type: ignore[method-assign]


event_reporter = resolve_event_reporter
"""Return the daglite event reporter of the current context (a worker's), if any."""

active_session: Callable[[], SessionContext | None] = SessionContext.__var__.get
"""Return the active daglite session of the current context."""


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
    """Return the task name behind *func* (a daglite task, a map wrapper or a plain callable)."""
    func = getattr(func, "_task", func)  # daglite's async and generator map wrappers
    name = getattr(func, "name", None) or getattr(func, "__name__", None)
    return name if isinstance(name, str) else type(func).__name__


def backend_callable(func: Callable[..., Any], verb: str) -> Callable[..., Any]:
    """Turn *func* into what daglite's `map_tasks` hands a backend (tasks, async, generators)."""
    return _make_backend_callable(func, verb)


def is_task(func: Any) -> bool:
    """Tell whether *func* is a daglite task (`@task`), which backends run as it is."""
    return isinstance(func, _BaseTask)
