"""The Dask distributed backend: the same cells on a local cluster or on any Dask scheduler.

Without an address the backend starts a `distributed.LocalCluster` in a helper process, bound to
loopback (scheduler, workers, nannies and dashboards on 127.0.0.1, free ports), and ends it at
once when stopped or when the kernel dies; with an address it connects to that scheduler and,
when stopped, closes only its client.

- Calls travel by value (Dask pickles with cloudpickle), so cell-defined tasks work.
- Submissions are batched: a helper thread sends everything submitted since its last round in
  one `client.map`, and another fetches finished results in one `client.gather`.
- On the workers each call runs inside daglite's `BackendContext` and `SubmitContext`
  (`map_index`); daglite events, "task started" included, travel back through a Dask event
  topic and reach the session's event reporter with the Dask worker's name.

Importing this module does not import `distributed`; it fails with an install hint when
`distributed` is missing, so the entry point only lists `dask` where it can run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import pickle
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import InvalidStateError
from dataclasses import dataclass
from typing import IO
from typing import Any
from typing import ClassVar
from typing import cast

if importlib.util.find_spec("distributed") is None:
    raise ImportError("the dask backend needs distributed: pip install 'daglite-nb[dask]'")

import cloudpickle
from daglite.backends.base import Backend
from daglite.exceptions import BackendError
from daglite.plugins.reporters import EventReporter

from daglite_nb import _daglite
from daglite_nb._daglite import BackendContext
from daglite_nb._daglite import SubmitContext
from daglite_nb._events import run_as
from daglite_nb._events import unwrap
from daglite_nb._text import how_it_ended
from daglite_nb._worker import PARENT_POLL_SECONDS

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
"""The only interface a local cluster listens on."""

CONNECT_TIMEOUT_SECONDS = 10
"""How long connecting to a scheduler address may take before the backend gives up."""

START_STALL_SECONDS = 60.0
"""How long a local cluster's start may go without progress (its helper logging nothing)."""

_STALL_CHECK_SECONDS = 0.5
"""How often the kernel looks at the helper's log while its cluster starts."""

CLOSE_TIMEOUT_SECONDS = 0.5
"""How long closing the client may take (the kernel's whole shutdown budget is about 2 s)."""

_CLUSTER_CONFIG = {
    "distributed.scheduler.worker-saturation": "inf",
    "distributed.worker.multiprocessing-method": "forkserver",
}
"""Dask settings of the local cluster: flat fan-outs go to the workers at once (~3x faster);
workers fork from a server that has imported what they need (see `_start_forkserver`)."""

_WORKER_MODULES = ["distributed", "distributed.dashboard.worker", __name__]
"""What every worker of a local cluster imports (the dashboard's bokeh, ~0.4 s, included)."""


# region Options


@dataclass(frozen=True)
class DaskOptions:
    """Where the Dask backend runs.

    Attributes:
        address: Scheduler address (`tcp://host:port`) to connect to; `None` starts a local
            cluster.
        workers: Worker processes of the local cluster (default: daglite's
            `max_parallel_processes`, the number of CPUs unless set).
        threads: Threads per worker of the local cluster (default 1).
    """

    address: str | None = None
    workers: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.address is not None and not isinstance(self.address, str):
            raise ValueError(f"dask_address must be a string, got {self.address!r}.")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"dask_{name} must be a positive integer, got {value!r}.")
        if self.address is not None and (self.workers or self.threads):
            raise ValueError(
                "dask_workers and dask_threads size a local cluster; "
                "they cannot be combined with dask_address."
            )


# region Backend


