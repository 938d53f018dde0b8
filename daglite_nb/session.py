"""The kernel-scoped daglite session: one stateful holder, its context keeping and teardown.

daglite keeps its session in ContextVars, which a notebook loses between some cells (cells
with top-level `await` run in a copied Context) and which cannot be exited from another
Context. So the session is entered inside a private `contextvars.Context`, its values are
copied into every cell's context (see `daglite_nb._cells`), and it is exited in that same
private Context — from a cell, from `%unload_ext`, or at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextvars
import dataclasses
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import wait
from dataclasses import dataclass
from typing import Any
from typing import cast

import daglite
from daglite.backends.base import Backend
from IPython import get_ipython
from IPython.core.error import UsageError

from daglite_nb import _daglite
from daglite_nb._calls import backend_callable
from daglite_nb._events import events
from daglite_nb._options import BACKEND_SETTINGS
from daglite_nb._options import SessionOptions
from daglite_nb._text import call_text
from daglite_nb._text import excerpt
from daglite_nb._text import reason
from daglite_nb._text import shorten
from daglite_nb.backends import is_tracked
from daglite_nb.backends import registry
from daglite_nb.backends import tracked_backend
from daglite_nb.futures import LiveFuture
from daglite_nb.futures import LiveFutureGroup
from daglite_nb.model import Call
from daglite_nb.model import Group
from daglite_nb.tracking import Tracker

STOP_GRACE_SECONDS = 1.0
"""How long `stop` lets running tasks finish before their backends are stopped under them."""

EXIT_GRACE_SECONDS = 0.3
"""The same at interpreter exit, where the kernel's whole shutdown budget is about 2 s."""


# region Status


@dataclass(frozen=True)
class SessionStatus:
    """A snapshot of the kernel's session, as `%daglite status` shows it."""

    state: str
    session_id: str = ""
    backend: str | None = None
    uptime: float = 0.0
    started: tuple[str, ...] = ()
    details: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    """What started backends tell about themselves (`describe()`), e.g. a Dask dashboard."""

    def __str__(self) -> str:
        if self.state == "none":
            return "daglite session: none (start one with %daglite start)"
        lines = [
            f"daglite session {self.session_id}: {self.state}",
            f"  backend:  {self.backend}",
            f"  uptime:   {self.uptime:.1f} s",
            f"  started:  {', '.join(self.started) or '-'}",
        ]
        for name, facts in self.details.items():
            lines.append(f"  {name}:".ljust(12) + ", ".join(f"{k} {v}" for k, v in facts.items()))
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


# region Session


