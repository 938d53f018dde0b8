"""What a backend runs for a callable that `dnb.submit`, `dnb.map` or `%daglite submit` got.

daglite's `task()` makes tasks of plain Python functions (and renames their `__qualname__`, so
process workers find them); it rejects classes and fails on builtins and bound methods. So
daglite tasks and plain functions go to daglite as they are, and every other callable (a
builtin, a class, a method, a `functools.partial`, a callable object) becomes a task of a
`functools.partial` of it, named after it. A partial pickles wherever its callable does (by
reference, or by value through cloudpickle), it tells `inspect` whether the call is async or a
generator, so daglite picks the right kind of task, and it carries the callable's signature,
to which daglite binds the arguments of each call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import daglite
from IPython.core.error import UsageError

from daglite_nb import _daglite
from daglite_nb._text import excerpt
from daglite_nb._text import reason


def backend_callable(func: Any, verb: str) -> Callable[..., Any]:
    """Return what a backend runs for *func* (as daglite's `map_tasks` would hand it over).

    Args:
        func: Any callable.
        verb: The API that got it (`"submit"`, `"map"`), for error messages.

    Raises:
        UsageError: If *func* is not callable, or daglite cannot make a task of it.
    """
    if not callable(func):
        raise UsageError(f"{verb} needs a task or a callable, got {excerpt(func)}.")
    try:
        return _daglite.backend_callable(_as_task(func), verb)
    except (AttributeError, TypeError, ValueError) as exc:
        raise UsageError(f"{verb} cannot make a task of {excerpt(func)}: {reason(exc)}.") from None


def _as_task(func: Callable[..., Any]) -> Callable[..., Any]:
    if _daglite.is_task(func) or inspect.isfunction(func):
        return func
    description = getattr(func, "__doc__", None)
    decorate = daglite.task(
        name=_name(func), description=description if isinstance(description, str) else ""
    )
    return decorate(_partial(func))


def _name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else type(func).__name__


def _partial(func: Callable[..., Any]) -> functools.partial[Any]:
    # A callable object's own `__call__`, so that an `async def __call__` makes an async task.
    call = None if isinstance(func, type) else inspect.getattr_static(type(func), "__call__")
    wrapped = functools.partial(call, func) if inspect.isfunction(call) else functools.partial(func)
    wrapped.__signature__ = _signature(func)  # type: ignore[attr-defined]  # daglite binds to it
    return wrapped


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # builtins without one, such as dict
        return _ANY_ARGUMENTS


_ANY_ARGUMENTS = inspect.Signature(
    [
        inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
        inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
    ]
)