class DaskBackend(Backend):
    """Runs tasks on a Dask cluster: a local one it owns, or an existing one it connects to.

    Bind options with `DaskBackend.configure(address=..., workers=..., threads=...)`, which
    returns a configured subclass; the class itself starts a local cluster with defaults.
    """

    name = "dask"
    options: ClassVar[DaskOptions] = DaskOptions()

    _client: Any
    _bridge: _Bridge
    _resources: contextlib.ExitStack

    @classmethod
    def configure(
        cls, *, address: str | None = None, workers: int | None = None, threads: int | None = None
    ) -> type[DaskBackend]:
        """Return a subclass of this backend bound to these options.

        Raises:
            ValueError: If a value is invalid, or an address is combined with a cluster size.
        """
        options = DaskOptions(address, workers, threads)
        return type(cls.__name__, (cls,), {"options": options, "__module__": cls.__module__})

    def _start(self, *, context: BackendContext) -> None:
        self._context = context
        self._resources = contextlib.ExitStack()
        try:
            host = self._start_cluster_host() if self.options.address is None else None
            from distributed import Client  # imported while a local cluster's helper starts

            address = self.options.address if host is None else host.wait_address()
            self._client = Client(address, timeout=CONNECT_TIMEOUT_SECONDS, set_as_default=False)
            self._resources.callback(self._client.close, timeout=CLOSE_TIMEOUT_SECONDS)
            self._bridge = _Bridge(self._client, self._setup(context))
            self._resources.callback(self._bridge.stop)
        except BaseException:
            self._resources.close()
            raise

    def _start_cluster_host(self) -> _ClusterHost:
        workers = self.options.workers or _daglite.backend_settings(self).max_parallel_processes
        host = _ClusterHost(workers, self.options.threads or 1)
        self._resources.callback(host.stop)
        return host

    def _setup(self, context: BackendContext) -> _WorkerSetup:
        setup_id = uuid.uuid4().hex
        session = _daglite.backend_session(self)
        reporter = session.event_reporter if session is not None else None
        topic = f"daglite-nb-{setup_id}" if reporter is not None else None
        return _WorkerSetup(setup_id, topic, context.to_dict(), reporter)

    def refresh_context(self) -> None:
        """Have the workers use daglite's context anew (the session gained plugins)."""
        setup = self._bridge.setup
        fresh = dataclasses.replace(setup, id=uuid.uuid4().hex, context=self._context.to_dict())
        self._bridge.setup = fresh  # a new id: workers build the context afresh

    def _submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        context: SubmitContext,
    ) -> Future[Any]:
        inner, record_id = unwrap(func)
        key = f"{_daglite.task_name(inner)}-{uuid.uuid4().hex}"
        call = _DaskCall(self._bridge.setup, context.map_index, record_id, inner, args, kwargs)
        return self._bridge.submit(key, call)

    def _stop(self) -> None:
        self._resources.close()

    @property
    def client(self) -> Any:
        """The backend's `distributed.Client` (for Dask collections on the same cluster)."""
        return self._client

    def describe(self) -> dict[str, str]:
        """What `%daglite status` and the panel show: dashboard link, workers, threads, where."""
        threads = self._client.nthreads()
        return {
            "dashboard": self._client.dashboard_link,
            "workers": str(len(threads)),
            "threads": str(sum(threads.values())),
            "scheduler": self._client.scheduler.address,
            "cluster": "connected" if self.options.address else "local",
        }


# region Local cluster


class _ClusterHost:
    """A `distributed.LocalCluster` run by a helper process in a process group of its own.

    Run inside the kernel, its worker processes would share the kernel's process group: the
    kernel's interrupt (SIGINT to the group) would reach them, and ipykernel's shutdown, which
    terminates the group's processes before exiting, would wait seconds on multiprocessing's
    resource tracker (it ignores SIGTERM), past jupyter_client's deadline, so the kernel
    would be killed before its teardown runs.

    Every process of the cluster (the helper, its workers, multiprocessing's forkserver and
    resource tracker) is in the helper's group, so one SIGKILL to the group ends them all at
    once: from `stop`, or from the helper itself as soon as the kernel is gone, however it went.
    """

    def __init__(self, workers: int, threads: int) -> None:
        """Start the helper; `wait_address` waits for its cluster."""
        serve_args = (os.getpid(), workers, threads)
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import _serve; _serve{serve_args}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},  # the kernel's modules
        )

    def wait_address(self) -> str:
        """Wait until the cluster runs; return its scheduler's address.

        A busy machine starts a cluster slower, so the start as a whole has no time limit: it
        fails when the helper exits, or when it has logged nothing for `START_STALL_SECONDS`
        (it logs each step: scheduler, nannies, every worker that registers).

        Raises:
            BackendError: If the cluster did not start: why, in a sentence on the first line of
                the message, and the helper's log on the next lines.
        """
        ready = cast(IO[bytes], self._process.stdout)  # a pipe: Popen(stdout=PIPE)
        logged, since = -1, time.monotonic()
        while not select.select([ready], [], [], _STALL_CHECK_SECONDS)[0]:
            size = os.fstat(self._log.fileno()).st_size
            if size != logged:
                logged, since = size, time.monotonic()
            elif time.monotonic() - since > START_STALL_SECONDS:
                stalled = f"its helper logged nothing for {START_STALL_SECONDS:g} s"
                raise BackendError(
                    f"The local Dask cluster did not start: {stalled}.\n{self._log_tail()}"
                )
        line = ready.readline()  # type: ignore[union-attr]
        if not line:
            ended = how_it_ended(self._process.wait())
            raise BackendError(
                f"The local Dask cluster did not start: its helper {ended}.\n{self._log_tail()}"
            )
        return json.loads(line)["address"]

    def stop(self) -> None:
        """End the cluster at once: nothing on it is needed any more."""
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._process.stdout.close()  # type: ignore[union-attr]
        self._log.close()

    def _log_tail(self, size: int = 4000) -> str:
        self._log.seek(0)
        tail = self._log.read().decode(errors="replace")[-size:]
        return f"Its log ends:\n{tail}" if tail else "It logged nothing."


