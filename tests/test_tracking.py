"""The model of calls, in plain Python (no IPython): every kind of event, counts, bounds."""

from __future__ import annotations

import gc
import threading
import uuid
import weakref
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from daglite_nb import _events
from daglite_nb._text import Failure
from daglite_nb.futures import LiveFuture
from daglite_nb.futures import LiveFutureGroup
from daglite_nb.tracking import Tracker


def _nonzero(counts):
    return {state: count for state, count in counts.items() if count}


def _submit(tracker, name="work", map_index=None, func=None, group=None, text=None):
    """A call submitted to a backend elsewhere (its end comes from its Future too)."""
    call = tracker.submitted(name, "process", None, map_index, func, group, text)
    inner = Future()
    call.future = inner
    inner.add_done_callback(lambda f: tracker.settle(call, f))
    return call, inner


def _task(name="work", parent=None, index=None, is_async=False):
    """What a worker reports of a task call that starts (as daglite's `TaskMetadata` has it)."""
    return SimpleNamespace(
        id=uuid.uuid4(),
        name=name,
        parent_id=parent,
        map_index=index,
        backend="process",
        is_async=is_async,
    )


def _start(tracker, call, name=None, parent=None, index=None):
    """Report that a task starts in the context of the submitted *call* (None: no call)."""
    task = _task(name or "work", parent, index)
    tracker.started(call.id if call else None, task, "pid 7")
    return task.id


def test_a_submitted_call_goes_pending_running_finished():
    tracker = Tracker()
    call, inner = _submit(tracker, text="work(1, y=2)")
    assert call.state == "pending" and tracker.counts["pending"] == 1
    task = _start(tracker, call, name="work")
    assert call.state == "running" and call.worker == "pid 7" and call.task_id == task
    tracker.finished(task, call.id)  # a worker's report carries no result
    inner.set_result(42)  # the Future brings it
    assert call.state == "finished" and call.outcome == "42"
    assert _nonzero(tracker.counts) == {"finished": 1}
    assert not tracker.busy and list(tracker.recent) == [call]


def test_a_pools_reports_reach_the_tracker_and_other_events_daglite_s_reporter(monkeypatch):
    tracker = Tracker()
    monkeypatch.setattr(_events.events(), "tracker", tracker)
    others: list[tuple[object, object]] = []
    hand = _events.reports_to(lambda event_type, data: others.append((event_type, data)))
    call, _ = _submit(tracker)
    task = uuid.uuid4()
    started = ("started", task, call.id, "work", None, None, "process", False, "pid 7", False, 1.0)
    hand(_events.EVENT, started)
    hand("daglite.log", {"message": "hello"})
    hand(_events.EVENT, ("finished", task, call.id, 2.0))
    assert (call.state, call.worker, call.started, call.ended) == ("finished", "pid 7", 1.0, 2.0)
    assert others == [("daglite.log", {"message": "hello"})]


def test_the_future_ends_a_call_that_no_hook_ended():
    tracker = Tracker()
    lost, inner = _submit(tracker)
    _start(tracker, lost)
    inner.set_exception(RuntimeError("the worker died"))
    assert lost.state == "failed" and lost.failure.summary == "RuntimeError: the worker died"
    cancelled, inner = _submit(tracker)
    assert tracker.cancel(cancelled) and cancelled.state == "cancelled"
    assert _nonzero(tracker.counts) == {"failed": 1, "cancelled": 1}


def test_a_late_start_report_changes_nothing():
    tracker = Tracker()
    call, inner = _submit(tracker)
    inner.set_result(1)
    assert tracker.started(call.id, _task(), "pid 7") is None
    assert call.state == "finished" and _nonzero(tracker.counts) == {"finished": 1}


def test_retries_cache_hits_and_generator_items_are_counted():
    tracker = Tracker()
    group = tracker.group("dnb.map", "work", "thread")
    calls = [_submit(tracker, map_index=i, group=group)[0] for i in range(3)]
    tasks = [_start(tracker, call, index=i) for i, call in enumerate(calls)]
    tracker.retried(tasks[0], calls[0].id, 1)
    tracker.retried(tasks[0], calls[0].id, 2)
    tracker.cache_hit(tasks[1], calls[1].id)
    for index in range(4):
        tracker.iterated(tasks[2], calls[2].id, index)
    for task, call in zip(tasks, calls, strict=True):
        tracker.finished(task, call.id)
    assert (calls[0].attempts, calls[1].cached, calls[2].items) == (2, True, 4)
    assert (group.retried, group.cached, group.items) == (1, 1, 4)
    tracker.close(group)
    assert group.ended and group.state == "finished" and group.counts["finished"] == 3


