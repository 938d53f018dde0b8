"""What tasks print and log, kept per call: bounded tails, and the streams that route writes.

Every process that runs tasks (the kernel, pool workers, Dask workers) replaces `sys.stdout` and
`sys.stderr` with a `TaskStream` once. A write made while a submitted call runs (see
`daglite_nb.model.current_call`) goes to that call; any other write goes to the stream it
replaced, untouched. In the kernel a call's output is an `Output` on the call; a worker keeps
what its calls wrote for at most `daglite_nb._pace.INTERVAL` seconds, bounded the same way, and
sends it to the kernel through daglite's event reporter, before the call's end. No IPython here.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from daglite_nb import _daglite
from daglite_nb._pace import Pacer
from daglite_nb.model import current_call

LINES = 50
"""How many of its newest lines a call keeps."""

LINE_CHARS = 500
"""Longer lines are cut to this many characters (a line without end too)."""

SESSION_CHARS = 4_000_000
"""How many characters of output all the calls of a session keep together."""

OUTPUT_EVENT = "output"
"""The kind of a worker's report that carries output (see `daglite_nb._events`)."""


# region A call's output


class Budget:
    """Characters that the outputs of one session may still keep."""

    def __init__(self, chars: int = SESSION_CHARS) -> None:
        self.left = chars
        self._lock = threading.Lock()

    def take(self, chars: int) -> bool:
        """Take *chars* if there are that many left; return whether it did."""
        with self._lock:
            if chars > self.left:
                return False
            self.left -= chars
            return True

    def give(self, chars: int) -> None:
        """Give back *chars* that an output no longer keeps."""
        with self._lock:
            self.left += chars


class Output:
    """The newest `LINES` lines that one call wrote, each cut to `LINE_CHARS`.

    Memory stays bounded whatever the call writes: so many lines, a line so long, no line end.

    Attributes:
        lines: Kept lines, oldest first, without their line ends.
        partial: The last line, while it has no end.
        count: Every line written, kept or not (a line without end counts once ended).
    """

    def __init__(self, budget: Budget | None = None) -> None:
        self.lines: deque[str] = deque()
        self.partial = ""
        self.count = 0
        self._budget = budget
        self._kept = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> list[str]:
        """Add *text*; return the lines it ended (kept or not)."""
        with self._lock:
            if "\n" not in text:  # print() writes each argument and separator on its own
                if len(self.partial) <= LINE_CHARS:
                    self.partial = (self.partial + text[: LINE_CHARS + 1])[: LINE_CHARS + 1]
                return []
            lines = (self.partial + text).split("\n")
            self.partial = lines.pop()[: LINE_CHARS + 1]  # enough to be cut once it ends
            self.count += len(lines)
            for line in lines[-LINES:]:
                self._keep(cut(line))
        return lines

    def add(self, text: str, skipped: int) -> list[str]:
        """Add *text* that a worker sent, after *skipped* lines it did not keep."""
        with self._lock:
            self.count += skipped
        return self.write(text)

    def close(self) -> list[str]:
        """End the last line, if it has no end; return it as the lines this ended."""
        return self.write("\n") if self.partial else []

    def _keep(self, line: str) -> None:
        if len(self.lines) == LINES:
            dropped = self.lines.popleft()
            self._kept -= len(dropped)
            if self._budget is not None:
                self._budget.give(len(dropped))
        if self._budget is None or self._budget.take(len(line)):
            self.lines.append(line)
            self._kept += len(line)

    @property
    def more(self) -> int:
        """Lines written that it does not keep."""
        return self.count - len(self.lines)

    def text(self) -> str:
        """The kept lines, after a line that says how many more were written."""
        lines = list(self.lines)
        if self.partial:
            lines.append(cut(self.partial))
        return tail_text(lines, self.more)

    def __del__(self) -> None:
        if self._budget is not None:
            self._budget.give(self._kept)


