"""A call's output: its bounds, the session's budget, and the streams that route writes."""

from __future__ import annotations

import io
import sys
import threading

from daglite.plugins.reporters import DirectEventReporter

from daglite_nb import _output
from daglite_nb._output import LINE_CHARS
from daglite_nb._output import LINES
from daglite_nb._output import Budget
from daglite_nb._output import Output
from daglite_nb._output import TaskStream
from daglite_nb.model import current_call
from daglite_nb.tracking import Tracker


def test_an_output_keeps_its_newest_lines_and_counts_all():
    output = Output()
    for i in range(LINES + 7):
        output.write(f"line {i}\n")
    assert output.count == LINES + 7 and output.more == 7
    assert output.text().splitlines()[:2] == ["… 7 more lines", "line 7"]
    assert output.text().splitlines()[-1] == f"line {LINES + 6}"


def test_lines_are_joined_across_writes_and_cut_when_too_long():
    output = Output()
    assert output.write("a") == []
    assert output.write("b\nc") == ["ab"]
    assert output.close() == ["c"]
    output.write("x" * (10 * LINE_CHARS))
    output.write("y" * (10 * LINE_CHARS) + "\n")
    line = output.lines[-1]
    assert len(line) == LINE_CHARS and line == "x" * (LINE_CHARS - 1) + "…"
    assert output.count == 3


def test_the_session_budget_bounds_what_all_outputs_keep_and_is_given_back():
    budget = Budget(chars=30)
    first, second = Output(budget), Output(budget)
    first.write("0123456789\n" * 2)
    second.write("0123456789\n0123456789\n")
    assert len(first.lines) == 2 and len(second.lines) == 1 and second.more == 1
    del first
    assert budget.left == 20  # the first output's lines are given back when it goes
    second.write("abc\n")
    assert list(second.lines) == ["0123456789", "abc"]


def test_a_task_stream_routes_a_calls_writes_and_passes_the_rest_through():
    underlying = io.StringIO()
    kept: list[tuple[object, str]] = []
    stream = TaskStream(underlying, lambda link, text: kept.append((link, text)) or True)
    stream.write("kernel\n")
    token = current_call.set(7)
    try:
        print("task", file=stream)
    finally:
        current_call.reset(token)
    assert underlying.getvalue() == "kernel\n"
    assert kept == [(7, "task"), (7, "\n")]
    assert stream.getvalue() == "kernel\n"  # everything else is the stream's own


def test_a_tracked_calls_output_and_its_echo():
    tracker = Tracker()
    echoed: list[tuple[str, list[str]]] = []
    tracker.echo = lambda call, lines: echoed.append((call.label, lines))
    call = tracker.submitted("task", "thread", None, text="task(1)")
    tracker.wrote(call, "one\ntw")
    tracker.reported_output(call.id, "o\n", skipped=3)
    tracker.ended(call, "finished")
    assert call.output.text() == "… 3 more lines\none\ntwo"
    assert echoed == [("task(1)", ["one"]), ("task(1)", ["two"])]
    tracker.reported_output(call.id, "after its end\n", 0)  # a late report is dropped
    assert call.output.count == 5


def test_a_worker_sends_a_calls_output_before_its_end(monkeypatch):
    sent: list[tuple[object, ...]] = []
    reporter = DirectEventReporter(lambda event: sent.append((event.type, event.data)))
    monkeypatch.setattr(_output._daglite, "event_reporter", lambda: reporter)
    worker = _output.WorkerOutput("event")
    for i in range(LINES + 2):
        assert worker.write(9, f"{i}\n")
    worker.write(9, "unended")
    worker.send(9)
    ((event, (kind, _, call_id, text, skipped)),) = sent
    assert (event, kind, call_id, skipped) == ("event", "output", 9, 2)
    assert text.startswith("2\n") and text.endswith(f"{LINES + 1}\nunended")
    worker.send(9)
    assert len(sent) == 1  # nothing new, nothing sent


def test_install_wraps_the_standard_streams_once(monkeypatch):
    originals = {name: io.StringIO() for name in ("stdout", "stderr")}
    for name, stream in originals.items():
        monkeypatch.setattr(sys, name, stream)
    _output.install(lambda link, text: False)
    _output.install(lambda link, text: False)
    for name, stream in originals.items():
        wrapped = getattr(sys, name)
        assert isinstance(wrapped, TaskStream) and wrapped.stream is stream


def test_writes_from_many_threads_into_one_call_lose_no_line():
    output = Output()
    threads = [
        threading.Thread(target=lambda: [output.write("x\n") for _ in range(200)]) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert output.count == 800