class NotebookSession:
    """One daglite session that lives as long as the kernel (or until `stop`)."""

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.session_id = uuid.uuid4().hex[:8]
        self._lock = threading.RLock()
        self.tracker = Tracker(on_show=_show if options.progress else None)
        self._echo = _echo(options)
        if self._echo is not None:
            self.tracker.echo = self._echo.lines
        self._last_callable: tuple[Any, Any, str] = (None, None, "")
        self._closed = False
        self._opened_at = time.monotonic()
        self._context = contextvars.Context()
        self._cm = daglite.session(
            backend=registry.resolve(options.backend).name,
            **options.stores(),
            settings=options.settings(),
            plugins=list(options.plugins),
        )
        events()  # daglite's sessions copy the global plugins as they open
        self._daglite = self._context.run(self._cm.__enter__)
        self._manager = _daglite.active_manager(self._context)
        _daglite.route_gets(self._manager, self._get_backend)
        try:
            for entry in registry.entries():
                self.add_backend(entry.name, entry.backend_class)
        except BaseException:
            self._context.run(self._cm.__exit__, None, None, None)
            raise
        self._stop_serving_threads = _daglite.serve_threads(self._enter_thread)
        events().tracker, events().session = self.tracker, self._daglite
        self.tracker.workflow_of = events().workflow_session

    # region Backends

    @property
    def backend(self) -> str:
        """The default backend of later cells."""
        return cast(str, self._daglite.backend)  # named when the session opens, never unset

    @property
    def closed(self) -> bool:
        """Whether the session has been stopped."""
        return self._closed

    def add_backend(self, name: str, backend_class: type) -> None:
        """Make *backend_class* available to this session as *name* (aliases follow).

        Session options meant for it (`dask_*` for "dask") reach it through its `configure`.
        """
        options = self.options.backend_options(name)
        if options:
            try:
                backend_class = cast(Any, backend_class).configure(**options)
            except (AttributeError, TypeError, ValueError) as exc:
                raise UsageError(
                    f"Backend {name!r} does not take these options: {reason(exc)}."
                ) from None
        self._manager.register(name, tracked_backend(backend_class, self.tracker, name))

    def use(self, name: str) -> str:
        """Start backend *name* if needed and make it the default; return its canonical name.

        Raises:
            UsageError: If the name is unknown or the backend cannot start; the previous
                default stays in place.
        """
        entry = registry.resolve(name)
        with self._lock:
            self.backend_instance(entry.name)
            _daglite.set_default_backend(self._daglite, entry.name)
        changed()
        return entry.name

    def configure(self, **settings: Any) -> None:
        """Change backend settings (`max_threads`, `max_processes`, `dask_*`) from now on.

        `None` means the default. A backend already running keeps its settings until
        `restart_backend`.
        """
        unknown = set(settings) - set(BACKEND_SETTINGS)
        if unknown:
            raise UsageError(
                f"Unknown backend setting {excerpt(sorted(unknown)[0])}; "
                f"valid settings: {', '.join(BACKEND_SETTINGS)}."
            )
        fields = {name: getattr(self.options, name) for name in BACKEND_SETTINGS}
        options = SessionOptions.from_kwargs(**{**fields, **settings, "backend": self.backend})
        with self._lock:
            self.options = dataclasses.replace(self.options, **{**fields, **settings})
            _daglite.set_settings(self._daglite, options.settings())
            for entry in registry.entries():
                self.add_backend(entry.name, entry.backend_class)

    @property
    def worker_counts(self) -> tuple[int, int]:
        """Thread and process pool sizes that backends started from now on get."""
        settings = self._daglite.settings
        return settings.max_backend_threads, settings.max_parallel_processes

    def restart_backend(self, name: str | None = None) -> str:
        """Stop backend *name* (default: the session's) and start it again.

        Its pending tasks are cancelled; the new instance uses the current settings (a process
        pool replaces lost workers by itself; a restart applies new settings, or frees a backend
        whose tasks hang).
        """
        entry = registry.resolve(name or self.backend)
        with self._lock:
            self._require_open()
            stale = _daglite.forget_backend(self._manager, entry.name)
            if stale is not None:
                self.tracker.cancel_pending(backend=entry.name)
                stale.stop()
            self.backend_instance(entry.name)
        changed()
        return entry.name

    def backend_instance(self, name: str | None = None) -> Backend:
        """Return backend *name* (default: the session's), started.

        Raises:
            UsageError: If the name is unknown or the backend cannot start.
        """
        canonical = self.backend if name is None else registry.resolve(name).name
        started = _daglite.started_backend(self._manager, canonical)
        if started is not None and not self._closed:
            return started
        with self._lock:
            self._require_open()
            try:
                return self._context.run(self._manager.get, canonical)
            except Exception as exc:
                raise UsageError(_start_failure(canonical, exc)) from None

    def _get_backend(self, get: Callable[[str | None], Backend], name: str | None) -> Backend:
        """Every backend lookup of the session's manager: by canonical name, while open."""
        self._require_open()
        self.adopt_backends()
        return get(_canonical_name(name) if name else name)

    def _refresh_worker_contexts(self) -> None:
        # Workers elsewhere got the session's plugins when their backend started.
        for backend in _daglite.started_backends(self._manager).values():
            refresh = getattr(backend, "refresh_context", None)
            if callable(refresh):
                refresh()

    def adopt_backends(self) -> None:
        """Take in backends registered with daglite's `BackendManager.register` directly.

        They become usable by name like any other (`%daglite use`, the panel) and their calls
        are tracked like any other's.
        """
        for name, backend_class in _daglite.backend_types(self._manager).items():
            if not is_tracked(backend_class) and not registry.knows(name):
                registry.register(name, backend_class, origin="BackendManager.register")
                self.add_backend(name, backend_class)
                changed()

    def _enter_thread(self) -> Any:
        """Make this session the daglite session of the calling thread; return its manager."""
        _daglite.apply_session(self._daglite, self._manager)
        return self._manager

    def started_backends(self) -> tuple[str, ...]:
        """Names of the backends this session has started."""
        return tuple(_daglite.started_backends(self._manager))

    # region Cells

    # region Submitting

    def submit(
        self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], backend: str | None
    ) -> LiveFuture[Any]:
        """Submit one call of *func* to *backend* (default: the session's)."""
        call, name = self._backend_callable(func, "submit")
        submit = self.backend_instance(backend).submit_direct  # type: ignore[attr-defined]
        text = call_text(name, args, kwargs)
        return self._in_session(submit, call, args, kwargs, None, None, text)

    def map(
        self, func: Any, iterables: tuple[Any, ...], backend: str | None
    ) -> LiveFutureGroup[Any]:
        """Submit *func* once per zipped item of *iterables*; return the futures as one group.

        Raises:
            UsageError: If *iterables* is empty or one of them is not iterable.
        """
        if not iterables:
            raise UsageError("map takes a task and its arguments' iterables: map(task, [1, 2, 3]).")
        items = zip(*map(_iterator, iterables), strict=False)
        call, name = self._backend_callable(func, "map")
        instance = self.backend_instance(backend)
        group = self.tracker.group("dnb.map", name, instance.name)
        return self._in_session(self._map_direct, instance, call, items, group)

    def _map_direct(
        self, instance: Any, call: Any, items: Any, group: Group
    ) -> LiveFutureGroup[Any]:
        submit = instance.submit_direct
        futures = [submit(call, args, {}, index, group) for index, args in enumerate(items)]
        self.tracker.close(group)
        return LiveFutureGroup(group, futures)

    def _backend_callable(self, func: Any, verb: str) -> tuple[Any, str]:
        # Loops submit one callable many times: turn it into a backend callable (and find its
        # task's name) once.
        last = self._last_callable
        if last[0] is not func:
            call = backend_callable(func, verb)
            last = self._last_callable = (func, call, _daglite.task_name(call))
        return last[1], last[2]

    def _in_session(self, func: Any, *args: Any) -> Any:
        # Submissions from any thread (user threads, widget callbacks) carry the session,
        # so workers find daglite's reporter; a copy, as threads cannot share one Context.
        if _daglite.active_session() is self._daglite:
            return func(*args)
        return self._context.copy().run(func, *args)

    # region Cells

    def enter_cell(self, cell: int | None = None) -> None:
        """Make this session the active daglite session of the current context; new cell.

        Plugins and backends registered with daglite itself since the last cell join it.
        """
        _daglite.apply_session(self._daglite, self._manager)
        self.tracker.cell = cell
        if self._echo is not None:
            self._echo.cell_started(cell)
        if _daglite.sync_plugins(self._daglite):
            self._refresh_worker_contexts()
        self.adopt_backends()

    def cancel_cell(self) -> int:
        """Cancel the pending tasks the current cell submitted; return how many were cancelled."""
        return self.tracker.cancel_pending(self.tracker.cell)

    def cell_ended(self) -> None:
        """The current cell ended: its fan-outs are complete."""
        tracker = self.tracker
        if self._echo is not None:
            self._echo.cell_ended(any(c.cell == tracker.cell for c in list(tracker.live.values())))
        tracker.cell_ended()

    # region Status and teardown

    def __repr__(self) -> str:
        state = "stopped" if self._closed else "open"
        return f"<daglite-nb session, {state}, backend {self.backend!r}>"

    def status(self) -> SessionStatus:
        """Return a snapshot of this session."""
        return SessionStatus(
            state="stopped" if self._closed else "open",
            session_id=self.session_id,
            backend=self.backend,
            uptime=time.monotonic() - self._opened_at,
            started=self.started_backends(),
            details=self._describe_backends(),
        )

    def _describe_backends(self) -> dict[str, dict[str, str]]:
        details = {}
        for name, backend in _daglite.started_backends(self._manager).items():
            describe = getattr(backend, "describe", None)
            if callable(describe):
                try:
                    details[name] = {str(k): str(v) for k, v in describe().items()}
                except Exception as exc:  # a backend's self-description must not break status
                    details[name] = {"error": str(exc)}
        return details

    def close(self, grace: float = STOP_GRACE_SECONDS, reason: str = "the session stopped") -> None:
        """Cancel pending tasks, give running ones *grace* seconds, then stop every backend.

        Every call that has not ended by then gets its final word, *reason*, and every widget
        shows it before the session is gone.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop_serving_threads()
        tracker = self.tracker
        tracker.cancel_pending(reason=reason)
        wait(tracker.live_futures(), timeout=grace)
        tracker.shut(reason)
        _flush_widgets()
        if events().tracker is tracker:
            events().tracker = events().session = None
        self._context.run(self._cm.__exit__, None, None, None)

    def _require_open(self) -> None:
        if self._closed:
            raise UsageError(
                "This daglite session is stopped; start a new one with %daglite start."
            )


def _canonical_name(name: str) -> str:
    try:
        return registry.resolve(name).name
    except UsageError:
        return name  # daglite reports the unknown name itself


def _iterator(iterable: Any) -> Any:
    """An iterator of *iterable*, the arguments of a `map`."""
    try:
        return iter(iterable)
    except TypeError:
        raise UsageError(
            f"map takes iterables of arguments; {excerpt(iterable)} is not one."
        ) from None


def _start_failure(name: str, error: Exception) -> str:
    """Why backend *name* could not start: a sentence; then the backend's own detail, if any.

    A backend that fails for a reason of its environment (a cluster that would not start) may
    put detail on the lines after its first one (a log): it is kept, below the sentence.
    """
    summary, _, detail = str(error).partition("\n")
    first = reason(error) if not detail else shorten(summary, 200).rstrip(".")
    return f"Backend {name!r} could not start: {first}." + (f"\n{detail}" if detail else "")


def _show(unit: Call | Group) -> None:
    # The tracker calls this on the main thread only: displays from other threads would land
    # in whichever cell happens to run.
    if get_ipython() is not None:
        from daglite_nb.display import show

        show(unit)


def _echo(options: SessionOptions) -> Any:
    """The echo of the calls' output into their cells, if the options ask for it (in IPython)."""
    echo = options.echo_output if options.echo_output is not None else not options.progress
    if not echo or get_ipython() is None:
        return None
    from daglite_nb.display.echo import Echo

    return Echo()