def tail_text(lines: list[str], more: int) -> str:
    """The newest *lines*, after a line that says how many *more* were written, if any."""
    head = [f"… {more} more {'line' if more == 1 else 'lines'}"] if more else []
    return "\n".join(head + lines)


def cut(line: str) -> str:
    """*line*, cut to `LINE_CHARS` characters."""
    return line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"


# region Streams


class TaskStream:
    """A text stream that sends what submitted calls write to them, and the rest on.

    Args:
        stream: The stream it replaces (the kernel's `OutStream`, a worker's `sys.stdout`).
        sink: Takes the running call (`current_call`) and what it wrote; returns False to let
            the write through (nowhere to keep it).
    """

    def __init__(self, stream: Any, sink: Callable[[Any, str], bool]) -> None:
        self.stream = stream
        self._sink = sink

    def write(self, text: str) -> int:
        """Write *text* to the running call, or to the stream it replaces."""
        link = current_call.get()
        if link is not None and text:
            try:
                if self._sink(link, text):
                    return len(text)
            except Exception:  # a task's print never fails for daglite-nb: it goes through
                pass
        return self.stream.write(text)

    def writelines(self, lines: Any) -> None:
        """Write each of *lines*."""
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def install(sink: Callable[[Any, str], bool]) -> None:
    """Replace `sys.stdout` and `sys.stderr` with `TaskStream`s writing to *sink* (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, TaskStream):
            stream._sink = sink
        elif stream is not None:
            setattr(sys, name, TaskStream(stream, sink))


# region Workers


class WorkerOutput:
    """What the calls running in a worker wrote and did not send yet, by call id.

    A call's output goes out at most every `daglite_nb._pace.INTERVAL` seconds (a `Pacer`), and
    at its end (`send`), before the worker reports the end. Between two sends a worker keeps no
    more than `LINES` lines of a call, and tells how many it did not keep; a line without end
    travels as it is, and the kernel's `Output` of the call joins it to what follows.

    Args:
        event: The event type of daglite-nb's reports (see `daglite_nb._events`).
    """

    def __init__(self, event: str) -> None:
        self._event = event
        self._pending: dict[int, tuple[Output, Any]] = {}
        self._lock = threading.Lock()
        self._pacer = Pacer(self._send_all, "daglite-nb-output")

    def write(self, call_id: int, text: str) -> bool:
        """Keep *text* for the call *call_id* (False where no daglite reporter can send it)."""
        with self._lock:
            entry = self._pending.get(call_id)
            if entry is None:
                reporter = _daglite.event_reporter()
                if reporter is None:
                    return False
                entry = self._pending[call_id] = (Output(), reporter)
            entry[0].write(text)
        self._pacer.poke()
        return True

    def send(self, call_id: int | None) -> None:
        """Send what the call *call_id* wrote since the last send, if anything."""
        if call_id not in self._pending:
            return
        with self._lock:
            entry = self._pending.pop(call_id, None)
        if entry is not None:
            output, reporter = entry
            text = "".join(line + "\n" for line in output.lines) + output.partial
            reporter.report(self._event, (OUTPUT_EVENT, None, call_id, text, output.more))

    def _send_all(self) -> None:
        for call_id in list(self._pending):
            self.send(call_id)


def add_call_to_records(before: Callable[[int], None]) -> None:
    """Mark every log record made while a call runs on a worker with its id (`daglite_nb_call`).

    daglite's task logger sends a worker's records to the kernel with their attributes, so the
    kernel knows the call of each (see `daglite_nb._events.NotebookEvents`). *before* is called
    with the id first: what the call wrote before the record goes before it.
    """
    make = logging.getLogRecordFactory()
    if getattr(make, "daglite_nb", False):
        return

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = make(*args, **kwargs)
        link = current_call.get()
        if isinstance(link, int):
            before(link)
            made.daglite_nb_call = link
        return made

    record.daglite_nb = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record)