def test_a_call_whose_submission_was_interrupted_can_still_be_cancelled():
    tracker = Tracker()
    call = tracker.submitted("work", "thread", None, 0, len)  # no backend Future came back
    assert tracker.cancel_pending() == 1 and call.state == "cancelled"
    assert call.group.complete and not tracker.busy


def test_map_tasks_items_join_one_group_per_fan_out():
    tracker = Tracker()
    first = [_submit(tracker, map_index=i, func=len)[0] for i in range(3)]
    again = [_submit(tracker, map_index=i, func=len)[0] for i in range(2)]
    assert first[0].group is first[2].group and again[0].group is not first[0].group
    assert first[0].group.total == 3 and first[0].group.closed, "a new fan-out closes the last"
    assert [call.label for call in first] == ["work[0]", "work[1]", "work[2]"]
    assert again[0].group.label == "work" and not again[0].group.closed
    tracker.cell_ended()
    assert again[0].group.closed


def test_a_group_is_complete_only_when_its_calls_ended_and_none_can_join():
    tracker = Tracker()
    call, inner = _submit(tracker, map_index=0, func=len)
    group = call.group
    inner.set_result(1)
    assert group.complete and group.state == "finished" and not group.ended
    tracker.cell_ended()
    assert group.ended


def test_a_fan_out_of_nothing_finishes_once_it_is_closed():
    tracker = Tracker()
    group = tracker.group("dnb.map", "work", "thread")
    assert group.state == "pending" and not group.ended
    tracker.close(group)
    assert group.state == "finished" and group.ended and group.total == 0


def test_calls_that_no_submission_announced_nest_under_their_parent():
    tracker = Tracker()
    outer, inner = _submit(tracker, text="outer(3)")
    outer_task = _start(tracker, outer)
    nested = [
        _start(tracker, outer, name=f"leaf[{i}]", parent=outer_task, index=i) for i in range(3)
    ]
    child = outer.children["leaf"]
    assert child.total == 3 and child.counts["running"] == 3 and not child.ended
    tracker.failed(nested[1], outer.id, Failure("ValueError: no", "tb", "full"))
    for task in (nested[0], nested[2]):
        tracker.finished(task, outer.id)
    assert child.complete and child.state == "failed"
    assert child.failures[0][1].summary == "ValueError: no"
    assert not child.ended, "its owner still runs"
    inner.set_result(None)
    assert child.ended and outer.state == "finished"


def test_gathered_calls_form_a_group_and_workflow_calls_join_their_run():
    tracker = Tracker()
    tasks = [_start(tracker, None, name=f"fetch[{i}]", index=i) for i in range(3)]
    group = tracker._by_task[tasks[0]].group
    assert group.kind == "gather_tasks" and group.total == 3
    session = uuid.uuid4()
    tracker.workflow_started(session, "pipeline")
    tracker.workflow_of = lambda: session  # the thread of the call runs in the workflow's
    tracker.started(None, _task("load"), "MainThread")
    tracker.workflow_ended(session)
    workflow = tracker._open[-1][0]
    assert workflow.kind == "workflow" and workflow.children["load"].total == 1


def test_a_group_shows_the_failures_of_its_earliest_calls_whatever_the_order_of_ends():
    tracker = Tracker()
    group = tracker.group("dnb.map", "work", "thread")
    calls = [_submit(tracker, map_index=i, group=group) for i in range(6)]
    for call, inner in reversed(calls):
        inner.set_exception(ValueError(f"no {call.index}"))
    assert [call.index for call, _ in group.failures] == [0, 1, 2]
    assert [failure.summary for _, failure in group.failures][0] == "ValueError: no 0"


