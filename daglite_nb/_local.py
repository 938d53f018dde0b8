"""daglite's local backends, made safe for a notebook kernel.

- inline: async tasks in a map run on a helper thread when the kernel's event loop is running
  (daglite would call `asyncio.run` inside it and fail);
- thread: stopping does not wait for running tasks (teardown stays inside the kernel's budget);
- process: workers ignore SIGINT and watch their parent; callables travel by value; stopping
  terminates what still runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import cloudpickle
from daglite.backends.local import InlineBackend
from daglite.backends.local import ProcessBackend
from daglite.backends.local import ThreadBackend

from daglite_nb import _daglite
from daglite_nb._daglite import BackendContext
from daglite_nb._daglite import SubmitContext
from daglite_nb._worker import CallByValue
from daglite_nb._worker import harden_worker
from daglite_nb._worker import unwrap


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
        self._executor.shutdown(wait=False, cancel_futures=True)


class NotebookProcessBackend(ProcessBackend):
    """Runs tasks on a hardened process pool, sending every call by value."""

    def _start(self, *, context: BackendContext) -> None:
        self._memo = threading.local()
        super()._start(context=context)
        _harden_pool(self._executor)

    def _submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        context: SubmitContext,
    ) -> Future[Any]:
        inner, record_id = unwrap(func)
        blob = self._func_blob(inner, fresh=not context.map_index)
        call = CallByValue(blob, cloudpickle.dumps((args, kwargs)), record_id)
        return super()._submit(call, (), {}, context=context)

    def _func_blob(self, func: Callable[..., Any], fresh: bool) -> bytes:
        # A fan-out (map_index 1, 2, ...) submits one callable many times: pickle it once per
        # fan-out and thread. Any other call pickles afresh, so it sees the current globals.
        memo = self._memo.__dict__
        if fresh or memo.get("func") is not func:
            memo["func"], memo["blob"] = func, cloudpickle.dumps(func)
        return memo["blob"]

    def _stop(self) -> None:
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        super()._stop()


def _harden_pool(executor: ProcessPoolExecutor) -> None:
    """Wrap the pool's initializer so that every worker it forks is hardened first."""
    # The pool forks its workers on the first submit, so the initializer can still be swapped.
    executor._initializer, executor._initargs = (  # type: ignore[attr-defined]
        harden_worker,
        (os.getpid(), executor._initializer, executor._initargs),  # type: ignore[attr-defined]
    )


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
