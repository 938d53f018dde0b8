"""The throttled flusher, without IPython: bounded refreshes, exact final state."""

from __future__ import annotations

import threading

from daglite_nb.display.flusher import Flusher


class CountingView:
    def __init__(self):
        self.state = 0
        self.seen = []
        self.ticking = False
        self.refreshed = threading.Event()

    def refresh(self):
        self.seen.append(self.state)
        self.refreshed.set()
        return self.ticking


def test_many_marks_cause_few_refreshes_and_end_on_the_final_state():
    flusher = Flusher(interval=0.2, tick=10)
    view = CountingView()
    for value in range(1, 5001):
        view.state = value
        flusher.mark(view)
    # The flusher owes one refresh after the last mark; wait until it has shown 5000.
    while not view.seen or view.seen[-1] != 5000:
        view.refreshed.clear()
        assert view.refreshed.wait(5), view.seen
    assert len(view.seen) < 100


def test_a_change_after_a_refresh_is_always_pushed():
    flusher = Flusher(interval=0.05, tick=10)
    view = CountingView()
    view.state = 1
    flusher.mark(view)
    assert view.refreshed.wait(5)
    view.refreshed.clear()
    view.state = 2
    flusher.mark(view)
    assert view.refreshed.wait(5)
    assert view.seen[-1] == 2


def test_ticking_views_refresh_until_they_stop_ticking():
    flusher = Flusher(interval=0.01, tick=0.02)
    view = CountingView()
    view.ticking = True
    flusher.mark(view)
    for _ in range(3):
        view.refreshed.clear()
        assert view.refreshed.wait(5)
    view.ticking = False
    view.refreshed.clear()
    view.refreshed.wait(5)
    count = len(view.seen)
    view.refreshed.clear()
    assert not view.refreshed.wait(0.2)
    assert len(view.seen) == count


def test_a_failing_view_does_not_stop_the_flusher():
    flusher = Flusher(interval=0.01)

    class Broken:
        def refresh(self):
            raise RuntimeError("broken view")

    flusher.mark(Broken())
    view = CountingView()
    flusher.mark(view)
    assert view.refreshed.wait(5)
