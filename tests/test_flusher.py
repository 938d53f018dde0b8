"""The flusher, without IPython: views are refreshed at a fixed pace until they are done."""

from __future__ import annotations

import threading

from daglite_nb.display.flusher import Flusher


class CountingView:
    def __init__(self, live_for):
        self.live_for = live_for
        self.refreshes = 0
        self.done = threading.Event()

    def refresh(self):
        self.refreshes += 1
        if self.refreshes >= self.live_for:
            self.done.set()
            return False
        return True


def test_a_view_is_refreshed_until_it_is_done_then_never_again():
    flusher = Flusher(interval=0.01)
    view = CountingView(live_for=5)
    flusher.add(view)
    assert view.done.wait(30)
    flusher.flush()  # a done view is not refreshed any more
    assert view.refreshes == 5


def test_flush_refreshes_every_live_view_in_the_calling_thread():
    flusher = Flusher(interval=3600)  # the thread's pace is no part of it
    views = [CountingView(live_for=100) for _ in range(3)]
    for view in views:
        flusher.add(view)
    before = [view.refreshes for view in views]
    flusher.flush()
    assert [view.refreshes for view in views] == [count + 1 for count in before]


def test_a_view_that_raises_anything_is_dropped_and_the_flusher_goes_on():
    flusher = Flusher(interval=0.01)

    class Broken:
        def refresh(self):
            raise KeyboardInterrupt  # e.g. from a user's __repr__

    flusher.add(Broken())
    flusher.flush()  # does not raise
    view = CountingView(live_for=3)
    flusher.add(view)
    assert view.done.wait(30)


def test_a_view_added_again_while_it_refreshes_stays_live():
    flusher = Flusher(interval=3600)

    class AddedDuringItsRefresh(CountingView):
        def refresh(self):
            if self.refreshes == 0:
                flusher.add(self)  # new work arrived while its last refresh ran
            self.refreshes += 1
            return False

    view = AddedDuringItsRefresh(live_for=1)
    flusher.add(view)
    flusher.flush()
    flusher.flush()
    assert view.refreshes == 2
    flusher.flush()
    assert view.refreshes == 2
