"""User objects as short, safe text: calls, results and failures. No IPython here.

What a finished call keeps is text made here, never the objects themselves: the text is bounded,
and making it never raises, whatever a user's `__repr__` or `__str__` does.
"""

from __future__ import annotations

import reprlib
import traceback
from typing import Any
from typing import NamedTuple

CALL_WIDTH = 60
"""Longest call text (`square(7)`), in characters."""

RESULT_WIDTH = 80
"""Longest result text, in characters."""

TRACEBACK_CHARS = 8_000
"""Longest traceback text a failure keeps (the user's frames, and the full one)."""

_call_repr = reprlib.Repr()
_call_repr.maxstring = _call_repr.maxother = 24
_call_repr.maxlist = _call_repr.maxtuple = _call_repr.maxdict = _call_repr.maxset = 4

_result_repr = reprlib.Repr()
_result_repr.maxstring = _result_repr.maxother = RESULT_WIDTH

_INTERNAL_PATHS = (
    "/concurrent/futures/",
    "/multiprocessing/",
    "/threading.py",
    "/asyncio/",
    "/contextlib.py",
    "/site-packages/daglite/",
    "/daglite_nb/",
    "/site-packages/distributed/",
    "/site-packages/cloudpickle/",
)
"""Frames of these files are not the user's: a failure shows the user's frames first."""


def shorten(text: str, width: int) -> str:
    """*text*, cut to *width* characters with an ellipsis."""
    return text if len(text) <= width else text[: width - 1] + "…"


def safe_repr(value: Any, short: reprlib.Repr = _call_repr) -> str:
    """*value* as *short* writes it, or a placeholder if its `__repr__` raises (anything at all).

    User objects reach the widgets' text from the flusher thread and the end-of-cell hook, where
    an exception (even `KeyboardInterrupt`) would kill the flusher or fail the next cells.
    """
    try:
        return short.repr(value)
    except BaseException:
        return f"<{type(value).__name__} object, repr failed>"


def safe_str(value: Any) -> str:
    """`str(value)`, or a placeholder if its `__str__` raises (see `safe_repr`)."""
    try:
        return str(value)
    except BaseException:
        return f"<{type(value).__name__} object, str failed>"


def call_text(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The call as text, shortened: `task_fn(1, y=2)`."""
    parts = [safe_repr(arg) for arg in args]
    parts += [f"{key}={safe_repr(value)}" for key, value in kwargs.items()]
    return shorten(f"{name}({', '.join(parts)})", CALL_WIDTH)


def result_text(value: Any) -> str:
    """A result as text, shortened."""
    return safe_repr(value, _result_repr)


class Failure(NamedTuple):
    """A failure as text: one line, the user's frames, and the whole traceback."""

    summary: str
    """`ValueError: bad input`."""
    traceback: str
    """The traceback without the frames of daglite, daglite-nb and the executors."""
    full: str
    """The whole traceback, every frame."""

    @classmethod
    def of(cls, error: BaseException) -> Failure:
        """Format *error* now (an exception raised again later grows more frames)."""
        summary = shorten(f"{type(error).__name__}: {safe_str(error)}", 200)
        try:
            frames = traceback.TracebackException.from_exception(error)
        except BaseException:
            return cls(summary, summary, summary)
        full = _bounded("".join(frames.format()))
        own = [frame for frame in frames.stack if not _internal(frame.filename)]
        frames.stack = traceback.StackSummary.from_list(own or frames.stack)
        frames.__cause__ = frames.__context__ = None  # the user's error itself, not the chain
        return cls(summary, _bounded("".join(frames.format())), full)


def _internal(filename: str) -> bool:
    return any(part in filename for part in _INTERNAL_PATHS)


def _bounded(text: str) -> str:
    if len(text) <= TRACEBACK_CHARS:
        return text
    cut = len(text) - TRACEBACK_CHARS
    return f"… ({cut} characters cut)\n" + text[cut:]