def test_counts_stay_honest_when_many_threads_change_calls_at_once():
    tracker = Tracker()
    group = tracker.group("dnb.map", "work", "thread")
    calls = [_submit(tracker, map_index=i, group=group) for i in range(4000)]

    def run(part):
        for call, inner in part:
            _start(tracker, call)
            inner.set_result(None)

    threads = [threading.Thread(target=run, args=(calls[i::8],)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert _nonzero(tracker.counts) == {"finished": 4000}
    assert group.counts["finished"] == 4000 and group.done == group.total == 4000


def test_shutting_gives_every_live_call_its_final_word():
    tracker = Tracker()
    waiting, _ = _submit(tracker)
    running, _ = _submit(tracker)
    _start(tracker, running)
    group = tracker.group("map_tasks", "work", "thread")
    tracker.shut("the kernel shut down")
    assert waiting.state == running.state == "cancelled"
    assert waiting.reason == "the kernel shut down"
    assert running.reason == "the kernel shut down while it ran"
    assert group.closed and tracker.started(None, _task("late"), "w") is None


def test_a_live_future_gets_the_outcome_and_raises_the_task_s_own_error():
    tracker = Tracker()
    call, inner = _submit(tracker, text="work()")
    future = call.live_future = LiveFuture(call, tracker)
    from daglite.exceptions import TaskError

    error = ValueError("bad")
    wrapped = TaskError("Task 'work' failed")
    wrapped.__cause__ = error
    inner.set_exception(wrapped)
    with pytest.raises(ValueError, match="bad"):
        future.result()
    assert future.state == "failed" and call.failure.summary == "ValueError: bad"


def test_cancelling_a_live_future_cancels_the_backend_future():
    tracker = Tracker()
    call, inner = _submit(tracker, text="work()")
    future = call.live_future = LiveFuture(call, tracker)
    assert future.cancel() and future.cancelled() and inner.cancelled()
    assert call.state == "cancelled"
    group = LiveFutureGroup(tracker.group("dnb.map", "work", "thread"), [future])
    assert len(group) == 1 and group[0] is future


def test_a_future_group_cancels_its_calls_that_have_not_started():
    tracker = Tracker()
    group = tracker.group("dnb.map", "work", "process")
    calls = [_submit(tracker, map_index=i, group=group) for i in range(3)]
    futures = []
    for call, _ in calls:
        call.live_future = LiveFuture(call, tracker)
        futures.append(call.live_future)
    tracker.close(group)
    _start(tracker, calls[0][0], index=0)
    mapped = LiveFutureGroup(group, futures)
    assert mapped.state == "running" and _nonzero(mapped.counts) == {"pending": 2, "running": 1}
    assert mapped.cancel() == 2 and mapped.cancel() == 0
    calls[0][1].set_result(1)
    assert mapped.state == "cancelled" and _nonzero(mapped.counts) == {
        "finished": 1,
        "cancelled": 2,
    }
    assert [future.cancelled() for future in mapped] == [False, True, True]


def test_a_future_groups_timeout_leaves_no_time_for_what_is_not_done():
    # That it bounds the whole wait, not each future's, shows only in time: not tested here.
    tracker = Tracker()
    group = tracker.group("dnb.map", "work", "process")
    futures = []
    for i in range(2):
        call, inner = _submit(tracker, map_index=i, group=group)
        call.live_future = LiveFuture(call, tracker)
        futures.append((call.live_future, inner))
    mapped = LiveFutureGroup(group, [future for future, _ in futures])
    futures[0][1].set_result(1)
    with pytest.raises(TimeoutError):
        mapped.results(timeout=0)  # no time left for the second: it does not wait for it
    futures[1][1].set_result(2)
    assert mapped.results(timeout=0) == [1, 2]  # done futures need no time


def test_an_ended_call_keeps_text_not_objects():
    tracker = Tracker()

    class Big:
        pass

    big = Big()
    call, inner = _submit(tracker, text="work(<Big>)")
    inner.set_result(big)
    kept = weakref.ref(big)
    del big, inner
    gc.collect()
    assert kept() is None, "the tracker holds no result"
    assert call.future is None and call.outcome.startswith("<")


def test_the_tracker_keeps_a_bounded_tail_of_ended_calls():
    tracker = Tracker(recent=5)
    for _ in range(20):
        _, inner = _submit(tracker)
        inner.set_result(None)
    assert len(tracker.recent) == 5 and tracker.counts["finished"] == 20
    assert [c.state for c in tracker.latest(3)] == ["finished"] * 3
