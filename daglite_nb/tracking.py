"""The tracker of a session: every call daglite runs, as it is submitted, starts and ends.

It feeds the model (`daglite_nb.model`) from the session backends' submissions, daglite's hooks
(`daglite_nb._events`) and the backends' Futures. It changes calls only under its lock and keeps
every count as it changes; what readers see is always a state the calls were in. No IPython here.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from daglite_nb._output import Budget
from daglite_nb._output import Output
from daglite_nb._text import Failure
from daglite_nb._text import result_text
from daglite_nb.futures import LiveFuture
from daglite_nb.model import CANCELLED
from daglite_nb.model import ENDED
from daglite_nb.model import FAILED
from daglite_nb.model import FINISHED
from daglite_nb.model import PENDING
from daglite_nb.model import RUNNING
from daglite_nb.model import Call
from daglite_nb.model import Group
from daglite_nb.model import original_error
from daglite_nb.model import state_counts

_UNKNOWN = object()
"""Stands for a result that a worker's report does not carry."""

GROUP_FAILURES = 3
"""How many failures a group keeps to show with their tracebacks."""

RECENT_CALLS = 200
"""How many ended calls the tracker keeps to show (counts are kept for all)."""


class _FanOut(threading.local):
    """The fan-out a thread is submitting: daglite's `map_tasks` submits items 0, 1, 2, ...

    `current` is the callable it submits and its group (`gather_tasks`: no callable).
    """

    current: tuple[Any, Group | None] = (None, None)