def _flush_widgets() -> None:
    """Send every shown widget's current state now, if any widget was ever shown."""
    flusher = sys.modules.get("daglite_nb.display.flusher")
    if flusher is not None:
        flusher.flush_pending()


# region Kernel-scoped API

_lock = threading.RLock()
_current: NotebookSession | None = None
_exit_hook_installed = False

listeners: list[Callable[[], None]] = []
"""Called after the kernel's session starts, stops or switches its default backend."""


def changed() -> None:
    """Tell the listeners that the session (or what it can use) changed."""
    for listener in list(listeners):
        listener()


def current() -> NotebookSession | None:
    """Return the open session of this kernel, if any."""
    return _current


def require() -> NotebookSession:
    """Return the open session, or raise `UsageError` saying how to open one."""
    if _current is None:
        raise UsageError(
            "No daglite session is open; start one with %daglite start or dnb.start()."
        )
    return _current


def start(**kwargs: Any) -> NotebookSession:
    """Open the kernel's session (see `daglite_nb.start`)."""
    global _current
    options = SessionOptions.from_kwargs(**_with_configured_defaults(kwargs))
    with _lock:
        if _current is not None:
            raise UsageError(
                f"A daglite session is already open (backend {_current.backend!r}); "
                "switch backends with %daglite use NAME or end it with %daglite stop."
            )
        session = NotebookSession(options)
        try:
            session.use(options.backend)
        except BaseException:  # an interrupt during a long backend start too
            session.close(grace=0)
            raise
        _current = session
        _install_exit_hook()
    session.enter_cell()
    changed()
    return session


