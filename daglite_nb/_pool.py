"""A process pool for a notebook kernel: a worker that dies costs only the call it was running.

`concurrent.futures.ProcessPoolExecutor` breaks for good when one worker dies (`os._exit`, a
segfault, the out-of-memory killer) and fails every call, those on healthy workers included. Here
the call the lost worker was running fails with an error that names the task and how the worker
ended, the calls it had not started go back to the queue, and a new worker takes its place.

One dispatcher thread owns the pool's state: it sends calls to idle workers, reads what they send
back (outcomes, and the daglite events their tasks report) and watches their processes. Other
threads only queue calls and cancellations, and wake it. Each worker has a pipe of its own, so a
worker killed halfway through a message cannot block the others.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import InvalidStateError
from multiprocessing.connection import wait
from typing import Any

import cloudpickle
from daglite.exceptions import BackendError

from daglite_nb import _worker
from daglite_nb._text import how_it_ended
from daglite_nb._text import safe_str

logger = logging.getLogger(__name__)

STARTUP_FAILURES = 3
"""How many workers in a row may die before they are ready before the pool gives up."""

STOP_SECONDS = 0.2
"""How long idle workers get to exit when the pool stops, before they are terminated."""


class WorkerLost(BackendError):
    """The process worker running a call ended before the call did."""


class CallNotSent(BackendError):
    """A call (its task or its arguments) could not be sent to a process worker."""


class PoolFuture(Future):
    """The Future of one call in a `WorkerPool`; cancelling it also tells the worker holding it."""

    def __init__(self, pool: WorkerPool, call_id: int) -> None:
        super().__init__()
        self._pool = pool
        self.call_id = call_id

    def cancel(self) -> bool:
        """Cancel the call if it has not started; return whether it was cancelled."""
        if not super().cancel():
            return False
        self._pool.forget(self)
        return True


class _Call:
    """One call waiting for, or running on, a worker."""

    __slots__ = ("id", "future", "name", "function", "tag", "map_index", "args", "kwargs")

    def __init__(
        self,
        future: PoolFuture,
        name: str,
        function: _Function,
        tag: Any,
        map_index: int | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.id = future.call_id
        self.future = future
        self.name = name
        self.function = function
        self.tag = tag
        self.map_index = map_index
        self.args = args
        self.kwargs = kwargs


class _Function:
    """A callable pickled by value once (per fan-out), known to workers by its id."""

    __slots__ = ("id", "blob")

    def __init__(self, function_id: int, blob: bytes) -> None:
        self.id = function_id
        self.blob = blob


class _Worker:
    """A worker process, the kernel's end of its pipe, and the calls it holds."""

    def __init__(self, process: Any, conn: Any) -> None:
        self.process = process
        self.conn = conn
        self.ready = False
        self.calls: dict[int, _Call] = {}
        """The calls sent to it that have not ended, in the order it runs them."""
        self.sent: deque[list[int]] = deque()
        """The ids of the calls of each message sent to it that it has not yet taken."""
        self.taken: list[int] = []
        """The ids of the calls of the message it took last: it runs them one after another."""
        self.functions = _worker.FunctionCache()
        self.context_version = 0


