"""User objects as short, safe text: calls, results, failures and error messages. No IPython.

What a finished call keeps is text made here, never the objects themselves: the text is bounded,
and making it never raises, whatever a user's `__repr__` or `__str__` does.

Every `UsageError` daglite-nb raises is one sentence on one line that ends with a period. It
quotes user input (a magic line, a value, a callable) only through `excerpt` or `shorten`, so
an error about a 20,000-character line stays short, and other exceptions through `reason`.
"""

from __future__ import annotations

import re
import reprlib
import signal
import traceback
from typing import Any
from typing import NamedTuple

EXCERPT_CHARS = 40
"""The longest excerpt of user input an error message quotes (quotes and ellipsis included)."""

REASON_CHARS = 80
"""The longest reason (the message of another exception) an error message quotes."""

CALL_WIDTH = 60
"""Longest call text (`square(7)`), in characters."""

RESULT_WIDTH = 80
"""Longest result text, in characters."""

TRACEBACK_CHARS = 8_000
"""Longest traceback text a failure keeps (the user's frames, and the full one)."""


class _Repr(reprlib.Repr):
    """`reprlib.Repr`, which finds the method for a builtin type by the type, once.

    reprlib looks the method up by the type's name on every call (twice); for the exact builtin
    types below this takes the method reprlib would (`repr_int`, or `repr_instance` where it
    has none), and everything else still goes reprlib's way: same text, fewer steps for the
    arguments and results that every call shown on its own turns into text.
    """

    def __init__(self) -> None:
        super().__init__()
        kinds = (int, float, bool, type(None), str, bytes, tuple, list, dict, set, frozenset)
        self._by_type = {
            kind: getattr(self, f"repr_{kind.__name__}", self.repr_instance) for kind in kinds
        }

    def repr1(self, x: Any, level: int) -> str:  # noqa: D102
        method = self._by_type.get(type(x))
        return super().repr1(x, level) if method is None else method(x, level)


_call_repr = _Repr()
_call_repr.maxstring = _call_repr.maxother = 24
_call_repr.maxlist = _call_repr.maxtuple = _call_repr.maxdict = _call_repr.maxset = 4

_result_repr = _Repr()
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


def shorten(text: str, limit: int = EXCERPT_CHARS) -> str:
    """Return *text* on one line, cut to *limit* characters with an ellipsis."""
    text = _one_line(text)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


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


def how_it_ended(exitcode: int | None) -> str:
    """How a process that exited with *exitcode* ended (negative: killed by that signal)."""
    if exitcode is None:
        return "ended"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


# region Error messages


def excerpt(value: object) -> str:
    """Return the repr of *value* on one line, cut to `EXCERPT_CHARS` with an ellipsis.

    The cut keeps the repr's closing character (`'`, `)`, `>`), so it still reads as a quote.
    """
    try:
        text = repr(value)
    except BaseException:  # a user object whose __repr__ fails
        text = f"<{type(value).__name__} object>"
    return _cut_inside(_one_line(text))


def reason(exc: BaseException) -> str:
    """Return why *exc* happened as a clause: one line, at most `REASON_CHARS`, no final period.

    For an `OSError` that is its description alone (`No such file or directory`), without the
    path it names; for a `SyntaxError` its message, without the file and line.
    """
    text = exc.strerror if isinstance(exc, OSError) else None
    if isinstance(exc, SyntaxError):
        text = exc.msg
    if not text:
        try:
            text = str(exc)
        except BaseException:  # a user exception whose __str__ fails
            text = ""
    return shorten(text, REASON_CHARS).rstrip(".") or type(exc).__name__


def shorten_words(message: str) -> str:
    """Cut every word of *message* longer than `EXCERPT_CHARS` as `excerpt` cuts a repr.

    For messages that others compose with a user's words in them (argparse's).
    """
    return re.sub(rf"\S{{{EXCERPT_CHARS + 1},}}", lambda word: _cut_inside(word[0]), message)


def _one_line(text: str) -> str:
    lines = text.splitlines()
    if len(lines) == 1:
        return lines[0].strip()
    return " ".join(part.strip() for part in lines if part.strip())


def _cut_inside(text: str) -> str:
    if len(text) <= EXCERPT_CHARS:
        return text
    return f"{text[: EXCERPT_CHARS - 2]}…{text[-1]}"
