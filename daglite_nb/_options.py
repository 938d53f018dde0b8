"""The options of a notebook session: names, validation, and what reaches daglite and backends."""

from __future__ import annotations

import dataclasses
import multiprocessing
from dataclasses import dataclass
from typing import Any

from daglite.cache import CacheStore
from daglite.datasets import DatasetStore
from daglite.plugins.base import EventHandlerPlugin
from daglite.plugins.base import SerializablePlugin
from daglite.plugins.hooks.markers import HOOK_NAMESPACE
from daglite.settings import get_global_settings
from IPython.core.error import UsageError

from daglite_nb._text import excerpt
from daglite_nb._text import reason


@dataclass(frozen=True)
class SessionOptions:
    """Options of a notebook session (see `daglite_nb.start`)."""

    backend: str = "thread"
    cache_store: str | None = None
    dataset_store: str | None = None
    max_threads: int | None = None
    max_processes: int | None = None
    progress: bool = True
    echo_output: bool | None = None
    plugins: tuple[Any, ...] = ()
    process_start_method: str | None = None
    dask_address: str | None = None
    dask_workers: int | None = None
    dask_threads: int | None = None

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SessionOptions:
        """Build options from keyword arguments, rejecting unknown names and bad values."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise UsageError(
                f"Unknown session option {excerpt(unknown[0])}; valid options: {', '.join(valid)}."
            )
        plugins = kwargs.get("plugins")
        if plugins is not None:
            if not isinstance(plugins, (list, tuple)) or not all(map(_is_plugin, plugins)):
                raise UsageError(
                    "plugins must be a list of daglite plugin instances (not classes), "
                    f"got {excerpt(plugins)}."
                )
            kwargs["plugins"] = tuple(plugins)
        options = cls(**{k: v for k, v in kwargs.items() if v is not None})
        for name in ("max_threads", "max_processes", "dask_workers", "dask_threads"):
            value = getattr(options, name)
            if value is not None and (type(value) is not int or value < 1):
                raise UsageError(f"{name} must be a positive integer, got {excerpt(value)}.")
        strings = (
            "backend",
            "cache_store",
            "dataset_store",
            "process_start_method",
            "dask_address",
        )
        for name in strings:
            value = getattr(options, name)
            if value is not None and not isinstance(value, str):
                raise UsageError(f"{name} must be a string, got {excerpt(value)}.")
        for name in ("progress", "echo_output"):
            value = getattr(options, name)
            if value is not None and not isinstance(value, bool):
                raise UsageError(f"{name} must be True or False, got {excerpt(value)}.")
        methods = multiprocessing.get_all_start_methods()
        if options.process_start_method not in (None, *methods):
            raise UsageError(
                f"process_start_method must be one of {', '.join(methods)}, "
                f"got {excerpt(options.process_start_method)}."
            )
        if options.dask_address and (options.dask_workers or options.dask_threads):
            raise UsageError(
                "dask_workers and dask_threads size a local cluster; "
                "they cannot be combined with dask_address."
            )
        return options

    def backend_options(self, name: str) -> dict[str, Any]:
        """The options meant for backend *name* (`dask_address` -> `address` for "dask")."""
        prefix = f"{name}_"
        return {
            field.name.removeprefix(prefix): value
            for field in dataclasses.fields(self)
            if field.name.startswith(prefix) and (value := getattr(self, field.name)) is not None
        }

    def stores(self) -> dict[str, Any]:
        """Return the cache and dataset stores for daglite's session, made from their paths.

        Creating a store creates its directory. `None` leaves the store to daglite's settings.

        Raises:
            UsageError: If a store cannot be created at its path; it names the option.
        """
        kinds = {"cache_store": CacheStore, "dataset_store": DatasetStore}
        return {name: _store(name, store, getattr(self, name)) for name, store in kinds.items()}

    def settings(self) -> Any:
        """Return daglite settings with this session's worker counts applied."""
        return dataclasses.replace(get_global_settings(), **_settings_overrides(self))


BACKEND_SETTINGS = (
    "max_threads",
    "max_processes",
    "process_start_method",
    "dask_address",
    "dask_workers",
    "dask_threads",
)
"""Session options that a backend reads when it starts (and so can change between starts)."""


def _store(name: str, store: type[Any], path: str | None) -> Any:
    if path is None:
        return None
    try:
        return store(path)
    except Exception as exc:  # OSError, ValueError (a NUL byte), ImportError (an fsspec scheme)
        flag = name.replace("_", "-")
        raise UsageError(
            f"The {name.replace('_', ' ')} cannot be created at {excerpt(path)} "
            f"(--{flag}): {reason(exc)}."
        ) from None


def _settings_overrides(options: SessionOptions) -> dict[str, Any]:
    overrides = {
        "max_backend_threads": options.max_threads,
        "max_parallel_processes": options.max_processes,
    }
    return {name: value for name, value in overrides.items() if value is not None}


def _is_plugin(candidate: Any) -> bool:
    """Whether *candidate* is a daglite plugin: it implements a hook or takes part in events.

    A hook implementation is a function marked with daglite's `hook_impl`, found as pluggy
    finds it when daglite registers the plugin (an instance's methods, a module's functions).
    """
    if isinstance(candidate, type):
        return False
    if isinstance(candidate, (EventHandlerPlugin, SerializablePlugin)):
        return True
    marker = f"{HOOK_NAMESPACE}_impl"
    return any(hasattr(getattr(candidate, name, None), marker) for name in dir(candidate))