def _with_configured_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    """*kwargs*, where they leave `backend` or `progress` out, with the `%config` defaults."""
    shell = get_ipython()
    magics = shell.magics_manager.registry.get("DagliteMagics") if shell is not None else None
    if magics is None:
        return kwargs
    defaults = {"backend": magics.default_backend, "progress": magics.progress}
    return {**defaults, **{name: value for name, value in kwargs.items() if value is not None}}


def stop(grace: float = STOP_GRACE_SECONDS) -> None:
    """End the kernel's session: cancel pending tasks, stop backends, flush daglite."""
    global _current
    with _lock:
        session = require()
        _current = None
    _daglite.apply_session(None, None)
    session.close(grace)
    changed()


def status() -> SessionStatus:
    """Return the status of the kernel's session (state `"none"` when none is open)."""
    session = _current
    return session.status() if session is not None else SessionStatus(state="none")


def _teardown_at_exit() -> None:
    global _current
    session, _current = _current, None
    if session is not None:
        session.close(EXIT_GRACE_SECONDS, reason="the kernel shut down")


def _on_exit_now(change: dict[str, Any]) -> None:
    if change["new"]:
        _teardown_at_exit()


def _install_exit_hook() -> None:
    # ipykernel's shutdown sets the shell's `exit_now`, then terminates the kernel's child
    # processes (pool workers included), then exits: the session ends first, so no pool replaces
    # the workers that are being terminated. Interpreter exit joins executor threads (running
    # tasks included) *before* `atexit` handlers run; `threading._register_atexit` runs first,
    # so teardown there (without ipykernel) cannot be held up either.
    global _exit_hook_installed
    if _exit_hook_installed:
        return
    shell = get_ipython()
    if shell is not None:
        shell.observe(_on_exit_now, names="exit_now")
    register = getattr(threading, "_register_atexit", atexit.register)
    register(_teardown_at_exit)
    os.register_at_fork(after_in_child=_forget_in_child)
    _exit_hook_installed = True


def _forget_in_child() -> None:
    # A process forked from the kernel (a process pool's worker) copies the kernel's session:
    # its tasks must find daglite's worker context instead, and nothing of the kernel's.
    global _current
    _current = None
    _daglite.forget_kernel_session()
    events().forget_kernel()