def _serve(parent_pid: int, workers: int, threads: int) -> None:
    """Run a local cluster until the kernel *parent_pid* is gone (the helper's main).

    The scheduler address goes to the kernel on stdout; everything else the helper and its
    workers print goes to stderr, the log the kernel reads while the cluster starts. The
    helper never stops by itself while the kernel lives: the kernel ends its process group.
    """
    ready = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    watch = threading.Thread(target=_end_group_when_orphaned, args=(parent_pid,), daemon=True)
    watch.start()  # the kernel may die while the cluster starts
    _start_forkserver()
    import dask
    from distributed import LocalCluster

    with dask.config.set(_CLUSTER_CONFIG):
        cluster = LocalCluster(
            silence_logs=logging.INFO,  # each step it logs is progress to the kernel
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            host=LOOPBACK,
            dashboard_address=f"{LOOPBACK}:0",
            worker_dashboard_address=f"{LOOPBACK}:0",
        )
    with ready:
        ready.write(json.dumps({"address": cluster.scheduler_address}) + "\n")
    watch.join()


def _end_group_when_orphaned(parent_pid: int) -> None:
    """SIGKILL this process group as soon as *parent_pid* is no longer this process's parent."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os.killpg(0, signal.SIGKILL)


def _start_forkserver() -> None:
    """Start the server the workers fork from, importing `_WORKER_MODULES`.

    Started before this process imports `distributed`, it imports them meanwhile, and every
    worker starts as a copy of it instead of a fresh interpreter that imports them all
    (Dask's default). A module that cannot be imported is skipped.
    """
    import multiprocessing.forkserver

    multiprocessing.set_forkserver_preload(_WORKER_MODULES)
    multiprocessing.forkserver.ensure_running()


# region Client side


class _DaskFuture(Future):
    """The `concurrent.futures.Future` of one Dask task; cancelling it cancels the Dask task."""

    def __init__(self, key: str, bridge: _Bridge) -> None:
        super().__init__()
        self.key = key
        self.remote: Any = None  # the distributed.Future, set by the submitting thread
        self._bridge = bridge

    def cancel(self) -> bool:
        """Cancel the task if it has not started; return whether it was cancelled."""
        if not super().cancel():
            return False
        self._bridge.cancel(self)
        return True


class _Bridge:
    """Moves calls to Dask and results back, in batches, on two helper threads.

    The submitting thread sends every call queued since its last round in one `client.map`
    (and cancels in one `client.cancel`); the collecting thread gathers every finished result
    in one `client.gather`. Worker events arrive on the client's event loop through the topic.
    No exception ends a thread: a call that cannot be sent, or whose batch fails, fails alone.
    """

    def __init__(self, client: Any, setup: _WorkerSetup) -> None:
        self.setup = setup
        self._client = client
        self._commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._live: dict[str, _DaskFuture] = {}
        if setup.topic is not None:
            client.subscribe_topic(setup.topic, self._on_event)
        logging.getLogger("distributed.protocol.pickle").addFilter(_not_from_a_submit_thread)
        loops = {
            "submit": (self._commands, self._run_commands),
            "collect": (self._finished, self._collect),
        }
        self._threads = [
            threading.Thread(target=self._serve, args=loop, name=f"{_THREAD}-{name}", daemon=True)
            for name, loop in loops.items()
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: str, call: _DaskCall) -> _DaskFuture:
        """Queue *call* under the Dask *key*; return its Future."""
        future = _DaskFuture(key, self)
        self._live[key] = future
        self._commands.put((future, call))
        return future

    def cancel(self, future: _DaskFuture) -> None:
        """Cancel the Dask task of *future* (already cancelled itself)."""
        self._commands.put(future)

    def stop(self) -> None:
        """Stop both threads; fail whatever has not finished."""
        self._commands.put(None)
        self._finished.put(None)
        for thread in self._threads:
            thread.join(timeout=0.1)  # idle, or finishing one batch; daemons either way
        if self.setup.topic is not None:
            self._client.unsubscribe_topic(self.setup.topic)
        error = BackendError("The dask backend stopped before this task finished.")
        for future in list(self._live.values()):
            if not future.cancel():
                _fail(future, error)
        self._live.clear()

    def _serve(self, source: queue.SimpleQueue[Any], handle: Callable[[list[Any]], None]) -> None:
        """Hand each batch of *source* to *handle* until the end marker (`None`) comes.

        Whatever *handle* raises fails the batch's calls with the reason, and the loop goes on.
        """
        while True:
            batch = _drain(source)
            items = [item for item in batch if item is not None]
            try:
                handle(items)
            except Exception as exc:
                logger.exception("daglite-nb's dask bridge failed on a batch")
                self._fail_batch(
                    items, BackendError(f"The dask backend failed on this task: {exc!r}.")
                )
            if None in batch:
                return

    def _fail_batch(self, items: list[Any], error: BackendError) -> None:
        """Fail the calls of *items*: queued calls, cancelled futures or finished remotes."""
        for item in items:
            future = self._live.pop((item[0] if isinstance(item, tuple) else item).key, None)
            if future is not None:
                _fail(future, error)

    # region Submitting

    def _run_commands(self, commands: list[Any]) -> None:
        self._send([c for c in commands if isinstance(c, tuple)])
        cancelled = [c.remote for c in commands if isinstance(c, _DaskFuture) and c.remote]
        if cancelled:
            self._client.cancel(cancelled)

    def _send(self, queued: list[tuple[_DaskFuture, _DaskCall]]) -> None:
        calls = []
        for future, call in queued:
            if future.cancelled():
                self._live.pop(future.key, None)
            else:
                calls.append((future, call))
        try:
            self._map(calls)
        except Exception:  # one call Dask cannot serialize fails its whole batch: send the rest
            self._map(self._serializable(calls))

    def _map(self, calls: list[tuple[_DaskFuture, _DaskCall]]) -> None:
        if not calls:
            return
        remotes = self._client.map(
            _DaskCall.run, [call for _, call in calls], key=[f.key for f, _ in calls], pure=False
        )
        for (future, _), remote in zip(calls, remotes, strict=True):
            future.remote = remote
            remote.add_done_callback(self._finished.put)
            if future.cancelled():  # cancelled while being sent: its command came too early
                self._client.cancel([remote])

    def _serializable(
        self, calls: list[tuple[_DaskFuture, _DaskCall]]
    ) -> list[tuple[_DaskFuture, _DaskCall]]:
        """Return the calls Dask can serialize (with cloudpickle); fail the others with why."""
        serializable = []
        for future, call in calls:
            try:
                cloudpickle.dumps(call)
            except Exception as exc:
                self._live.pop(future.key, None)
                name = _daglite.task_name(call.func)
                reason = str(exc).rstrip(".")
                _fail(future, TypeError(f"Dask cannot send {name}(...) to its workers: {reason}."))
            else:
                serializable.append((future, call))
        return serializable

    # region Collecting

    def _collect(self, remotes: list[Any]) -> None:
        results = self._gather([remote for remote in remotes if remote.status == "finished"])
        for remote in remotes:
            future = self._live.pop(remote.key, None)
            if future is not None:
                future.remote = None  # the cluster may forget the task and its result now
                _settle(future, remote, results)

    def _gather(self, finished: list[Any]) -> dict[str, Any]:
        """Return the results of the *finished* remotes by key (`_Unfetched` for those lost)."""
        try:
            return dict(zip([r.key for r in finished], self._client.gather(finished), strict=True))
        except Exception:  # a result lost with its worker, or not serializable: fetch each alone
            return {remote.key: self._gather_one(remote) for remote in finished}

    def _gather_one(self, remote: Any) -> Any:
        try:
            return self._client.gather(remote)
        except Exception as exc:
            name = remote.key.rpartition("-")[0]
            reason = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(".")
            return _Unfetched(
                BackendError(f"Dask could not return the result of {name}(...): {reason}.")
            )

    # region Events

    def _on_event(self, event: tuple[float, bytes]) -> None:
        """Handle one worker event (on the client's event loop, before the task's result).

        Nothing may escape: an exception would end the client's stream from the scheduler.
        """
        try:
            key, event_type, data = pickle.loads(event[1])
            future = self._live.get(key)
            if future is not None and not (future.running() or future.done()):
                with contextlib.suppress(RuntimeError):  # settled meanwhile (stop)
                    future.set_running_or_notify_cancel()
            self.setup.reporter.report(event_type, data)
        except Exception:
            logger.exception("daglite-nb could not handle a Dask worker event")


_THREAD = "daglite-nb-dask"
"""The prefix of the bridge's thread names."""


def _not_from_a_submit_thread(record: logging.LogRecord) -> bool:
    """Drop Dask's "Failed to serialize" records from a bridge's submitting thread.

    The call's future carries that error, and a log record printed from a background thread
    would land in whichever cell runs at that moment.
    """
    return record.threadName != f"{_THREAD}-submit"


def _drain(source: queue.SimpleQueue[Any]) -> list[Any]:
    """Wait for one item of *source*, then take every item already there."""
    items = [source.get()]
    while True:
        try:
            items.append(source.get_nowait())
        except queue.Empty:
            return items


def _fail(future: Future[Any], error: BaseException) -> None:
    """Fail *future* with *error* unless it has settled (or been cancelled) meanwhile."""
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)


