"""The backend registry: every usable backend name, its aliases and where it comes from.

Four origins, in order of precedence for a name: backends registered with `register_backend`
(or, found by the session, with daglite's own `BackendManager.register`), the entry-point group
`daglite.backends`, and daglite's built-ins (served by their notebook-safe subclasses from
`daglite_nb._local`).
"""

from __future__ import annotations

import contextvars
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
from daglite_nb._local import NotebookInlineBackend
from daglite_nb._local import NotebookProcessBackend
from daglite_nb._local import NotebookThreadBackend
from daglite_nb._text import excerpt
from daglite_nb._text import reason
from daglite_nb.futures import LiveFuture
from daglite_nb.model import Call
from daglite_nb.model import Group
from daglite_nb.model import current_call
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
        origin: `"daglite"`, `"entry point <value>"`, `"register_backend"` or
            `"BackendManager.register"`.
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

    def register(
        self,
        name: str,
        backend_class: type,
        aliases: tuple[str, ...] = (),
        origin: str = "register_backend",
    ) -> None:
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
            self._registered[name] = BackendEntry(name, backend_class, tuple(aliases), origin)
            self._by_name = None

    def entries(self) -> list[BackendEntry]:
        """Every usable backend, each once, sorted by name."""
        merged = {**self._discover(), **self._registered}
        taken = {alias: entry.name for entry in merged.values() for alias in entry.aliases}
        return sorted(
            (entry for name, entry in merged.items() if taken.get(name, name) == name),
            key=lambda entry: entry.name,
        )

    def knows(self, name: str) -> bool:
        """Whether *name* selects a usable backend."""
        try:
            self.resolve(name)
        except UsageError:
            return False
        return True

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
    """Mixin that makes every call a backend runs a call of the session's tracker.

    Each call becomes a pending `Call` when it is submitted, and the backend runs the `Call`
    itself, which tells daglite's hooks (see `daglite_nb._events`) which call starts and ends.
    Backends whose `runs_here` is true run calls in this process, and the hooks end the calls;
    others tell the end through their Futures too (a worker that died, a call never sent).
    Backends that users write get the session's context in the call: their executors need not
    carry daglite's context.
    """

    name: str
    _tracker: Tracker
    _backend_submit: Callable[..., Future[Any]]
    """The backend's own `_submit` (looked up once, not through `super()` on every call)."""
    _named: tuple[Any, str] = (None, "")
    runs_here: bool
    carries_context: bool

    def _submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        context: SubmitContext,
        group: Group | None = None,
        direct: bool = False,
        text: str | None = None,
    ) -> Future[Any]:
        """Track and run a call (daglite's `map_tasks` and `Backend.submit` come here).

        daglite-nb's own calls (*direct*, from `submit_direct`) return a `LiveFuture`; the
        others keep the backend's Future (daglite's `map_tasks` never shows its futures).
        """
        tracker = self._tracker
        named = self._named
        if named[0] is not func:  # a fan-out submits one callable many times: name it once
            named = self._named = (func, _daglite.task_name(func))
        parent: Call | None = current_call.get()  # type: ignore[assignment]  # a Call in the kernel
        call = tracker.submitted(
            named[1],
            self.name,
            parent,
            context.map_index,
            func,
            group,
            text,
            direct,  # type: ignore[arg-type]
        )
        if self.carries_context:
            call.context = contextvars.copy_context()
        live = None
        if direct and not self.runs_here:
            live = call.live_future = LiveFuture(call, tracker)
        try:
            inner = self._backend_submit(call, args, kwargs, context=context)
        except BaseException as exc:
            if call.future is None:  # the backend did not take it (see `Call.adopt`)
                tracker.raised(call, exc)
            raise
        if self.runs_here:
            if call.ended is None:
                call.future = inner
            return LiveFuture.adopt(inner, call, tracker) if direct else inner
        if call.future is not inner:
            tracker.adopt(call, inner)
        return live or inner

    def submit_direct(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        map_index: int | None = None,
        group: Group | None = None,
        text: str | None = None,
    ) -> LiveFuture[Any]:
        """Run daglite-nb's own call (`dnb.submit`, or item *map_index* of *group* for `dnb.map`).

        Returns:
            Its `LiveFuture`; if the task fails, it raises the task's own exception.
        """
        context = SubmitContext(map_index=map_index)
        future = self._submit(
            func, args, kwargs, context=context, group=group, direct=True, text=text
        )
        return future  # type: ignore[return-value]


def is_tracked(backend_class: type) -> bool:
    """Whether *backend_class* is one that `tracked_backend` made."""
    return issubclass(backend_class, _Tracked)


def tracked_backend(backend_class: type[Backend], tracker: Tracker, name: str) -> type[Backend]:
    """Return a subclass of *backend_class*, known as *name*, whose calls *tracker* tracks."""
    ours = backend_class in _NOTEBOOK_SAFE.values() or backend_class.__module__.startswith(
        "daglite_nb."
    )
    namespace = {
        "_tracker": tracker,
        "name": name,
        "runs_here": getattr(backend_class, "runs_here", False),
        "carries_context": not ours,
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
