"""The task state machine and records, in plain Python (no IPython)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future

import pytest

from daglite_nb.tracking import FOLD_AT
from daglite_nb.tracking import FanOut
from daglite_nb.tracking import LiveFuture
from daglite_nb.tracking import LiveFutureGroup
from daglite_nb.tracking import TaskGroup
from daglite_nb.tracking import Tracker


def _submit(tracker, name="work", args=(1,), kwargs=None, map_index=None, direct=True, group=None):
    """Submit as dnb.submit (direct) or daglite's map_tasks do, to a backend elsewhere."""
    record = tracker.new_record(name, args, kwargs or {}, "thread", map_index, group, direct)
    inner = Future()
    live = record.live_future = LiveFuture(record, tracker) if direct else None
    tracker.track(inner, record, ends_here=False)
    return live or inner, inner


def _nonzero(counts):
    return {state: count for state, count in counts.items() if count}


def _start(tracker, future):
    tracker.on_started("started", {"id": future.record.id, "thread": "w-1", "pid": 0, "at": 1.0})


def test_pending_running_finished():
    tracker = Tracker()
    future, inner = _submit(tracker, kwargs={"y": 2})
    assert future.state == "pending" and future.record.call == "work(1, y=2)"
    _start(tracker, future)
    assert future.state == "running" and future.worker == "pid 0"
    inner.set_result(42)
    assert future.state == "finished" and future.result() == 42
    assert _nonzero(tracker.counts) == {"finished": 1}
    assert not tracker.busy and tracker.recent == [future.record]


def test_start_report_from_this_process_names_the_thread():
    tracker = Tracker()
    future, _ = _submit(tracker)
    report = {"id": future.record.id, "thread": "w-1", "pid": os.getpid(), "at": 1.0}
    tracker.on_started("started", report)
    assert future.state == "running" and future.worker == "w-1"


def test_failure_and_cancel_and_late_start_report():
    tracker = Tracker()
    failing, inner = _submit(tracker)
    inner.set_exception(ValueError("no"))
    assert failing.state == "failed"
    with pytest.raises(ValueError, match="no"):
        failing.result()
    _start(tracker, failing)  # a report that arrives after the end changes nothing
    assert failing.state == "failed"
    cancelled, _ = _submit(tracker)
    assert cancelled.cancel() and cancelled.cancelled() and cancelled.state == "cancelled"
    assert cancelled.cancel(), "cancelling twice still says cancelled, like Future.cancel"
    assert tracker.counts["failed"] == tracker.counts["cancelled"] == 1


def test_states_never_go_back():
    tracker = Tracker()
    future, inner = _submit(tracker)
    _start(tracker, future)
    _start(tracker, future)
    assert tracker.counts["running"] == 1
    inner.set_result(None)
    assert _nonzero(tracker.counts) == {"finished": 1}


def test_running_futures_cannot_be_cancelled():
    tracker = Tracker()
    future, inner = _submit(tracker)
    inner.set_running_or_notify_cancel()
    assert not future.cancel() and future.state == "pending"


def test_call_text_is_shortened():
    tracker = Tracker()
    future, _ = _submit(tracker, args=("x" * 500, list(range(100))))
    assert future.record.call == "work('xxxxxxxxx...xxxxxxxxxx', [0, 1, 2, 3, ...])"
    many, _ = _submit(tracker, args=tuple(range(40)))
    assert len(many.record.call) == 60 and many.record.call.endswith("…")


def test_detail_is_bounded_and_counts_are_not():
    tracker = Tracker(recent=50)
    for _ in range(2000):
        _, inner = _submit(tracker)
        inner.set_result(None)
    assert not tracker.busy and len(tracker.recent) == 50
    assert tracker.counts["finished"] == 2000


def test_map_indexed_calls_form_automatic_groups():
    tracker = Tracker()
    seen = []
    tracker.on_fan_out = seen.append
    first = [_submit(tracker, map_index=i, direct=False) for i in range(3)]
    second = [_submit(tracker, map_index=i, direct=False) for i in range(2)]
    tracker.apply()
    assert [g.total for g in seen] == [3, 2]
    # daglite's own futures come back as they are; the tracker follows them.
    assert all(type(future) is Future for future, _ in first + second)
    for _, inner in first:
        inner.set_result(None)
    tracker.apply()  # readers of groups apply first (widgets and the panel do)
    assert seen[0].done == 3 and seen[0].ended is not None and seen[1].done == 0
    assert tracker.counts["finished"] == 3 and tracker.counts["pending"] == 2