class WorkerPool:
    """Runs calls on a fixed number of worker processes, replacing any that die.

    Args:
        context: The multiprocessing context that starts workers (fork, spawn or forkserver).
        size: How many workers run at once.
        daglite_context: daglite's serialized backend context, which every worker enters
            (the session's plugins and stores; see `set_daglite_context`).
        dataset_queue: The queue through which workers hand dataset saves to the session.
        on_event: Called on the dispatcher thread with each daglite event a task reports.
    """

    def __init__(
        self,
        context: Any,
        size: int,
        daglite_context: dict[str, Any],
        dataset_queue: Any,
        on_event: Callable[[Any, Any], None],
    ) -> None:
        self._context = context
        self._size = size
        self._daglite_context = daglite_context
        self._dataset_queue = dataset_queue
        self._context_version = 0
        self._on_event = on_event
        self._waiting: deque[_Call] = deque()
        self._forgotten: deque[PoolFuture] = deque()
        self._workers: list[_Worker] = []
        self._broken: str | None = None
        self._startup_failures = 0
        self._call_ids = itertools.count()
        self._function_ids = itertools.count()
        self._memo = threading.local()
        self._wake_r, self._wake_w = os.pipe()
        self._woken = False
        self._stopping = False
        for _ in range(size):
            self._spawn()
        self._thread = threading.Thread(target=self._run, name="daglite-nb-process-pool")
        self._thread.daemon = True
        self._thread.start()

    # region Any thread

    def submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        name: str,
        map_index: int | None,
        tag: Any = None,
        fresh: bool = True,
    ) -> PoolFuture:
        """Queue the call `func(*args, **kwargs)`; return its Future.

        Args:
            func: The callable; it travels by value (cloudpickle).
            args: Positional arguments.
            kwargs: Keyword arguments.
            name: The task's name, for errors.
            map_index: The call's index in a fan-out (daglite's `SubmitContext`), if any.
            tag: Passed to the worker's runner with the call (`daglite_nb._worker.run_call`).
            fresh: Pickle *func* anew even if the last call from this thread had it (a new
                fan-out, or a single call: it sees the current globals).
        """
        future = PoolFuture(self, next(self._call_ids))
        if self._stopping or self._broken:
            future.set_exception(BackendError(self._broken or "The process backend is stopped."))
            return future
        try:
            function = self._function(func, fresh)
        except Exception as exc:
            future.set_exception(
                CallNotSent(f"Task {name!r} cannot be sent to a process worker: {safe_str(exc)}.")
            )
            return future
        self._waiting.append(_Call(future, name, function, tag, map_index, args, kwargs))
        self._wake()
        return future

    def set_daglite_context(self, daglite_context: dict[str, Any]) -> None:
        """Have every worker enter *daglite_context* before its next call (new plugins)."""
        self._daglite_context = daglite_context
        self._context_version += 1

    def forget(self, future: PoolFuture) -> None:
        """Drop the cancelled call of *future* (from `PoolFuture.cancel`)."""
        self._forgotten.append(future)
        self._wake()

    def stop(self) -> None:
        """Cancel waiting calls, fail running ones and end every worker, in well under a second."""
        self._stopping = True
        self._wake()
        self._thread.join(timeout=1.0)
        stopped = BackendError("The process backend stopped before this task finished.")
        for call in self._waiting:
            call.future.cancel()
        busy = [worker for worker in self._workers if worker.calls]
        for worker in self._workers:
            for call in worker.calls.values():
                _settle(call.future, error=stopped)
            if not worker.calls:
                _send(worker, ("stop",))
        for worker in busy:
            worker.process.terminate()
        for worker in self._workers:
            worker.process.join(STOP_SECONDS)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(STOP_SECONDS)
            worker.conn.close()
        self._workers.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _function(self, func: Callable[..., Any], fresh: bool) -> _Function:
        memo = self._memo.__dict__
        if fresh or memo.get("func") is not func:
            memo["func"] = func
            memo["function"] = _Function(next(self._function_ids), cloudpickle.dumps(func))
        return memo["function"]

    def _wake(self) -> None:
        # One byte per round of the dispatcher, however many threads call: it clears the flag
        # before it takes the queues.
        if not self._woken:
            self._woken = True
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # stopped meanwhile
                pass

    # region Dispatcher thread

    def _run(self) -> None:
        while not self._stopping:
            conns = {worker.conn: worker for worker in self._workers}
            sentinels = {worker.process.sentinel: worker for worker in self._workers}
            ready = wait([self._wake_r, *conns, *sentinels])
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
                self._woken = False
            for conn in conns.keys() & ready:
                self._receive(conns[conn])
            for sentinel in sentinels.keys() & ready:
                self._lost(sentinels[sentinel])
            self._forget_cancelled()
            self._dispatch()

    def _dispatch(self) -> None:
        for worker in self._workers:
            if worker.calls:
                continue
            call = self._next_call()
            if call is None:
                return
            self._send_calls(worker, [call])

    def _next_call(self) -> _Call | None:
        while self._waiting:
            call = self._waiting.popleft()
            if not call.future.cancelled():
                return call
        return None

    def _send_calls(self, worker: _Worker, calls: list[_Call]) -> None:
        """Send *calls* (of one callable) to the idle *worker*, as one message.

        If the worker died meanwhile, its sentinel tells, and the calls go back to the queue.
        """
        arguments, calls = _pickle_arguments(calls)
        if not calls:
            return
        if worker.context_version != self._context_version:
            worker.context_version = self._context_version
            _send(worker, ("context", self._daglite_context))
        function = calls[0].function
        blob = None if worker.functions.remember(function.id) else function.blob
        header = [(call.id, call.tag, call.map_index) for call in calls]
        for call in calls:
            worker.calls[call.id] = call
        worker.sent.append([call.id for call in calls])
        _send(worker, ("run", function.id, blob, header, arguments))

    def _receive(self, worker: _Worker) -> bool:
        """Handle one message from *worker*; return False if its pipe is closed."""
        try:
            message = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            return False  # the worker is gone: its sentinel tells
        except Exception as exc:  # a result or an error this process cannot unpickle
            self._fail_calls(worker, BackendError(f"A result could not be read: {safe_str(exc)}"))
            return True
        kind = message[0]
        if kind == "event":
            try:
                self._on_event(message[1], message[2])
            except Exception:
                logger.exception("daglite-nb could not handle a worker's event")
        elif kind == "took":
            worker.taken = worker.sent.popleft()
        elif kind == "ended":
            self._ended(worker, message[1])
        elif kind == "ready":
            worker.ready = True
            self._startup_failures = 0
        return True

    def _ended(self, worker: _Worker, outcomes: list[tuple[Any, ...]]) -> None:
        for call_id, ok, value in outcomes:
            call = worker.calls.pop(call_id, None)
            if call is None or ok is None:  # failed already, or cancelled before it started
                continue
            if ok:
                _settle(call.future, result=value)
            else:
                _settle(call.future, error=_worker.rebuild_error(value))

    def _fail_calls(self, worker: _Worker, error: BaseException) -> None:
        for call in worker.calls.values():
            _settle(call.future, error=error)
        worker.calls.clear()

    def _forget_cancelled(self) -> None:
        while self._forgotten:
            call_id = self._forgotten.popleft().call_id
            for worker in self._workers:
                if call_id in worker.calls:
                    _send(worker, ("cancel", call_id))

    def _lost(self, worker: _Worker) -> None:
        """Handle the death of *worker*: fail its running call, requeue the rest, replace it."""
        while _readable(worker.conn) and self._receive(worker):
            pass  # what it sent before it died comes first
        self._workers.remove(worker)
        worker.process.join(STOP_SECONDS)  # it is exiting: reap it, to tell how it ended
        worker.conn.close()
        calls = list(worker.calls.values())
        running = next((worker.calls[i] for i in worker.taken if i in worker.calls), None)
        if running is not None:  # the worker had taken it: it ran it when it died
            calls.remove(running)
            how = how_it_ended(worker.process.exitcode)
            _settle(
                running.future,
                error=WorkerLost(
                    f"Task {running.name!r} was running in process worker {worker.process.pid}, "
                    f"which {how}; a new worker took its place."
                ),
            )
        self._waiting.extendleft(reversed(calls))
        if self._stopping:
            return
        if not worker.ready:
            self._startup_failures += 1
            if self._startup_failures >= STARTUP_FAILURES:
                self._give_up(worker.process.exitcode)
                return
        self._spawn()

    def _give_up(self, exitcode: int | None) -> None:
        self._broken = (
            f"Process workers cannot start: {STARTUP_FAILURES} in a row "
            f"{how_it_ended(exitcode)} before they were ready; restart the backend with "
            "%daglite restart once the cause is fixed."
        )
        error = BackendError(self._broken)
        while (call := self._next_call()) is not None:
            _settle(call.future, error=error)

    def _spawn(self) -> None:
        here, there = self._context.Pipe()
        process = self._context.Process(
            target=_worker.serve,
            args=(there, self._daglite_context, self._dataset_queue),
            name="daglite-nb-worker",
        )
        process.start()
        there.close()  # the worker's end lives in the worker only
        worker = _Worker(process, here)
        worker.context_version = self._context_version
        self._workers.append(worker)