@dataclass(frozen=True)
class _Unfetched:
    """The result of a finished Dask task that could not be brought back, and why."""

    error: BaseException


def _settle(future: _DaskFuture, remote: Any, results: dict[str, Any]) -> None:
    """Give *future* the outcome of its finished Dask task *remote*.

    Args:
        future: The task's Future (it may have been cancelled meanwhile).
        remote: The task's `distributed.Future`, done.
        results: Gathered results (or `_Unfetched`) of the finished tasks, by key.
    """
    with contextlib.suppress(InvalidStateError):
        if remote.key in results:
            outcome = results[remote.key]
            if isinstance(outcome, _Unfetched):
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome)
        elif remote.status == "error":
            future.set_exception(remote.exception().with_traceback(remote.traceback()))
        elif not future.cancel():
            future.set_exception(BackendError(f"Dask cancelled task {remote.key!r}."))


# region Worker side


@dataclass(frozen=True)
class _WorkerSetup:
    """What workers need to run this backend's calls in daglite's context.

    Attributes:
        id: Identifies this backend's context in a worker's cache.
        topic: Dask event topic the workers report daglite events to (`None`: no reporting).
        context: daglite's serialized `BackendContext` (plugins, stores).
        reporter: The session's event reporter (client side only; never sent).
    """

    id: str
    topic: str | None
    context: dict[str, Any]
    reporter: Any = dataclasses.field(default=None, compare=False)

    def __reduce__(self) -> Any:
        return (_WorkerSetup, (self.id, self.topic, self.context))


