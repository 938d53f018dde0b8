"""The text of user-facing errors: short excerpts of what the user gave, one-line reasons.

Every `UsageError` daglite-nb raises is one sentence on one line that ends with a period. It
quotes user input (a magic line, a value, a callable) only through `excerpt` or `shorten`, so
an error about a 20,000-character line stays short, and other exceptions through `reason`.
"""

from __future__ import annotations

import re

EXCERPT_CHARS = 40
"""The longest excerpt of user input an error message quotes (quotes and ellipsis included)."""

REASON_CHARS = 80
"""The longest reason (the message of another exception) an error message quotes."""


def shorten(text: str, limit: int = EXCERPT_CHARS) -> str:
    """Return *text* on one line, cut to *limit* characters with an ellipsis."""
    text = _one_line(text)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def excerpt(value: object) -> str:
    """Return the repr of *value* on one line, cut to `EXCERPT_CHARS` with an ellipsis.

    The cut keeps the repr's closing character (`'`, `)`, `>`), so it still reads as a quote.
    """
    try:
        text = repr(value)
    except Exception:  # a user object whose __repr__ fails
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
        except Exception:  # a user exception whose __str__ fails
            text = ""
    return shorten(text, REASON_CHARS).rstrip(".") or type(exc).__name__


def shorten_words(message: str) -> str:
    """Cut every word of *message* longer than `EXCERPT_CHARS` as `excerpt` cuts a repr.

    For messages that others compose with a user's words in them (argparse's).
    """
    return re.sub(rf"\S{{{EXCERPT_CHARS + 1},}}", lambda word: _cut_inside(word[0]), message)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _cut_inside(text: str) -> str:
    if len(text) <= EXCERPT_CHARS:
        return text
    return f"{text[: EXCERPT_CHARS - 2]}…{text[-1]}"