def test_a_nested_fan_out_leaves_the_outer_one_whole():
    # map_tasks inside a task that runs inline: the inner fan-out opens between two outer items.
    tracker = Tracker()
    outer = tracker.new_record("outer", (0,), {}, "inline", 0)
    nested = [tracker.new_record("inner", (i,), {}, "inline", i) for i in range(2)]
    outer_next = tracker.new_record("outer", (1,), {}, "inline", 1)
    assert outer.group is outer_next.group and outer.group.total == 2
    assert nested[0].group is nested[1].group and nested[0].group.total == 2


def test_group_counts_failures_and_end():
    tracker = Tracker()
    group = TaskGroup("work", "thread")
    pairs = [_submit(tracker, map_index=i, group=group) for i in range(5)]
    for index, (_, inner) in enumerate(pairs):
        if index < 4:
            inner.set_exception(RuntimeError(str(index)))
        else:
            inner.set_result(index)
    tracker.apply()
    assert group.total == group.done == 5 and group.ended is not None
    assert group.counts["failed"] == 4 and len(group.failures) == 3
    assert group.failures[0].summary == "RuntimeError: 0"
    assert group.failures[0].traceback == "RuntimeError: 0\n"  # never raised: no frames
    futures = LiveFutureGroup(group, [f for f, _ in pairs])
    assert len(futures) == 5 and futures[4].result() == 4
    with pytest.raises(RuntimeError, match="0"):
        futures.results()


def test_direct_calls_raise_the_original_exception():
    from daglite.exceptions import TaskError

    tracker = Tracker()
    direct, inner = _submit(tracker)
    try:
        raise TaskError("Task failed") from KeyError("original")
    except TaskError as error:
        inner.set_exception(error)
    with pytest.raises(KeyError, match="original"):
        direct.result()
    wrapped, inner = _submit(tracker, direct=False)
    inner.set_exception(TaskError("kept"))
    with pytest.raises(TaskError):
        wrapped.result()


def test_concurrent_transitions_lose_no_count():
    tracker = Tracker()

    def worker():
        for _ in range(500):
            future, inner = _submit(tracker)
            _start(tracker, future)
            inner.set_result(None)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _nonzero(tracker.counts) == {"finished": 4000}


def test_listeners_are_told_once_per_apply():
    tracker = Tracker()
    told = []
    signals = []
    tracker.on_events = lambda: signals.append(1)
    group = TaskGroup("work", "thread", tracker)
    group.listen(lambda: told.append("group"))
    pairs = [_submit(tracker, map_index=i, group=group) for i in range(100)]
    for _, inner in pairs:
        inner.set_result(None)
    assert signals == [1], "one signal until the tracker applies"
    assert told == [] and group.done == 100, "counts change at once, listeners wait"
    tracker.apply()
    assert told == ["group"]
    _submit(tracker)
    assert signals == [1], "nobody watches single calls"
    tracker.listen(lambda: told.append("tracker"))
    _submit(tracker)
    assert signals == [1, 1], "the tracker's listeners (the panel) watch every call"


def test_a_submit_that_raises_ends_its_record_as_failed():
    from daglite.backends.base import Backend

    from daglite_nb._daglite import SubmitContext
    from daglite_nb.backends import tracked_backend

    class Broken(Backend):
        name = "broken"

        def _submit(self, func, args, kwargs, *, context):
            raise RuntimeError("pool is broken")

    tracker = Tracker()
    backend = tracked_backend(Broken, tracker, "broken")()
    with pytest.raises(RuntimeError, match="pool is broken"):
        backend._submit(len, ((),), {}, context=SubmitContext(map_index=None))
    assert _nonzero(tracker.counts) == {"failed": 1} and not tracker.busy


def test_running_counts_follow_starts_and_ends_per_fan_out():
    tracker = Tracker()
    group = TaskGroup("work", "thread", tracker)
    pairs = [_submit(tracker, map_index=i, group=group) for i in range(5)]
    for future, _ in pairs[:3]:
        _start(tracker, future)
    tracker.apply()  # as the flusher does before a refresh: starts are counted then
    assert group.counts["running"] == 3 and group.counts["pending"] == 2
    pairs[0][1].set_result(None)
    pairs[3][1].set_result(None)  # never reported as started: pending -> finished
    assert group.counts == {
        "pending": 1,
        "running": 2,
        "finished": 2,
        "failed": 0,
        "cancelled": 0,
    }
    assert tracker.counts["running"] == 2 and tracker.counts["pending"] == 1
    for _, inner in pairs[1:3] + pairs[4:]:
        inner.set_result(None)
    tracker.apply()
    assert group.counts["finished"] == 5 and tracker.counts["running"] == 0
    assert tracker._running == {}, "a fan-out that ended leaves nothing behind"