class _DaskCall:
    """One call as a Dask task: runs *func* inside daglite's worker context."""

    __slots__ = ("setup", "map_index", "record_id", "func", "args", "kwargs")

    def __init__(
        self,
        setup: _WorkerSetup,
        map_index: int | None,
        record_id: int | None,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.setup = setup
        self.map_index = map_index
        self.record_id = record_id
        self.func = func
        self.args = args
        self.kwargs = kwargs

    def run(self) -> Any:
        """Run the call on a Dask worker (the task function that `client.map` sends)."""
        from distributed import get_worker

        worker = get_worker()
        context = _worker_context(self.setup, worker, worker.get_current_task())
        with context, SubmitContext(map_index=self.map_index):
            return run_as(self.record_id, self.func, *self.args, **self.kwargs)


_contexts: dict[str, BackendContext] = {}
_contexts_lock = threading.Lock()


def _worker_context(setup: _WorkerSetup, worker: Any, key: Any) -> BackendContext:
    """A fresh daglite `BackendContext` for one call of the task *key* on *worker*."""
    with _contexts_lock:
        base = _contexts.get(setup.id)
        if base is None:
            base = _contexts[setup.id] = _daglite.saving_worker_context(setup.context)
    reporter = _TopicReporter(worker, setup.topic, key) if setup.topic is not None else None
    return _daglite.with_event_reporter(base, reporter)


class _TopicReporter(EventReporter):
    """daglite event reporter of a Dask worker: sends events to the client through a topic."""

    def __init__(self, worker: Any, topic: str, key: str) -> None:
        self._worker = worker
        self._topic = topic
        self._key = key

    @property
    def is_direct(self) -> bool:  # noqa: D102
        return False

    def report(self, event_type: Any, event_data: dict[str, Any]) -> None:
        """Send one event to the client."""
        try:
            message = pickle.dumps((self._key, event_type, event_data), pickle.HIGHEST_PROTOCOL)
            self._worker.log_event(self._topic, message)
        except Exception:  # like daglite's reporters: a lost event must not fail the task
            logger.exception("daglite-nb could not report event %r", event_type)
