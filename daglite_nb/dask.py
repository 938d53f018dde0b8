"""The Dask distributed backend: the same cells on a local cluster or on any Dask scheduler.

Without an address the backend starts a `distributed.LocalCluster` bound to loopback (scheduler,
workers, nannies and dashboards on 127.0.0.1, free ports); with one it connects to that
scheduler and, when stopped, closes only its client.

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
import logging
import os
import pickle
import queue
import signal
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from typing import ClassVar

if importlib.util.find_spec("distributed") is None:
    raise ImportError("the dask backend needs distributed: pip install 'daglite-nb[dask]'")

from daglite._context import BackendContext
from daglite._context import SubmitContext
from daglite.backends.base import Backend
from daglite.datasets.reporters import DirectDatasetReporter
from daglite.exceptions import BackendError
from daglite.plugins.reporters import EventReporter

from daglite_nb import _daglite
from daglite_nb._worker import TASK_STARTED
from daglite_nb._worker import unwrap

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
"""The only interface a local cluster listens on."""

CONNECT_TIMEOUT_SECONDS = 10
"""How long connecting to a scheduler address may take before the backend gives up."""

STOP_TIMEOUT_SECONDS = 1.5
"""How long closing the client and the local cluster may take (the kernel allows about 2 s)."""

_SATURATION = {"distributed.scheduler.worker-saturation": "inf"}
"""Scheduler setting of the local cluster: flat fan-outs go to the workers at once (~3x faster)."""


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
    _cluster: Any
    _bridge: _Bridge

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
        self._client, self._cluster = self._connect()
        try:
            self._bridge = _Bridge(self._client, self._setup(context))
        except BaseException:
            self._close()
            raise

    def _connect(self) -> tuple[Any, Any]:
        from distributed import Client

        if self.options.address is not None:
            client = Client(
                self.options.address, timeout=CONNECT_TIMEOUT_SECONDS, set_as_default=False
            )
            return client, None
        cluster = self._local_cluster()
        try:
            return Client(cluster, set_as_default=False), cluster
        except BaseException:
            cluster.close(timeout=STOP_TIMEOUT_SECONDS)
            raise

    def _local_cluster(self) -> Any:
        import dask
        from distributed import LocalCluster

        with dask.config.set(_SATURATION):
            return LocalCluster(
                n_workers=self.options.workers or self._settings.max_parallel_processes,
                threads_per_worker=self.options.threads or 1,
                processes=True,
                host=LOOPBACK,
                dashboard_address=f"{LOOPBACK}:0",
                worker_dashboard_address=f"{LOOPBACK}:0",
                preload=[__name__],
            )

    def _setup(self, context: BackendContext) -> _WorkerSetup:
        setup_id = uuid.uuid4().hex
        reporter = self._session.event_reporter if self._session is not None else None
        topic = f"daglite-nb-{setup_id}" if reporter is not None else None
        return _WorkerSetup(setup_id, topic, context.to_dict(), reporter)

    def _submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        context: SubmitContext,
    ) -> Future[Any]:
        key = f"{_daglite.task_name(unwrap(func)[0])}-{uuid.uuid4().hex}"
        call = _DaskCall(self._bridge.setup, context.map_index, func, args, kwargs)
        return self._bridge.submit(key, call)

    def _stop(self) -> None:
        self._bridge.stop()
        self._close()

    def _close(self) -> None:
        self._client.close(timeout=STOP_TIMEOUT_SECONDS)
        if self._cluster is not None:
            # A graceful close retires each worker and takes 0.3 to 2 s on a busy machine;
            # nothing on the workers is needed any more, so end their processes first.
            self._cluster.sync(_end_worker_processes, list(self._cluster.workers.values()))
            self._cluster.close(timeout=STOP_TIMEOUT_SECONDS)

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
            "cluster": "local" if self._cluster is not None else "connected",
        }


async def _end_worker_processes(nannies: list[Any]) -> None:
    """Terminate the worker processes of a local cluster, telling their nannies not to restart."""
    for nanny in nannies:
        nanny.close_gracefully()
        if nanny.pid:
            os.kill(nanny.pid, signal.SIGTERM)


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
    """

    def __init__(self, client: Any, setup: _WorkerSetup) -> None:
        self.setup = setup
        self._client = client
        self._commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._live: dict[str, _DaskFuture] = {}
        if setup.topic is not None:
            client.subscribe_topic(setup.topic, self._on_event)
        self._threads = [
            threading.Thread(target=target, name=f"daglite-nb-dask-{name}", daemon=True)
            for name, target in (("submit", self._submit_loop), ("collect", self._collect_loop))
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
            thread.join(timeout=STOP_TIMEOUT_SECONDS / 2)
        if self.setup.topic is not None:
            self._client.unsubscribe_topic(self.setup.topic)
        error = BackendError("The dask backend stopped before this task finished.")
        for future in list(self._live.values()):
            if not future.cancel():
                _settle(future.set_exception, error)
        self._live.clear()

    # region Submitting

    def _submit_loop(self) -> None:
        while True:
            commands = _drain(self._commands)
            self._send([c for c in commands if isinstance(c, tuple)])
            cancelled = [c.remote for c in commands if isinstance(c, _DaskFuture) and c.remote]
            if cancelled:
                self._client.cancel(cancelled)
            if None in commands:
                return

    def _send(self, calls: list[tuple[_DaskFuture, _DaskCall]]) -> None:
        for future, _ in calls:
            if future.cancelled():
                self._live.pop(future.key, None)
        calls = [(future, call) for future, call in calls if not future.cancelled()]
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

    # region Collecting

    def _collect_loop(self) -> None:
        while True:
            remotes = _drain(self._finished)
            self._collect([r for r in remotes if r is not None])
            if None in remotes:
                return

    def _collect(self, remotes: list[Any]) -> None:
        results = self._gather([r for r in remotes if r.status == "finished"])
        for remote in remotes:
            future = self._live.pop(remote.key, None)
            if future is None:
                continue
            if remote.key in results:
                _settle(future.set_result, results[remote.key])
            elif remote.status == "error":
                error = remote.exception()
                _settle(future.set_exception, error.with_traceback(remote.traceback()))
            elif not future.cancel():
                _settle(future.set_exception, BackendError(f"Dask lost task {remote.key!r}."))

    def _gather(self, remotes: list[Any]) -> dict[str, Any]:
        try:
            values = self._client.gather(remotes)
        except Exception:  # results lost with a worker, or the client closing: fail those
            logger.exception("daglite-nb could not gather %d Dask results", len(remotes))
            return {}
        return {remote.key: value for remote, value in zip(remotes, values, strict=True)}

    # region Events

    def _on_event(self, event: tuple[float, bytes]) -> None:
        """Handle one worker event (on the client's event loop, before the task's result)."""
        key, event_type, data = pickle.loads(event[1])
        future = self._live.get(key)
        if future is not None:
            with contextlib.suppress(RuntimeError):  # settled meanwhile (stop)
                future.set_running_or_notify_cancel()
        self.setup.reporter.report(event_type, data)


def _drain(source: queue.SimpleQueue[Any]) -> list[Any]:
    """Wait for one item of *source*, then take every item already there."""
    items = [source.get()]
    while True:
        try:
            items.append(source.get_nowait())
        except queue.Empty:
            return items


def _settle(setter: Callable[[Any], None], value: Any) -> None:
    """Set a Future's outcome unless it already has one (cancelled meanwhile, or stopped)."""
    try:
        setter(value)
    except Exception:  # concurrent.futures.InvalidStateError
        pass


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

    __slots__ = ("setup", "map_index", "func", "args", "kwargs")

    def __init__(
        self,
        setup: _WorkerSetup,
        map_index: int | None,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.setup = setup
        self.map_index = map_index
        self.func = func
        self.args = args
        self.kwargs = kwargs

    def run(self) -> Any:
        """Run the call on a Dask worker (the task function that `client.map` sends)."""
        from distributed import get_worker

        worker = get_worker()
        context = _worker_context(self.setup, worker, worker.get_current_task())
        with context, SubmitContext(map_index=self.map_index):
            return self.func(*self.args, **self.kwargs)


_contexts: dict[str, BackendContext] = {}
_contexts_lock = threading.Lock()


def _worker_context(setup: _WorkerSetup, worker: Any, key: str) -> BackendContext:
    """A fresh daglite `BackendContext` for one call of the task *key* on *worker*."""
    with _contexts_lock:
        base = _contexts.get(setup.id)
        if base is None:
            # Workers save datasets themselves: the store must be reachable from them.
            reporter = DirectDatasetReporter()
            base = BackendContext.from_dict(dict(setup.context), dataset_reporter=reporter)
            _contexts[setup.id] = base
    reporter = _TopicReporter(worker, setup.topic, key) if setup.topic is not None else None
    return dataclasses.replace(base, event_reporter=reporter)


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
        """Send one event; "task started" events carry the Dask worker's name."""
        if event_type == TASK_STARTED:
            event_data = {**event_data, "worker": str(self._worker.name)}
        try:
            message = pickle.dumps((self._key, event_type, event_data), pickle.HIGHEST_PROTOCOL)
            self._worker.log_event(self._topic, message)
        except Exception:  # like daglite's reporters: a lost event must not fail the task
            logger.exception("daglite-nb could not report event %r", event_type)


def dask_setup(worker: Any) -> None:
    """Dask preload hook of the local cluster's workers: ignore the kernel's SIGINT.

    The kernel's interrupt reaches its whole process group; the coordinator cancels pending
    tasks instead, and the workers keep running.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
