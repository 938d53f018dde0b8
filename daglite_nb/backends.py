"""The backend registry: every usable backend name, its aliases and where it comes from.

Three origins, in order of precedence for a name: backends registered with
`register_backend`, the entry-point group `daglite.backends`, and daglite's built-ins (served
by their notebook-safe subclasses from `daglite_nb._local`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from daglite.backends.base import Backend
from IPython.core.error import UsageError

from daglite_nb import _daglite
from daglite_nb._daglite import SubmitContext
from daglite_nb._errors import excerpt
from daglite_nb._errors import reason
from daglite_nb._local import NotebookInlineBackend
from daglite_nb._local import NotebookProcessBackend
from daglite_nb._local import NotebookThreadBackend
from daglite_nb._worker import TrackedCall
from daglite_nb.tracking import FAILED
from daglite_nb.tracking import LiveFuture
from daglite_nb.tracking import TaskGroup
from daglite_nb.tracking import Tracker

ENTRY_POINT_GROUP = "daglite.backends"

_NOTEBOOK_SAFE: dict[str, type[Backend]] = {
    "inline": NotebookInlineBackend,
    "thread": NotebookThreadBackend,
    "process": NotebookProcessBackend,
}


@dataclass(frozen=True)
class BackendEntry:
    """One usable backend.

    Attributes:
        name: Canonical name.
        backend_class: The `daglite.backends.Backend` subclass that serves it.
        aliases: Other names that select the same backend.
        origin: `"daglite"`, `"entry point <value>"` or `"register_backend"`.
    """

    name: str
    backend_class: type[Backend]
    aliases: tuple[str, ...] = ()
    origin: str = "register_backend"

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical name followed by the aliases."""
        return (self.name, *self.aliases)


