"""Views in an in-process IPython shell: what they display, and when."""

from __future__ import annotations

from IPython.testing.globalipapp import start_ipython

from daglite_nb.display.widgets import StaticView
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
