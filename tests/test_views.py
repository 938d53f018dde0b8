"""Views in an in-process IPython shell: what they display, and when."""

from __future__ import annotations

from IPython.testing.globalipapp import start_ipython

from daglite_nb.display.widgets import StaticView
from daglite_nb.display.widgets import UnitView
from daglite_nb.tracking import Tracker


def test_a_view_sends_its_final_state_once_however_often_it_is_refreshed(capsys):
    start_ipython()  # the terminal shell prints what a display sends
    tracker = Tracker()
    call = tracker.submitted("work", "thread", None, text="work(1)")
    view = StaticView(call)
    assert view.refresh() and capsys.readouterr().out == ""  # live: nothing to send yet
    tracker.ended(call, "finished", outcome="1")
    assert not view.refresh() and not view.refresh()  # the flusher and the end of a cell
    assert capsys.readouterr().out.count("<LiveFuture work(1) on thread: finished → 1>") == 1


def test_views_share_one_layout_and_style_made_again_once_closed():
    start_ipython()
    tracker = Tracker()
    calls = [tracker.submitted("work", "thread", None, text=f"work({i})") for i in range(2)]
    first, second = (UnitView(call, tracker) for call in calls)
    assert first.line.layout is second.line.layout and first.line.style is second.line.style
    assert first.widget.layout is first.line.layout  # the boxes around the line share it too
    assert first.cancel.layout is not second.cancel.layout  # a button shows or hides alone
    first.line.layout.close()  # as Widget.close_all() would
    third = UnitView(tracker.submitted("work", "thread", None, text="work(2)"), tracker)
    assert third.line.layout is not first.line.layout and third.line.layout.comm is not None
