"""daglite's local backends, made safe for a notebook kernel.

- inline: async tasks in a map run on a helper thread when the kernel's event loop is running
  (daglite would call `asyncio.run` inside it and fail);
- thread: stopping does not wait for running tasks (teardown stays inside the kernel's budget);
- process: a pool of its own (`daglite_nb._pool`): callables travel by value, workers ignore
  SIGINT and exit with the kernel, a worker that dies costs only its call; stopping terminates
  what still runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any
from typing import ClassVar

from daglite.backends.base import Backend
from daglite.backends.local import InlineBackend
from daglite.backends.local import ThreadBackend

from daglite_nb import _daglite
from daglite_nb._daglite import BackendContext
from daglite_nb._daglite import SubmitContext
from daglite_nb._events import reports_to
from daglite_nb._events import unwrap
from daglite_nb._pool import WorkerPool
from daglite_nb.model import Call


class NotebookInlineBackend(InlineBackend):
    """Runs tasks in the calling thread; async tasks step aside from a running event loop."""

    runs_here = True

    def _submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        context: SubmitContext,
    ) -> Future[Any]:
        run = super()._submit
        if _daglite.runs_event_loop(unwrap(func)[0]) and _event_loop_running():
            return _on_helper_thread(run, func, args, kwargs, context=context)
        return run(func, args, kwargs, context=context)


class NotebookThreadBackend(ThreadBackend):
    """Runs tasks on a thread pool; stopping cancels pending work and does not wait."""

    runs_here = True

    def _stop(self) -> None:
        _daglite.abandon_thread_pool(self)


class NotebookProcessBackend(Backend):
    """Runs tasks on a process pool made for a kernel (`daglite_nb._pool.WorkerPool`).

    Every call travels by value; a worker that dies costs only the call it was running, and the
    pool replaces it. Workers start with daglite's choice of start method for the platform, or
    the one bound with `configure(start_method=...)`.
    """

    name = "process"
    start_method: ClassVar[str | None] = None

    @classmethod
    def configure(cls, *, start_method: str | None = None) -> type[NotebookProcessBackend]:
        """Return a subclass of this backend whose workers start with *start_method*.

        Raises:
            ValueError: If this platform has no such start method.
        """
        methods = multiprocessing.get_all_start_methods()
        if start_method is not None and start_method not in methods:
            raise ValueError(
                f"process_start_method must be one of {', '.join(methods)}, got {start_method!r}."
            )
        namespace = {"start_method": start_method, "__module__": cls.__module__}
        return type(cls.__name__, (cls,), namespace)

    def _start(self, *, context: BackendContext) -> None:
        session = _daglite.backend_session(self)
        mp_context = (
            multiprocessing.get_context(self.start_method)
            if self.start_method
            else _daglite.default_process_context()
        )
        self._datasets = _daglite.DatasetQueue(session, mp_context)
        self._context = context
        reporter = session.event_reporter if session is not None else None
        self._pool = WorkerPool(
            mp_context,
            _daglite.backend_settings(self).max_parallel_processes,
            context.to_dict(),
            self._datasets.queue,
            on_event=reports_to(reporter.report if reporter is not None else _ignore_event),
            name_of=_daglite.task_name,
        )

    def refresh_context(self) -> None:
        """Send the workers daglite's context anew (the session gained plugins)."""
        self._pool.set_daglite_context(self._context.to_dict())

    def _submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        context: SubmitContext,
    ) -> Future[Any]:
        # A fan-out (map_index 1, 2, ...) submits one callable many times: it is pickled once
        # per fan-out. Any other call pickles afresh, so it sees the current globals.
        inner, record_id = unwrap(func)
        index = context.map_index
        return self._pool.submit(
            inner,
            args,
            kwargs,
            map_index=index,
            tag=record_id,
            fresh=not index,
            adopt=func.adopt if isinstance(func, Call) else None,
        )

    def _stop(self) -> None:
        self._pool.stop()
        self._datasets.close()


def _ignore_event(event_type: Any, data: dict[str, Any]) -> None:
    """Events of a backend started outside a session go nowhere."""


def _event_loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _on_helper_thread(run: Callable[..., Future[Any]], *args: Any, **kwargs: Any) -> Future[Any]:
    """Call *run* on a short-lived thread that carries the caller's context, and wait for it."""
    box: list[Future[Any]] = []
    context = contextvars.copy_context()
    helper = threading.Thread(
        target=lambda: box.append(context.run(run, *args, **kwargs)), name="daglite-nb-async"
    )
    helper.start()
    helper.join()
    return box[0]
