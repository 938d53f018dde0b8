"""The futures that daglite-nb hands out: `LiveFuture` (`dnb.submit`) and `LiveFutureGroup`.

No IPython here (they display through `daglite_nb.display`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING
from typing import Any
from typing import Generic
from typing import TypeVar
from typing import overload

from daglite_nb.model import PENDING
from daglite_nb.model import Call
from daglite_nb.model import Group

if TYPE_CHECKING:
    from daglite_nb.tracking import Tracker

R = TypeVar("R")

WAKE_SECONDS = 0.1
"""How often a cell that awaits futures wakes its event loop (see `wait_awake`)."""


async def wait_awake(
    futures: list[Future[Any]], timeout: float | None = None
) -> tuple[set[Future[Any]], set[Future[Any]]]:
    """`concurrent.futures.wait` for a cell with top-level `await`: `(done, pending)`.

    The event loop wakes every `WAKE_SECONDS` while it waits: ipykernel turns the interrupt
    of an awaiting cell into a callback that runs only when the loop next wakes up, so with
    nothing else to wake it the interrupt would take effect only when a future finished.
    """
    loop = asyncio.get_running_loop()
    wrapped = {_waiter(future, loop): future for future in futures}
    deadline = None if timeout is None else loop.time() + timeout
    pending = set(wrapped)
    while pending:
        step = WAKE_SECONDS if deadline is None else min(WAKE_SECONDS, deadline - loop.time())
        if step <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=step)
    return {wrapped[f] for f in wrapped.keys() - pending}, {wrapped[f] for f in pending}


def _waiter(future: Future[Any], loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """An asyncio future of *loop* that is done once *future* is.

    It carries no outcome (so no "exception was never retrieved" when *future* failed), and
    nothing done to it reaches *future*.
    """
    waiter = loop.create_future()

    def wake(_: Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(_done, waiter)

    future.add_done_callback(wake)
    return waiter


def _done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _result_awake(future: Future[R]) -> R:
    """Await *future*'s result, waking the event loop meanwhile (see `wait_awake`)."""
    await wait_awake([future])
    return future.result()


class LiveFuture(Future[R], Generic[R]):
    """A `concurrent.futures.Future` that knows its task's state and shows it live.

    On the backends that run calls in the kernel's process (inline, thread) it *is* the
    backend's own Future, adopted (`adopt`): one Future per call, not two. Elsewhere it is made
    for its call and gets the outcome when the call ends (`Tracker.settle`). Either way
    `cancel()` cancels the backend's Future, and a failed task raises its own exception, not
    daglite's `TaskError`. In a notebook it displays as a live status widget.
    """

    call: Call
    tracker: Tracker

    def __init__(self, call: Call, tracker: Tracker) -> None:
        super().__init__()
        self.call = call
        self.tracker = tracker

    @classmethod
    def adopt(cls, future: Future[Any], call: Call, tracker: Tracker) -> LiveFuture[Any]:
        """Turn the backend's plain *future* for *call* into its `LiveFuture`.

        Only for calls that end (through daglite's hooks) before the backend resolves *future*,
        so its state is final by the time `result()` returns.
        """
        future.__class__ = cls
        adopted: LiveFuture[Any] = future  # type: ignore[assignment]
        adopted.call = call
        adopted.tracker = tracker
        return adopted

    @property
    def state(self) -> str:
        """pending, running, finished, failed or cancelled."""
        return self.call.state

    @property
    def task_name(self) -> str:
        """Name of the task (daglite's resolved name, once it started)."""
        return self.call.name

    @property
    def backend(self) -> str:
        """Name of the backend that runs it."""
        return self.call.backend

    @property
    def worker(self) -> str | None:
        """Thread name, process id or Dask worker that ran it, once it started."""
        return self.call.worker

    @property
    def elapsed(self) -> float:
        """Seconds it has been running (or waiting, before it started)."""
        return self.call.elapsed

    @property
    def output(self) -> str:
        """What the task printed and logged so far: its newest lines (see `docs/task-output.md`)."""
        output = self.call.output
        return "" if output is None else output.text()

    def cancel(self) -> bool:
        """Cancel the task if it has not started; return whether it was cancelled."""
        return self.cancelled() or self.tracker.cancel(self.call)

    def take_cancel(self) -> None:
        """Become cancelled, as the call was (from `Tracker.settle` or `Tracker.close`)."""
        Future.cancel(self)

    def __await__(self) -> Any:
        return _result_awake(self).__await__()

    def __repr__(self) -> str:
        return f"<LiveFuture {self.call.label} on {self.call.backend}: {self.call.state}>"

    def _ipython_display_(self) -> None:
        from daglite_nb.display import show

        show(self.call, self.tracker)


class LiveFutureGroup(Sequence[LiveFuture[R]]):
    """The futures of one `dnb.map` fan-out, shown as one progress bar."""

    def __init__(self, group: Group, futures: list[LiveFuture[R]]) -> None:
        self.group = group
        self._futures = futures

    @overload
    def __getitem__(self, index: int) -> LiveFuture[R]: ...

    @overload
    def __getitem__(self, index: slice) -> list[LiveFuture[R]]: ...

    def __getitem__(self, index: int | slice) -> LiveFuture[R] | list[LiveFuture[R]]:
        return self._futures[index]

    def __len__(self) -> int:
        return len(self._futures)

    def results(self, timeout: float | None = None) -> list[R]:
        """Wait for every future and return their results in order (the first error raises).

        *timeout* bounds the whole wait, in seconds: `TimeoutError` once it passed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        return [future.result(_left(deadline)) for future in self._futures]

    @property
    def state(self) -> str:
        """pending, running, finished, failed (if any call failed) or cancelled (if any was)."""
        return self.group.state

    @property
    def counts(self) -> dict[str, int]:
        """Its calls by state."""
        return self.group.counts

    def cancel(self) -> int:
        """Cancel its calls that have not started; return how many it cancelled."""
        return sum(future.cancel() for future in self._futures if future.state == PENDING)

    def __repr__(self) -> str:
        return f"<LiveFutureGroup {self.group.label} × {len(self)} on {self.group.backend}>"

    def _ipython_display_(self) -> None:
        from daglite_nb.display import show

        show(self.group)


def _left(deadline: float | None) -> float | None:
    """Seconds left until *deadline* (`time.monotonic()`), none below zero; None: no deadline."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)