# region Helpers


def _send(worker: _Worker, message: tuple[Any, ...]) -> bool:
    """Send *message* to *worker*; return False if its pipe is gone."""
    try:
        worker.conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
    except OSError:
        return False
    return True


def _readable(conn: Any) -> bool:
    try:
        return conn.poll(0)
    except (EOFError, OSError):
        return False


def _pickle_arguments(calls: list[_Call]) -> tuple[bytes, list[_Call]]:
    """Pickle the arguments of *calls* together; return them with the calls they belong to.

    A call whose arguments do not pickle fails with the reason, and the others go on.
    """
    try:
        return cloudpickle.dumps([(call.args, call.kwargs) for call in calls]), calls
    except Exception:
        sendable = [call for call in calls if _arguments_pickle(call)]
        return cloudpickle.dumps([(call.args, call.kwargs) for call in sendable]), sendable


def _arguments_pickle(call: _Call) -> bool:
    try:
        cloudpickle.dumps((call.args, call.kwargs))
    except Exception as exc:
        _settle(
            call.future,
            error=CallNotSent(
                f"The arguments of task {call.name!r} cannot be sent to a process worker: "
                f"{safe_str(exc)}."
            ),
        )
        return False
    return True


def _settle(future: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Give *future* its outcome, unless it was cancelled or settled meanwhile."""
    try:
        if not future.set_running_or_notify_cancel():
            return
    except RuntimeError:  # running already (never here), or settled
        return
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass
