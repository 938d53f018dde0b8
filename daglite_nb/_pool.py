"""A process pool for a notebook kernel: a worker that dies costs only the call it was running.

`concurrent.futures.ProcessPoolExecutor` breaks for good when one worker dies (`os._exit`, a
segfault, the out-of-memory killer) and fails every call, those on healthy workers included. Here
the call the lost worker was running fails with an error that names the task and how the worker
ended, the calls it had not started go back to the queue, and a new worker takes its place.

One dispatcher thread owns the pool's state: it sends calls to idle workers, reads what they send
back (outcomes, and the daglite events their tasks report) and watches their processes. Other
threads only queue calls and cancellations, and wake it. Each worker has a pipe of its own, so a
worker killed halfway through a message cannot block the others.

Calls travel in batches: an idle worker gets the next calls of one callable, as many as take
about `BATCH_SECONDS` at the pace its calls ran so far (one, until a call of it ended), and no
more than its share of the waiting calls; a worker running short calls gets its next batch
ahead. A worker sends back what piled up (events and outcomes) when a batch ends, and while it
runs at most every `daglite_nb._pace.INTERVAL` seconds. A call a worker holds can be cancelled
until it starts (see `_worker.Progress`).
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

LOCK_SECONDS = 1.0
"""How long the kernel waits for a worker's `Progress.lock` (held for microseconds) at most."""

BATCH_SECONDS = 0.02
"""How long the calls of one batch should run together, at the pace measured so far."""

MAX_BATCH = 1000
"""The most calls in one batch (a worker has `_worker.SLOTS` cancel flags for two)."""

AHEAD_BYTES = 32 * 1024
"""The largest batch sent ahead to a busy worker: half of a pipe's buffer on Linux."""


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
        self.dropped = False
        """Whether it was cancelled (`cancelled()`, readable without the Future's lock)."""

    def cancel(self) -> bool:
        """Cancel the call if it has not started; return whether it was cancelled."""
        return self._pool.cancel(self)


class _Call:
    """One call waiting for, or running on, a worker."""

    __slots__ = ("id", "future", "function", "tag", "map_index", "args", "kwargs")

    def __init__(
        self,
        future: PoolFuture,
        function: _Function,
        tag: Any,
        map_index: int | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.id = future.call_id
        self.future = future
        self.function = function
        self.tag = tag
        self.map_index = map_index
        self.args = args
        self.kwargs = kwargs

    @property
    def name(self) -> str:
        """Its task's name, with its index in a fan-out (`load[3]`), for errors."""
        return _indexed(self.function.name, self.map_index)


class _Function:
    """A callable pickled by value once (per fan-out), known to workers by its id.

    Attributes:
        seconds: How long one of its calls runs, as measured so far (None before any ended).
    """

    __slots__ = ("id", "name", "blob", "seconds")

    def __init__(self, function_id: int, name: str, blob: bytes) -> None:
        self.id = function_id
        self.name = name
        self.blob = blob
        self.seconds: float | None = None

    def measured(self, seconds: list[float]) -> None:
        """Take the times of calls that just ended into its pace (recent ones weigh most)."""
        mean = sum(seconds) / len(seconds)
        self.seconds = mean if self.seconds is None else (self.seconds + mean) / 2

    def batch_size(self, share: int) -> int:
        """How many of its calls go to a worker at once: `BATCH_SECONDS` of work, or *share*."""
        if self.seconds is None:
            return 1
        return max(1, min(share, MAX_BATCH, int(BATCH_SECONDS / max(self.seconds, 1e-7))))


class _Worker:
    """A worker process, the kernel's end of its pipe, and the calls it holds."""

    def __init__(self, process: Any, conn: Any, progress: _worker.Progress) -> None:
        self.process = process
        self.conn = conn
        self.progress = progress
        self.ready = False
        self.calls: dict[int, _Call] = {}
        """The calls sent to it that have not ended, in the order it runs them."""
        self.order: dict[int, int] = {}
        """The place of each of its `calls` in the order it runs them."""
        self.batches: deque[tuple[int, _Function]] = deque()
        """The last call id and the callable of each batch sent to it that has not ended."""
        self._places = itertools.count()
        self.functions = _worker.FunctionCache()
        self.context_version = 0

    def takes(self, calls: list[_Call]) -> None:
        """*calls* are sent to it, as one batch."""
        for call in calls:
            self.calls[call.id] = call
            self.order[call.id] = next(self._places)
        self.batches.append((calls[-1].id, calls[0].function))

    def started(self, call_id: int) -> bool:
        """Whether it started its call *call_id*: it started that call or a later one.

        Outcomes come in order, so the call it started last is among `calls` until every
        earlier one ended.
        """
        return self.order[call_id] <= self.order.get(self.progress.started, -1)

    def ended(self, call_id: int) -> _Call | None:
        """Its call *call_id* ended: the call, unless it was settled already."""
        self.order.pop(call_id, None)
        if self.batches and self.batches[0][0] == call_id:
            self.batches.popleft()
        return self.calls.pop(call_id, None)

    def forget_calls(self) -> list[_Call]:
        """Drop every call it holds (its outcomes will be ignored); return them."""
        calls = list(self.calls.values())
        self.calls.clear()
        self.order.clear()
        self.batches.clear()
        return calls

    def wants(self, depth: int) -> bool:
        """Whether it takes a batch now that it holds *depth*.

        An idle worker does. One running a batch of calls shorter than `BATCH_SECONDS` each
        gets its next batch ahead, so it does not wait for it; a call sent ahead waits behind
        short calls only.
        """
        if len(self.batches) != depth:
            return False
        if depth == 0:
            return True
        seconds = self.batches[0][1].seconds
        return seconds is not None and seconds < BATCH_SECONDS


class WorkerPool:
    """Runs calls on a fixed number of worker processes, replacing any that die.

    Args:
        context: The multiprocessing context that starts workers (fork, spawn or forkserver).
        size: How many workers run at once.
        daglite_context: daglite's serialized backend context, which every worker enters
            (the session's plugins and stores; see `set_daglite_context`).
        dataset_queue: The queue through which workers hand dataset saves to the session.
        on_event: Called on the dispatcher thread with each daglite event a task reports.
        name_of: What a callable is called in errors (once per fan-out).
    """

    def __init__(
        self,
        context: Any,
        size: int,
        daglite_context: dict[str, Any],
        dataset_queue: Any,
        on_event: Callable[[Any, Any], None],
        name_of: Callable[[Callable[..., Any]], str],
    ) -> None:
        self._context = context
        self._size = size
        self._daglite_context = daglite_context
        self._dataset_queue = dataset_queue
        self._context_version = 0
        self._on_event = on_event
        self._name_of = name_of
        self._waiting: deque[_Call] = deque()
        self._workers: list[_Worker] = []
        self._sending = threading.Lock()
        """Held to hand calls to a worker, and to cancel one (see `cancel`)."""
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
        map_index: int | None,
        tag: Any = None,
        fresh: bool = True,
        adopt: Callable[[PoolFuture], None] | None = None,
    ) -> PoolFuture:
        """Queue the call `func(*args, **kwargs)`; return its Future.

        Args:
            func: The callable; it travels by value (cloudpickle).
            args: Positional arguments.
            kwargs: Keyword arguments.
            map_index: The call's index in a fan-out (daglite's `SubmitContext`), if any.
            tag: Passed to the worker's runner with the call (`daglite_nb._worker.run_call`).
            fresh: Pickle *func* anew even if the last call from this thread had it (a new
                fan-out, or a single call: it sees the current globals).
            adopt: Called with the Future before the call can run (see `Call.adopt`).
        """
        future = PoolFuture(self, next(self._call_ids))
        if self._stopping or self._broken:
            future.set_exception(BackendError(self._broken or "The process backend is stopped."))
            return future
        try:
            function = self._function(func, fresh)
        except Exception as exc:
            name = _indexed(self._name_of(func), map_index)
            future.set_exception(
                CallNotSent(f"Task {name!r} cannot be sent to a process worker: {safe_str(exc)}.")
            )
            return future
        if adopt is not None:
            adopt(future)
        self._waiting.append(_Call(future, function, tag, map_index, args, kwargs))
        self._wake()
        return future

    def set_daglite_context(self, daglite_context: dict[str, Any]) -> None:
        """Have every worker enter *daglite_context* before its next call (new plugins)."""
        self._daglite_context = daglite_context
        self._context_version += 1

    def cancel(self, future: PoolFuture) -> bool:
        """Cancel the call of *future* unless a worker started it; return whether it did.

        A waiting call is dropped when its turn comes. A call a worker holds is flagged in its
        `Progress`, and so is one cancelled on its way to a worker (see `_send_calls`): the
        worker starts none of them.
        """
        with self._sending:
            if future.dropped:
                return True
            worker = next((w for w in self._workers if future.call_id in w.calls), None)
            if worker is None:
                future.dropped = Future.cancel(future)
                return future.dropped
            if not _lock(worker):
                return False
            try:
                if worker.started(future.call_id) or not Future.cancel(future):
                    return False
                future.dropped = True
                worker.progress.cancel(worker.order[future.call_id])
                return True
            finally:
                worker.progress.lock.release()

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
                _send(worker, _pickled(("stop",)))
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
            blob = cloudpickle.dumps(func)
            memo["function"] = _Function(next(self._function_ids), self._name_of(func), blob)
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
            self._dispatch()

    def _dispatch(self) -> None:
        for depth in (0, 1):  # idle workers first
            for worker in [worker for worker in self._workers if worker.wants(depth)]:
                share = -(-len(self._waiting) // len(self._workers))  # rounded up
                batch = self._next_batch(share)
                if not batch:
                    return
                self._send_calls(worker, batch, ahead=depth > 0)

    def _next_batch(self, share: int) -> list[_Call]:
        """The next waiting calls of one callable, as many as its `batch_size`."""
        first = self._next_call()
        if first is None:
            return []
        batch = [first]
        function = first.function
        size = function.batch_size(share)
        waiting = self._waiting
        while len(batch) < size and waiting and waiting[0].function is function:
            call = waiting.popleft()
            if not call.future.dropped:
                batch.append(call)
        return batch

    def _next_call(self) -> _Call | None:
        while self._waiting:
            call = self._waiting.popleft()
            if not call.future.dropped:
                return call
        return None

    def _send_calls(self, worker: _Worker, calls: list[_Call], ahead: bool) -> None:
        """Send *calls* (of one callable) to *worker*, as one batch, or put them back in front.

        A batch sent *ahead*, while the worker runs another, must fit in its pipe, so that
        sending it never waits for a busy worker; a larger one waits until the worker is idle.
        If the worker died meanwhile, its sentinel tells, and the calls go back to the queue.
        """
        arguments, calls = _pickle_arguments(calls)
        if not calls:
            return
        function = calls[0].function
        blob = None if function.id in worker.functions else function.blob
        header = [(call.id, call.tag, call.map_index) for call in calls]
        run = _pickled(("run", function.id, blob, header, arguments))
        stale = worker.context_version != self._context_version
        with self._sending:
            if (ahead and (stale or len(run) > AHEAD_BYTES)) or not _lock(worker):
                self._waiting.extendleft(reversed(calls))
                return
            try:
                if stale:
                    worker.context_version = self._context_version
                    _send(worker, _pickled(("context", self._daglite_context)))
                worker.functions.remember(function.id)
                worker.takes(calls)
                _send(worker, run)
                for call in calls:
                    if call.future.dropped:  # meanwhile
                        worker.progress.cancel(worker.order[call.id])
            finally:
                worker.progress.lock.release()

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
        if kind == "sent":
            for event_type, data in message[1]:
                try:
                    self._on_event(event_type, data)
                except Exception:
                    logger.exception("daglite-nb could not handle a worker's event")
            self._ended(worker, message[2])
        elif kind == "ready":
            worker.ready = True
            self._startup_failures = 0
        return True

    def _ended(self, worker: _Worker, outcomes: list[tuple[Any, ...]]) -> None:
        """Settle the calls of *outcomes* (see `daglite_nb._worker.Runner`); learn their pace."""
        ran: dict[_Function, list[float]] = {}
        for call_id, ok, value, seconds in outcomes:
            call = worker.ended(call_id)
            if call is None or ok is None:  # failed already, or cancelled before it started
                continue
            ran.setdefault(call.function, []).append(seconds)
            if ok:
                _settle(call.future, result=value)
            else:
                _settle(call.future, error=_worker.rebuild_error(value))
        for function, seconds in ran.items():
            function.measured(seconds)

    def _fail_calls(self, worker: _Worker, error: BaseException) -> None:
        for call in worker.forget_calls():
            _settle(call.future, error=error)

    def _lost(self, worker: _Worker) -> None:
        """Handle the death of *worker*: fail its running call, requeue the rest, replace it."""
        while _readable(worker.conn) and self._receive(worker):
            pass  # what it sent before it died comes first
        self._workers.remove(worker)
        worker.process.join(STOP_SECONDS)  # it is exiting: reap it, to tell how it ended
        worker.conn.close()
        calls = list(worker.calls.values())
        running = worker.calls.get(worker.progress.running)
        if running is not None:  # it ran when its worker died; the others go back to the queue
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
        progress = _worker.Progress(self._context)
        process = self._context.Process(
            target=_worker.serve,
            args=(there, progress, self._daglite_context, self._dataset_queue),
            name="daglite-nb-worker",
        )
        process.start()
        there.close()  # the worker's end lives in the worker only
        worker = _Worker(process, here, progress)
        worker.context_version = self._context_version
        self._workers.append(worker)


# region Helpers


def _pickled(message: tuple[Any, ...]) -> bytes:
    return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


def _send(worker: _Worker, message: bytes) -> bool:
    """Send the pickled *message* to *worker*; return False if its pipe is gone."""
    try:
        worker.conn.send_bytes(message)
    except OSError:
        return False
    return True


def _lock(worker: _Worker) -> bool:
    """Take *worker*'s `Progress.lock`; False if a worker that died holding it keeps it."""
    return worker.progress.lock.acquire(timeout=LOCK_SECONDS)


def _indexed(name: str, map_index: int | None) -> str:
    """A task's name, with its index in a fan-out if it has one (`load[3]`)."""
    return name if map_index is None else f"{name}[{map_index}]"


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