# region Fan-outs that run here


def _tracked(backend_name, recent=50):
    """A tracker, the fan-outs it opens, and a started notebook backend whose calls it records."""
    from daglite_nb import _local
    from daglite_nb.backends import tracked_backend

    backend_class = {"inline": _local.NotebookInlineBackend, "thread": _local.NotebookThreadBackend}
    tracker = Tracker(recent=recent)
    opened = []
    tracker.on_fan_out = opened.append
    backend = tracked_backend(backend_class[backend_name], tracker, backend_name)()
    backend.start(None)
    return tracker, opened, backend


def _map(backend, func, items):
    """Submit as daglite's `map_tasks` does: one callable, map indexes in order."""
    return [backend.submit(func, (item,), map_index=i) for i, item in enumerate(items)]


def test_map_calls_that_run_here_keep_their_state_in_the_fan_out():
    tracker, opened, backend = _tracked("inline", recent=4)
    seen_inside = []

    def work(x):
        if x == 3:
            raise ValueError("three")
        shown = tracker.latest(1)[0]  # the panel's view of the call that runs now
        seen_inside.append((shown.call, shown.state, shown.map_index, shown.worker))
        return x * 2

    futures = _map(backend, work, range(5))
    assert [type(fan_out) for fan_out in opened] == [FanOut], "one fan-out, no record per call"
    assert seen_inside[1] == ("work(1)", "running", 1, threading.current_thread().name)
    assert [f.result() for f in futures[:3]] == [0, 2, 4]
    assert isinstance(futures[3].exception(), ValueError)
    tracker.apply()
    fan_out = opened[0]
    assert _nonzero(fan_out.counts) == {"finished": 4, "failed": 1}
    assert fan_out.failures[0].summary == "ValueError: three"
    assert _nonzero(tracker.counts) == {"finished": 4, "failed": 1} and not tracker.busy
    assert fan_out.args == fan_out.futures == {}, "nothing kept once all ended"
    last = tracker.recent  # bounded detail, in the order the calls ended
    assert [r.map_index for r in last] == [1, 2, 3, 4] and last[2].state == "failed"
    assert last[-1].call == "work(4)" and last[-1].ended >= last[-1].started >= fan_out.created

    backend.submit(work, (9,), map_index=9)  # not the fan-out's next call: a record of its own
    assert tracker.recent[-1].group is None and tracker.recent[-1].call == "work(9)"
    assert backend.submit(_double, (), {"x": 2}, map_index=0).result() == 4  # a new fan-out
    tracker.apply()
    assert tracker.recent[-1].group is opened[1] and tracker.recent[-1].call == "_double(x=2)"


def test_pending_fan_out_calls_are_cancelled_and_never_run():
    tracker, opened, backend = _tracked("thread")
    gate = threading.Event()
    ran = []

    def work(x):
        ran.append(x)
        gate.wait(30)
        return x

    futures = _map(backend, work, range(40))
    try:
        shown = tracker.latest(40)
        assert sorted(r.map_index for r in shown) == list(range(40))
        assert {r.state for r in shown} <= {"pending", "running"}
        cancelled = tracker.cancel_pending()
    finally:
        gate.set()
    assert cancelled == sum(f.cancelled() for f in futures) > 0
    assert [f.result() for f in futures if not f.cancelled()] == sorted(ran)
    assert not set(ran) & {i for i, f in enumerate(futures) if f.cancelled()}
    tracker.apply()
    assert _nonzero(tracker.counts) == {"finished": 40 - cancelled, "cancelled": cancelled}
    assert opened[0].done == 40 and not tracker.busy
    backend.stop()


def test_fan_outs_of_many_threads_lose_no_count():
    tracker, opened, backend = _tracked("thread")
    results = []

    def mapper():
        results.append([f.result() for f in _map(backend, _double, range(300))])

    threads = [threading.Thread(target=mapper) for _ in range(4)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    assert results == [[2 * i for i in range(300)]] * 4
    tracker.apply()
    assert [fan_out.done for fan_out in opened] == [300] * 4, "one fan-out per thread"
    assert _nonzero(tracker.counts) == {"finished": 1200}
    backend.stop()


def test_without_a_flusher_ended_calls_are_counted_in_bounded_batches():
    tracker, opened, backend = _tracked("inline")
    _map(backend, _double, range(3 * FOLD_AT))  # nobody calls apply() meanwhile
    fan_out = opened[0]
    assert fan_out.waiting_ends < FOLD_AT and len(fan_out.args) < FOLD_AT
    assert fan_out.done > FOLD_AT


def _double(x):
    return 2 * x
