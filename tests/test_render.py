"""The renderers and the text helpers, without IPython: outcomes, escaping, user frames."""

from __future__ import annotations

import html
import re

from daglite_nb._output import Output
from daglite_nb._text import Failure
from daglite_nb._text import call_text
from daglite_nb._text import safe_repr
from daglite_nb.display import render
from daglite_nb.model import Call
from daglite_nb.model import Group

EVIL = "<script>alert(1)</script>"


def _call(state="finished", **facts):
    call = Call(1, EVIL, EVIL, 3, text=f"{EVIL}()")
    call.state, call.worker = state, EVIL
    for name, value in facts.items():
        setattr(call, name, value)
    return call


def _group(counts):
    group = Group("map_tasks", "square", "thread", 1)
    group.ended_counts.update(counts)
    group.closed = True
    return group


def test_seconds_read_well():
    assert render.seconds(0.123) == "0.12 s"
    assert render.seconds(12.34) == "12.3 s"
    assert render.seconds(185) == "3 min 05 s"
    assert render.ticking_seconds(12.34) == "12 s"


def test_fallbacks_carry_the_outcome_and_no_timings():
    done = _call(outcome="49", ended=1.0, started=0.5)
    assert render.call_text(done) == f"<LiveFuture {EVIL}() on {EVIL}: finished → 49>"
    failed = _call("failed", failure=Failure("ValueError: bad", "tb", "tb"), ended=1.0)
    assert render.call_text(failed).endswith("failed: ValueError: bad>")
    running = _call("running")
    assert render.call_text(running) == f"<LiveFuture {EVIL}() on {EVIL}>", "no live state"
    open_group = _group({"finished": 1})
    open_group.closed = False
    assert render.group_text(open_group) == "<map_tasks square on thread>"
    group = _group({"finished": 5, "failed": 2, "cancelled": 1})
    assert render.group_text(group) == (
        "<map_tasks square × 8 on thread: 5 finished, 2 failed, 1 cancelled>"
    )
    timing = re.compile(r"\d s\b|ETA|/s\b")
    assert not timing.search(render.group_static_html(group))
    assert not timing.search(render.call_static_html(done))
    assert timing.search(render.group_live_html(group))


def test_a_group_shows_each_outcome_apart():
    group = _group({"finished": 6, "failed": 2})
    assert group.state == "failed"
    html = render.group_live_html(group)
    assert "✖ failed" in html and "2 failed" in html
    segments = render.bar(group)
    assert 'title="6 finished"' in segments and 'title="2 failed"' in segments
    interrupted = _group({"finished": 19, "cancelled": 21})
    assert interrupted.state == "cancelled"
    assert render.group_text(interrupted).endswith("19 finished, 21 cancelled>")


def test_html_escapes_every_piece_of_user_data():
    failed = _call("failed", failure=Failure(EVIL, EVIL, EVIL + "more"), ended=1.0)
    for shown in (render.call_live_html(failed), render.call_static_html(failed)):
        assert "<script" not in shown and "&lt;script&gt;" in shown
    table = render.panel_table_html([failed])
    assert "<script" not in table and "[3]" in table
    details = render.panel_details_html({EVIL: {"dashboard": "http://127.0.0.1:1/", "x": EVIL}})
    assert "<script" not in details and '<a href="http://127.0.0.1:1/"' in details
    assert "<a" not in render.panel_details_html({"x": {"link": "javascript:alert(1)"}})


def _output(text):
    output = Output()
    output.write(text)
    return output


def test_what_a_call_wrote_is_part_of_its_saved_outcome_escaped():
    done = _call(outcome="49", ended=1.0, output=_output(f"said {EVIL}\n"))
    assert render.call_text(done).endswith(f"finished → 49>\nsaid {EVIL}")
    static = render.call_static_html(done)
    assert "output · 1 line" in static and f"said {html.escape(EVIL)}" in static
    assert "<script" not in static + render.output_html(done.output)
    assert "no output" in render.output_html(None)


def test_a_groups_failures_carry_their_calls_output():
    group = _group({"finished": 1, "failed": 1})
    failed = _call("failed", failure=Failure("ValueError: bad", "tb", "tb"), ended=1.0)
    failed.output = _output("before failing\n")
    group.failures.append((failed, failed.failure))
    for rendered in (render.group_live_html(group), render.group_static_html(group)):
        assert "before failing" in rendered and "output · 1 line" in rendered


def test_a_failure_shows_the_user_s_frames_and_keeps_the_whole_traceback():
    def users_function():
        raise ValueError("deep inside")

    try:
        users_function()
    except ValueError as error:
        failure = Failure.of(error)
    assert failure.summary == "ValueError: deep inside"
    assert "users_function" in failure.traceback and "users_function" in failure.full


def test_text_of_objects_whose_repr_raises_anything():
    class Nasty:
        def __repr__(self):
            raise KeyboardInterrupt

    assert safe_repr(Nasty()) == "<Nasty object, repr failed>"
    assert call_text("f", (Nasty(), 1), {"y": "x" * 100}).startswith("f(<Nasty object")
    assert len(call_text("f", ("x" * 1000,), {})) <= 60


def test_call_and_result_text_is_reprlib_s_for_every_kind_of_value():
    import reprlib

    class int:  # noqa: A001  # a user class named like a builtin: reprlib goes by the name
        def __repr__(self):
            return "mine"

    class Listed(list):
        pass

    values = [
        7,
        10**60,
        2.5,
        1e300,
        True,
        None,
        "x" * 100,
        b"y" * 100,
        (1, 2, 3, 4, 5, 6),
        [[1] * 10] * 10,
        {i: str(i) for i in range(10)},
        {1, 2, 3, 4, 5, 6},
        frozenset({1}),
        int(),
        Listed(range(10)),
        object(),
    ]
    plain = reprlib.Repr()
    plain.maxstring = plain.maxother = 24
    plain.maxlist = plain.maxtuple = plain.maxdict = plain.maxset = 4
    for value in values:
        assert safe_repr(value) == plain.repr(value)