class BackendRegistry:
    """Name -> backend table shared by the magics, the Python API and the panel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registered: dict[str, BackendEntry] = {}
        self._discovered: dict[str, BackendEntry] | None = None
        self._unavailable: dict[str, str] = {}
        self._by_name: dict[str, BackendEntry] | None = None

    def register(self, name: str, backend_class: type, aliases: tuple[str, ...] = ()) -> None:
        """Register *backend_class* under *name* (and *aliases*), replacing any earlier entry."""
        if not isinstance(name, str) or not name.isidentifier():
            raise UsageError(
                f"A backend name must be an identifier such as 'my_backend', not {excerpt(name)}."
            )
        if not (isinstance(backend_class, type) and issubclass(backend_class, Backend)):
            raise UsageError(
                "register_backend needs a subclass of daglite.backends.Backend, "
                f"got {excerpt(backend_class)}."
            )
        with self._lock:
            self._registered[name] = BackendEntry(name, backend_class, tuple(aliases))
            self._by_name = None

    def entries(self) -> list[BackendEntry]:
        """Every usable backend, each once, sorted by name."""
        merged = {**self._discover(), **self._registered}
        taken = {alias: entry.name for entry in merged.values() for alias in entry.aliases}
        return sorted(
            (entry for name, entry in merged.items() if taken.get(name, name) == name),
            key=lambda entry: entry.name,
        )

    def resolve(self, name: str) -> BackendEntry:
        """Return the entry that *name* (canonical or alias) selects.

        Raises:
            UsageError: If no usable backend has that name; the message lists the valid ones.
        """
        by_name = self._by_name
        if by_name is None:
            by_name = {n: entry for entry in self.entries() for n in entry.names}
            self._by_name = by_name
        if isinstance(name, str) and name in by_name:
            return by_name[name]
        if name in self._unavailable:
            raise UsageError(f"Backend {name!r} is not available: {self._unavailable[name]}.")
        valid = ", ".join(entry.name for entry in self.entries())
        raise UsageError(f"Unknown backend {excerpt(name)}; choose one of: {valid}.")

    def _discover(self) -> dict[str, BackendEntry]:
        with self._lock:
            if self._discovered is None:
                self._discovered = {**_builtin_entries(), **self._load_entry_points()}
            return self._discovered

    def _load_entry_points(self) -> dict[str, BackendEntry]:
        found: dict[str, BackendEntry] = {}
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                backend_class = point.load()
            except Exception as exc:  # a broken plugin must not break every command
                self._unavailable[point.name] = f"{point.value} cannot be loaded ({reason(exc)})"
                continue
            if not (isinstance(backend_class, type) and issubclass(backend_class, Backend)):
                self._unavailable[point.name] = f"{point.value} is not a daglite Backend"
                continue
            aliases = tuple(getattr(backend_class, "aliases", ()))
            found[point.name] = BackendEntry(
                point.name, backend_class, aliases, f"entry point {point.value}"
            )
        return found


def _builtin_entries() -> dict[str, BackendEntry]:
    by_class: dict[type[Backend], list[str]] = {}
    for name, backend_class in _daglite.builtin_backend_types().items():
        by_class.setdefault(backend_class, []).append(name)
    entries = {}
    for backend_class, names in by_class.items():
        canonical = backend_class.name
        aliases = tuple(sorted(n for n in names if n != canonical))
        safe_class = _NOTEBOOK_SAFE.get(canonical, backend_class)
        entries[canonical] = BackendEntry(canonical, safe_class, aliases, "daglite")
    return entries


registry = BackendRegistry()
"""The process-wide registry."""


class _Tracked:
    """Mixin that records every call a backend runs.

    Backends whose `runs_here` is true run calls in this process: they get the call's
    `TaskRecord` to run, which stamps the start and the end on itself from the worker thread,
    or, for daglite's `map_tasks`, the call's `FanOut`, which does the same in its columns.
    Other backends get a `TrackedCall`, which reports the start through daglite's event
    reporter wherever it runs; their Futures tell the end.
    """

    _tracker: Tracker
    _backend_submit: Callable[..., Future[Any]]
    """The backend's own `_submit` (looked up once, not through `super()` on every call)."""
    _named: tuple[Any, str] = (None, "")
    runs_here: bool

    def _submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        context: SubmitContext,
        group: TaskGroup | None = None,
        direct: bool = False,
    ) -> Future[Any]:
        """Record and run a call (daglite's `map_tasks` and `Backend.submit` come here).

        daglite-nb's own calls (*direct*, from `submit_direct`) return a `LiveFuture`; the
        others keep the backend's Future (daglite's `map_tasks` never shows its futures).
        """
        tracker = self._tracker
        here = self.runs_here
        index = context.map_index
        if here and index is not None and not direct:  # daglite's map_tasks
            fan_out = (
                tracker.open_fan_out(self._task_name(func), self.name, func, args, kwargs)
                if index == 0
                else tracker.fan_out_call(func, args, kwargs, index)
            )
            if fan_out is not None:  # the fan-out runs the call and records it
                try:
                    inner = self._backend_submit(fan_out, args, kwargs, context=context)
                except BaseException as exc:
                    fan_out.abort(index, FAILED, exc)
                    raise
                fan_out.futures[index] = inner
                return inner
        name = self._task_name(func)
        record = tracker.new_record(name, args, kwargs, self.name, index, group, direct)
        live = None
        call: Callable[..., Any]
        if here:
            record.func, record.tracker = func, tracker
            call = record
        else:
            call = TrackedCall(func, record.id)
            live = record.live_future = LiveFuture(record, tracker) if direct else None
        try:
            inner = self._backend_submit(call, args, kwargs, context=context)
        except BaseException as exc:
            tracker.ended(record, FAILED, exc)
            raise
        tracker.track(inner, record, ends_here=here)
        if here and direct:
            return LiveFuture.adopt(inner, record, tracker)
        return live or inner

    def _task_name(self, func: Callable[..., Any]) -> str:
        named = self._named
        if named[0] is not func:  # a fan-out submits one callable many times: name it once
            named = self._named = (func, _daglite.task_name(func))
        return named[1]

    def submit_direct(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        map_index: int | None = None,
        group: TaskGroup | None = None,
    ) -> LiveFuture:
        """Run daglite-nb's own call (`dnb.submit`, or item *map_index* of *group* for `dnb.map`).

        Returns:
            Its `LiveFuture`; if the task fails, it raises the task's own exception.
        """
        context = SubmitContext(map_index=map_index)
        future = self._submit(func, args, kwargs, context=context, group=group, direct=True)
        return future  # type: ignore[return-value]


def tracked_backend(backend_class: type[Backend], tracker: Tracker, name: str) -> type[Backend]:
    """Return a subclass of *backend_class*, known as *name*, whose calls *tracker* records."""
    namespace = {
        "_tracker": tracker,
        "name": name,
        "runs_here": getattr(backend_class, "runs_here", False),
        "_backend_submit": backend_class._submit,
        "__module__": backend_class.__module__,
    }
    return type(backend_class.__name__, (_Tracked, backend_class), namespace)


class BackendTable(list):
    """The rows of `%daglite backends`; the session's default backend is marked with `*`."""

    def __init__(self, entries: list[BackendEntry], active: str | None) -> None:
        super().__init__(entries)
        self.active = active

    def __str__(self) -> str:
        rows = [(" ", "name", "aliases", "origin")]
        rows += [
            ("*" if e.name == self.active else " ", e.name, ", ".join(e.aliases) or "-", e.origin)
            for e in self
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join(
            f"{mark:<{widths[0]}} {name:<{widths[1]}}  {aliases:<{widths[2]}}  {origin}".rstrip()
            for mark, name, aliases, origin in rows
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))