class Tracker:
    """Every call of one session: the live ones, the last ended ones, and counts.

    Args:
        on_show: Called, on the kernel's main thread, with each new top-level group (a
            `map_tasks`, `gather_tasks` or workflow run of a cell) and each awaited top-level
            call that the main thread makes, to show it in the cell.
        recent: How many ended calls to keep.
    """

    def __init__(
        self,
        on_show: Callable[[Call | Group], None] | None = None,
        recent: int = RECENT_CALLS,
    ) -> None:
        self.lock = threading.Lock()
        self.cell: int | None = None
        self.on_show = on_show
        self.on_busy: Callable[[], None] | None = None
        """Called when a call is made while none was live (a shown panel refreshes again)."""
        self.workflow_of: Callable[[], Any] = lambda: None
        """Tells, in the thread of a call first seen by its task, the session id of the
        workflow run it belongs to, if any (see `workflow_started`)."""
        self.ended_counts = dict.fromkeys(ENDED, 0)
        self.live: dict[int, Call] = {}
        """Calls that have not ended, by id, in the order they were made."""
        self.recent: deque[Call] = deque(maxlen=recent)
        self._by_task: dict[Any, Call] = {}
        """Live calls that started, by daglite's task id."""
        self._workflows: dict[Any, Group] = {}
        """Workflow runs under way, by daglite's session id."""
        self._open: list[tuple[Group, bool]] = []
        """Top-level groups that calls may still join, each with whether the main thread made
        it (those close when the cell ends)."""
        self._ids = itertools.count(1).__next__
        self._fan_out = _FanOut()
        self.closed: str | None = None
        """Why the tracker stopped taking calls (the session ended), once it did."""
        self.budget = Budget()
        """What the outputs of the session's calls may still keep."""
        self.echo: Callable[[Call, list[str]], None] | None = None
        """Called with each call and the lines of output it ended, to echo them in its cell."""

    # region Reading

    @property
    def counts(self) -> dict[str, int]:
        """Every call of the session, by state."""
        return state_counts(list(self.live.values()), self.ended_counts)

    @property
    def busy(self) -> bool:
        """Whether some call has not ended."""
        return bool(self.live)

    def latest(self, count: int) -> list[Call]:
        """The *count* most recent calls, live ones first (newest first), then ended ones."""
        with self.lock:
            live = list(itertools.islice(reversed(self.live.values()), count))
            ended = list(itertools.islice(reversed(self.recent), count - len(live)))
        return live + ended

    def live_futures(self) -> list[Future[Any]]:
        """The backend Futures of the calls that have not ended."""
        with self.lock:
            return [call.future for call in self.live.values() if call.future is not None]

    def call(self, call_id: int) -> Call | None:
        """The live call *call_id*, if it has not ended."""
        return self.live.get(call_id)

    # region Submitted calls

    def submitted(
        self,
        name: str,
        backend: str,
        parent: Call | None,
        map_index: int | None = None,
        func: Any = None,
        group: Group | None = None,
        text: str | None = None,
        direct: bool = False,
    ) -> Call:
        """A new pending call of *func*, about to be submitted to *backend* (see `Call`).

        Args:
            name: The task's name.
            backend: The backend's name.
            parent: The call inside which it is submitted (a nested fan-out), if any.
            map_index: Its index in daglite's `map_tasks` fan-out: index 0 opens a group, the
                next indexes of the same *func* on the same thread join it.
            func: What the backend runs (identifies a `map_tasks` fan-out).
            group: The group of a `dnb.map` call.
            text: The call with its arguments, for a call submitted on its own.
            direct: Whether it is daglite-nb's own call (see `Call.direct`).
        """
        opened = False
        if group is None and map_index is not None:
            fan_func, fan_group = self._fan_out.current
            if map_index and fan_func is func:  # the next call of this thread's fan-out
                group = fan_group
            else:
                group, opened = self._map_group(name, backend, parent, map_index, func)
        call = Call(
            self._ids(), name, backend, self.cell, parent, group, text, map_index, func, self
        )
        if direct:
            call.direct = True
        idle = not self.live
        self.live[call.id] = call
        if group is not None:
            group.live.add(call)
        if opened:
            self._show(group)  # type: ignore[arg-type]
        if idle and self.on_busy is not None:
            self.on_busy()
        return call

    def _map_group(
        self, name: str, backend: str, parent: Call | None, index: int, func: Any
    ) -> tuple[Group | None, bool]:
        # Item 0 opens a group: returns it, and whether it is a new top-level one. Any other
        # item that continues no fan-out of this thread (a hand-made map_index) has none.
        if index:
            return None, False
        previous = self._fan_out.current[1]
        if previous is not None and previous.owner is None:
            previous.closed = True  # this thread moved on to another fan-out
        group = self.group("map_tasks", name, backend, parent)
        self._fan_out.current = (func, group)
        return group, group.owner is None

    def group(self, kind: str, label: str, backend: str, parent: Call | None = None) -> Group:
        """A group for a fan-out; nested under *parent*'s (or its group's) groups of *label*.

        The fan-outs that the calls of one group make join one child group per task name, so
        a nested `map_tasks` in each of a hundred calls shows as one line, not a hundred.
        """
        if parent is not None:
            return self._child(parent.group or parent, label, backend)
        group = Group(kind, label, backend, self.cell)
        main = threading.current_thread() is threading.main_thread()
        with self.lock:
            self._open.append((group, main))
        return group

    def _show(self, unit: Call | Group) -> None:
        """Show a new top-level call or group of the kernel's main thread in its cell."""
        if self.on_show is not None and threading.current_thread() is threading.main_thread():
            self.on_show(unit)

    def _child(self, owner: Call | Group, label: str, backend: str) -> Group:
        with self.lock:
            children = owner.children
            if children is None:
                children = owner.children = {}
            group = children.get(label)
            if group is None:
                group = children[label] = Group("calls", label, backend, owner.cell, owner)
        return group

    def close(self, group: Group) -> None:
        """No more calls join the top-level *group* (`dnb.map` submitted all of its calls)."""
        group.closed = True

    def cell_ended(self) -> None:
        """The cell ended: no more calls join the groups its fan-outs made (main thread)."""
        with self.lock:
            for group, main in self._open:
                group.closed = group.closed or main
            self._open = [(group, main) for group, main in self._open if not group.closed]
            self._fan_out.current = (None, None)

    # region Events (daglite's hooks, or the backend's Futures)

    def started(
        self, link: Call | int | None, task: Any, worker: str, at: float | None = None
    ) -> Call | None:
        """A task call started (daglite's `before_node_execute`, or `on_cache_hit`).

        Args:
            link: The submitted call (or its id) whose context the task runs in (see
                `current_call`); None for a task called in no submitted call.
            task: daglite's `TaskMetadata` of the call (or what a worker reported of it: `id`,
                `name`, `parent_id`, `map_index`, `backend`, `is_async`).
            worker: Where it runs: a thread's name, `pid N`, a Dask worker.
            at: When it started (`time.time()` where it runs); now if None.

        Returns:
            The call, or None if the tracker no longer takes calls, or the submitted call had
            been cancelled meanwhile.
        """
        if isinstance(link, int):
            link = self.live.get(link, _GONE)
        if self.closed or link is _GONE or (link is not None and link.ended is not None):
            return None
        if link is not None and link.start(task, worker, at):  # the submitted call's own task
            return link
        call = self._first_seen(link, task, worker, at)
        group = call.group
        if group is not None and group.kind == "gather_tasks" and group.total == 1:  # its first
            self._show(group)
        elif task.is_async and call.parent is None and group is None:
            self._show(call)
        return call

    def _first_seen(self, link: Call | None, task: Any, worker: str, at: float | None) -> Call:
        """A running call that no submission announced: nested, direct, gathered, workflow."""
        parent = self._find(task.parent_id, link) if task.parent_id is not None else None
        index = task.map_index
        label = task.name.removesuffix(f"[{index}]") if index is not None else task.name
        workflow = self._workflows.get(self.workflow_of()) if self._workflows else None
        group: Group | None = None
        if parent is not None:
            group = self._child(parent.group or parent, label, task.backend)
        elif workflow is not None:
            group = self._child(workflow, label, task.backend)
        elif index is not None:
            group = self._gather_group(label, task.backend, index)
        call = Call(self._ids(), task.name, task.backend, self.cell, parent, group, index=index)
        call.task_id, call.worker = task.id, worker
        call.state, call.started = RUNNING, at or time.time()
        with self.lock:
            idle = not self.live
            self.live[call.id] = call
            if group is not None:
                group.live.add(call)
            self._by_task[task.id] = call
        if idle and self.on_busy is not None:
            self.on_busy()
        return call

    def _find(self, task_id: Any, link: Call | int | None) -> Call | None:
        """The live call of daglite's task *task_id*.

        That is the submitted call *link* (or the call of that id) if the task is its own;
        else a call first seen by its task (`_first_seen`), which the tracker keeps by task id.
        """
        if isinstance(link, int):
            link = self.live.get(link)
        if link is not None and (link.task_id is task_id or link.task_id == task_id):
            return link
        return self._by_task.get(task_id)

    def _gather_group(self, label: str, backend: str, index: int) -> Group:
        # gather_tasks starts items 0, 1, 2, ... of one task in order, on one thread.
        func, group = self._fan_out.current
        if index == 0 or group is None or group.label != label or func is not None:
            group = self.group("gather_tasks", label, backend)
            self._fan_out.current = (None, group)
        return group

    def retried(self, task_id: Any, link: Call | int | None, attempt: int) -> None:
        """The call of task *task_id* is retried (daglite's attempt number *attempt*, from 1)."""
        call = self._find(task_id, link)
        if call is None:
            return
        with self.lock:
            if call.attempts == 0 and call.group is not None:
                call.group.retried += 1
            call.attempts = attempt

    def cache_hit(self, task_id: Any, link: Call | int | None) -> None:
        """The result of the call of task *task_id* came from daglite's cache."""
        call = self._find(task_id, link)
        if call is not None and not call.cached:
            with self.lock:
                call.cached = True
                if call.group is not None:
                    call.group.cached += 1

    def iterated(self, task_id: Any, link: Call | int | None, index: int) -> None:
        """The generator task *task_id* yielded its item *index*."""
        call = self._find(task_id, link)
        if call is not None:
            added = index + 1 - call.items
            call.items = index + 1
            if call.group is not None and added > 0:
                with self.lock:
                    call.group.items += added

    def finished(
        self,
        task_id: Any,
        link: Call | int | None,
        result: Any = _UNKNOWN,
        at: float | None = None,
    ) -> None:
        """The call of task *task_id* returned *result* (`after_node_execute`, a cache hit).

        *at* is when (`time.time()` where it ran); now if None.

        A call shown on its own (submitted alone, or made directly by a cell) keeps its result
        as text; workers do not send results (the backend's Future brings them, see `settle`).
        """
        call = self._find(task_id, link)
        if call is not None:
            shown = result is not _UNKNOWN and call.alone
            self.ended(call, FINISHED, outcome=result_text(result) if shown else None, at=at)

    def failed(
        self, task_id: Any, link: Call | int | None, failure: Failure, at: float | None = None
    ) -> None:
        """The call of task *task_id* failed, after any retries (daglite's `on_node_error`).

        *at* is when (`time.time()` where it ran); now if None.
        """
        call = self._find(task_id, link)
        if call is not None:
            self.ended(call, FAILED, failure=failure, at=at)

    def raised(self, call: Call, error: BaseException) -> None:
        """*call* ended with *error*, which no hook saw: cancelled if it was the interrupt.

        Else it failed. The kernel's interrupt reaches its main thread only: elsewhere a
        `KeyboardInterrupt` is what the task raised.
        """
        main = threading.current_thread() is threading.main_thread()
        if isinstance(error, KeyboardInterrupt) and main:
            self.ended(call, CANCELLED, reason="interrupted")
        else:
            self.ended(call, FAILED, failure=Failure.of(error))

    def ended(
        self,
        call: Call,
        state: str,
        outcome: str | None = None,
        failure: Failure | None = None,
        reason: str | None = None,
        at: float | None = None,
    ) -> bool:
        """Record that *call* ended in *state* (at *at*, or now); False if it had ended already.

        Whoever takes the call out of the live ones ends it: that step comes first, so two
        ends never both count, and an interrupt in the middle can cost a count, never leave
        a group that waits for a call forever. The call keeps text only.
        """
        with self.lock:
            if self.live.pop(call.id, None) is None:
                return False
            group = call.group
            if group is not None:
                group.live.discard(call)
            call.state, call.ended = state, at or time.time()
            if call.func is None and call.task_id is not None:  # first seen by its task
                self._by_task.pop(call.task_id, None)
            call.func = call.tracker = call.future = call.context = None
            if outcome is not None:
                call.outcome = outcome
            if failure is not None:
                call.failure = failure
            if reason is not None:
                call.reason = reason
            self.ended_counts[state] += 1
            self.recent.append(call)
            if group is not None:
                group.ended_counts[state] += 1
                group.last_end = call.ended
                if failure is not None:
                    _keep_failure(group.failures, call, failure)
                if reason is not None and group.reason is None:
                    group.reason = reason
        if call.output is not None:
            self._echo(call, call.output.close())
        return True

    def adopt(self, call: Call, future: Future[Any]) -> None:
        """*future* runs *call*, which ends as it does (see `settle`)."""
        if call.ended is None:
            call.future = future
        future.add_done_callback(partial(self.settle, call))

    def settle(self, call: Call, future: Future[Any]) -> None:
        """End *call* from its backend's finished *future*, unless daglite's hooks did already.

        Hooks tell how a task ended; the Future also tells what no hook sees: a worker that
        died, an argument that could not be sent, a cancellation.
        """
        live_future, call.live_future = call.live_future, None  # it goes with its result
        if live_future is None and call.ended is not None and not call.alone:
            return  # a worker's report ended it, and no one shows or waits for its result
        if future.cancelled():
            self.ended(call, CANCELLED, reason=call.reason)
            if live_future is not None:
                live_future.take_cancel()
            return
        error = future.exception()
        if error is None:
            result = future.result()
            outcome = result_text(result) if call.alone else None
            if not self.ended(call, FINISHED, outcome=outcome) and call.outcome is None:
                call.outcome = outcome  # a worker's report ended it first, without the result
            if live_future is not None:
                live_future.set_result(result)
        else:
            own = original_error(error)
            self.ended(call, FAILED, failure=Failure.of(own))
            if live_future is not None:
                live_future.set_exception(own)

    # region Output

    def wrote(self, call: Call, text: str) -> bool:
        """*call*, running in the kernel, wrote *text* (see `daglite_nb._output.TaskStream`)."""
        lines = (call.output or self._output_of(call)).write(text)
        if lines and self.echo is not None:
            self.echo(call, lines)
        return True

    def reported_output(self, call_id: int, text: str, skipped: int) -> None:
        """A worker sent *text* that the call *call_id* wrote, after *skipped* lines."""
        call = self.live.get(call_id)
        if call is not None:
            self._echo(call, self._output_of(call).add(text, skipped))

    def _output_of(self, call: Call) -> Output:
        output = call.output
        if output is None:
            with self.lock:
                output = call.output
                if output is None:
                    output = call.output = Output(self.budget)
        return output

    def _echo(self, call: Call, lines: list[str]) -> None:
        echo = self.echo
        if lines and echo is not None:
            echo(call, lines)

    # region Workflows

    def workflow_started(self, session: Any, name: str) -> None:
        """A workflow run (a daglite session other than the notebook's) started."""
        group = self.group("workflow", name, "")
        with self.lock:
            self._workflows[session] = group
        self._show(group)

    def workflow_ended(self, session: Any) -> None:
        """The workflow run *session* ended."""
        with self.lock:
            group = self._workflows.pop(session, None)
        if group is not None:
            group.closed = True

    # region Cancelling

    def cancel(self, call: Call, reason: str | None = None) -> bool:
        """Cancel *call* if it has not started; return whether it is cancelled.

        A pending call that never got a backend Future (its submission was interrupted) is
        just ended.
        """
        future = call.future
        if call.state != PENDING:
            return call.state == CANCELLED
        call.reason = reason
        if future is not None and not _cancel_backend_future(future):
            return call.state == CANCELLED
        self.ended(call, CANCELLED, reason=reason)
        return True

    def cancel_pending(
        self, cell: int | None = None, backend: str | None = None, reason: str | None = None
    ) -> int:
        """Cancel pending calls (of *cell*, on *backend*, if given); return how many."""
        with self.lock:
            calls = [
                call
                for call in self.live.values()
                if call.state == PENDING
                and (cell is None or call.cell == cell)
                and (backend is None or call.backend == backend)
            ]
        return sum(self.cancel(call, reason) for call in reversed(calls))

    def shut(self, reason: str) -> None:
        """The session ended: every call that has not ended gets its final word, *reason*.

        Pending calls are cancelled; running ones (whose outcome the session no longer
        receives) end as cancelled too, with the reason. No call joins afterwards.
        """
        self.cancel_pending(reason=reason)
        with self.lock:
            self.closed = reason
            calls = list(self.live.values())
            workflows = list(self._workflows.values())
            groups = [group for group, _ in self._open] + workflows
            self._open = []
        for call in calls:
            live_future, call.live_future = call.live_future, None
            ended = self.ended(call, CANCELLED, reason=f"{reason} while it ran")
            if ended and live_future is not None:
                live_future.take_cancel()
        for group in groups:
            group.closed = True


def _keep_failure(failures: list[tuple[Call, Failure]], call: Call, failure: Failure) -> None:
    """Keep the failure of *call* among the `GROUP_FAILURES` of the earliest calls."""
    failures.append((call, failure))
    failures.sort(key=lambda kept: (kept[0].index is None, kept[0].index or 0, kept[0].id))
    del failures[GROUP_FAILURES:]


_GONE = Call(0, "", "", None)
"""Stands for a submitted call that ended before its task reported a start."""


def _cancel_backend_future(future: Future[Any]) -> bool:
    """Cancel the backend's *future*; an adopted `LiveFuture` as the plain Future it was."""
    if isinstance(future, LiveFuture):  # its own cancel() comes here through `Tracker.cancel`
        return Future.cancel(future)
    return future.cancel()  # a backend's own cancel, e.g. the Dask backend's, which tells Dask
