"""daglite-nb: the Jupyter layer for daglite.

Load it in a notebook with `%load_ext daglite_nb`, or use the same API from Python:

    import daglite_nb as dnb
    dnb.start(backend="thread")
    dnb.use("process")
    dnb.stop()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Iterable
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeVar
from typing import overload

__version__ = "0.1.0"

# Records of background threads must not fall to Python's last-resort handler, which prints
# into whichever cell runs; users who configure logging see them.
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from daglite.tasks import AsyncTaskStream
    from daglite.tasks import SyncTaskStream

    from daglite_nb.backends import BackendTable
    from daglite_nb.futures import LiveFuture
    from daglite_nb.futures import LiveFutureGroup
    from daglite_nb.session import NotebookSession
    from daglite_nb.session import SessionStatus

R = TypeVar("R")

__all__ = [
    "list_backends",
    "load_ipython_extension",
    "map",
    "panel",
    "register_backend",
    "restart",
    "start",
    "status",
    "stop",
    "submit",
    "unload_ipython_extension",
    "use",
    "using",
    "wait",
]


# region Session API


def start(backend: str | None = None, **options: Any) -> NotebookSession:
    """Open the kernel's daglite session; it lives across cells until `stop` or kernel exit.

    Args:
        backend: Default backend name or alias (default `"thread"`).
        **options: `cache_store`, `dataset_store` (paths), `max_threads`, `max_processes`
            (positive integers), `progress` (show map progress bars, default `True`),
            `echo_output` (echo what tasks print into their cell, each line labelled with its
            call; default: when `progress` is off),
            `plugins` (daglite plugin instances for this session, as `daglite.session` takes),
            `process_start_method` (`"fork"`, `"spawn"` or `"forkserver"`: how process workers
            start; default: daglite's choice for the platform), and for the Dask backend
            `dask_address` (a scheduler to connect to) or `dask_workers` and
            `dask_threads` (the size of a local cluster).

    Returns:
        The open session.

    Raises:
        UsageError: If a session is already open, or a name or value is invalid.
    """
    from daglite_nb import session

    return session.start(backend=backend, **options)


def use(name: str) -> str:
    """Make *name* the default backend of later cells; return its canonical name.

    A backend already started keeps finishing its work and is stopped when the session ends.
    """
    from daglite_nb import session

    return session.require().use(name)


@contextmanager
def using(name: str) -> Iterator[str]:
    """Use backend *name* as the default inside a `with` block, then restore the previous one."""
    from daglite_nb import session

    current = session.require()
    previous = current.backend
    selected = current.use(name)
    try:
        yield selected
    finally:
        if not current.closed:
            current.use(previous)


def restart(name: str | None = None) -> str:
    """Stop backend *name* (default: the session's) and start a fresh instance of it.

    Its pending tasks are cancelled; running ones finish on the old instance (a process pool's
    are ended). The new instance takes the session's current settings. Returns the backend's
    canonical name.
    """
    from daglite_nb import session

    return session.require().restart_backend(name)


def status() -> SessionStatus:
    """Return the state, default backend, uptime and started backends of the session."""
    from daglite_nb import session

    return session.status()


def stop() -> None:
    """End the session: cancel pending tasks, stop every started backend, flush daglite."""
    from daglite_nb import session

    session.stop()


_require: Callable[[], NotebookSession] | None = None


def _open_session() -> NotebookSession:
    """The open session (`session.require`) for calls made in loops: `submit`, `map`.

    Its module is imported on first use (`%load_ext` stays light), then looked up no more: an
    import statement in a function costs more than the rest of its lookup.
    """
    global _require
    if _require is None:
        from daglite_nb.session import require

        _require = require
    return _require()


# region Tasks


@overload
def submit(
    task: SyncTaskStream[Any, R] | AsyncTaskStream[Any, R],
    /,
    *args: Any,
    backend: str | None = None,
    **kwargs: Any,
) -> LiveFuture[list[R]]: ...


@overload
def submit(
    task: Callable[..., Coroutine[Any, Any, R]],
    /,
    *args: Any,
    backend: str | None = None,
    **kwargs: Any,
) -> LiveFuture[R]: ...


@overload
def submit(
    task: Callable[..., R], /, *args: Any, backend: str | None = None, **kwargs: Any
) -> LiveFuture[R]: ...


def submit(task: Any, /, *args: Any, backend: str | None = None, **kwargs: Any) -> LiveFuture[Any]:
    """Submit `task(*args, **kwargs)` to the session's backend (or *backend*).

    Returns:
        A `LiveFuture`: a `concurrent.futures.Future` that displays as a live status widget.
            A failed task's `result()` raises the task's own exception.
    """
    return _open_session().submit(task, args, kwargs, backend)


@overload
def map(  # noqa: A001
    task: SyncTaskStream[Any, R] | AsyncTaskStream[Any, R],
    /,
    *iterables: Iterable[Any],
    backend: str | None = None,
) -> LiveFutureGroup[list[R]]: ...


@overload
def map(  # noqa: A001
    task: Callable[..., Coroutine[Any, Any, R]],
    /,
    *iterables: Iterable[Any],
    backend: str | None = None,
) -> LiveFutureGroup[R]: ...


@overload
def map(  # noqa: A001
    task: Callable[..., R], /, *iterables: Iterable[Any], backend: str | None = None
) -> LiveFutureGroup[R]: ...


def map(task: Any, /, *iterables: Any, backend: str | None = None) -> LiveFutureGroup[Any]:  # noqa: A001
    """Submit *task* once per zipped item of *iterables* (like `map_tasks`, without waiting).

    Returns:
        A `LiveFutureGroup`: the futures in order, with `.results()`, shown as one progress bar.
    """
    return _open_session().map(task, iterables, backend)


async def wait(
    futures: Iterable[Future[Any]], timeout: float | None = None
) -> tuple[set[Future[Any]], set[Future[Any]]]:
    """Wait for *futures* without holding the kernel: `done, pending = await dnb.wait(futs)`.

    Unlike `concurrent.futures.wait`, this lets the kernel handle widget clicks (the panel's
    buttons, cancel buttons) while the cell waits, and the interrupt button stops the cell
    at once (its pending tasks are cancelled).
    """
    from daglite_nb.futures import wait_awake

    return await wait_awake(_futures_to_wait(futures, timeout), timeout)


def _futures_to_wait(futures: Any, timeout: Any) -> list[Future[Any]]:
    """*futures* as a list, checked as `dnb.wait` takes them (with its *timeout*).

    Raises:
        UsageError: If *futures* is not an iterable of futures, or *timeout* is not None or
            a number of seconds.
    """
    import asyncio

    from IPython.core.error import UsageError

    from daglite_nb._text import excerpt

    try:
        waited = list(futures)
    except TypeError:
        raise UsageError(f"wait takes an iterable of futures, got {excerpt(futures)}.") from None
    wrong = next((f for f in waited if not isinstance(f, (Future, asyncio.Future))), None)
    if wrong is not None:
        raise UsageError(f"wait takes futures such as dnb.submit's, got {excerpt(wrong)}.")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise UsageError(f"wait's timeout must be a number of seconds, got {excerpt(timeout)}.")
    return waited


# region Panel


def panel() -> Any:
    """Return the kernel's panel: watch the session, switch backends, start/stop, cancel."""
    from daglite_nb.display.panel import panel as kernel_panel

    return kernel_panel()


# region Backends


def list_backends() -> BackendTable:
    """Return every usable backend (name, aliases, origin); the session's default is marked."""
    from daglite_nb import session
    from daglite_nb.backends import BackendTable
    from daglite_nb.backends import registry

    current = session.current()
    return BackendTable(registry.entries(), current.backend if current else None)


def register_backend(name: str, backend_class: type, aliases: tuple[str, ...] = ()) -> None:
    """Register a `daglite.backends.Backend` subclass under *name* (and *aliases*).

    The open session (if any) can use it at once; later sessions find it too.
    """
    from daglite_nb import session
    from daglite_nb.backends import registry

    registry.register(name, backend_class, aliases)
    current = session.current()
    if current is not None:
        current.add_backend(name, backend_class)
    session.changed()


# region IPython extension


def load_ipython_extension(ipython: Any) -> None:
    """Register `%daglite`, `%%daglite` and the per-cell hooks; start nothing."""
    from daglite_nb import _cells
    from daglite_nb.magics import DagliteMagics

    ipython.register_magics(DagliteMagics)
    _cells.install(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Stop the open session (if any) and remove the hooks."""
    from daglite_nb import _cells
    from daglite_nb import session

    if session.current() is not None:
        session.stop()
    _cells.uninstall(ipython)
    ipython.magics_manager.magics["line"].pop("daglite", None)
    ipython.magics_manager.magics["cell"].pop("daglite", None)
