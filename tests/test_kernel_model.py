"""Everything daglite runs is seen, in a real kernel: each path, counted, with its final word.

The observable is what a saved notebook keeps: the text fallback of each shown output, which
the widget replaces with the outcome (`update_display_data`) when its call or group ends.
"""

from __future__ import annotations

import pytest

from kernel import GATE
from kernel import arrivals
from kernel import open_gate
from kernel import wait_until

TASKS = (
    GATE
    + """
import os, time, asyncio
import daglite_nb as dnb
from daglite import task, map_tasks, gather_tasks, workflow

@task
def square(x):
    return x * x

@task
def inner(x):
    return x

@task
def outer(n):
    return sum(map_tasks(inner, range(n)))

@task
async def fetch(x):
    await asyncio.sleep(0)
    return x * 10
"""
)


def _outcomes(result):
    """The last text of each output a cell displayed, by display id, in display order."""
    texts = {}
    for output in result.outputs:
        display_id = output.get("transient", {}).get("display_id")
        if display_id:
            texts[display_id] = output["data"]["text/plain"]
    return list(texts.values())


def _shown(kernel, code):
    result = kernel.ok(code)
    return _outcomes(result)


@pytest.fixture
def session(kernel):
    kernel.ok(TASKS)
    kernel.ok("%daglite start")
    return kernel


def test_retries_are_counted(session):
    session.ok(
        "@task(retries=2)\n"
        "def flaky(x):\n"
        "    marker = f'flaky-{x}'\n"
        "    if x % 2 and not os.path.exists(marker):\n"
        "        open(marker, 'w').close()\n"
        "        raise ValueError('the first try fails')\n"
        "    return x"
    )
    assert _shown(session, "out = map_tasks(flaky, range(4))") == [
        "<map_tasks flaky × 4 on thread: 4 finished, 2 retried>"
    ]


def test_cache_hits_are_counted(kernel):
    kernel.ok(TASKS + "\n@task(cache=True)\ndef cached(x):\n    return x + 1")
    kernel.ok("%daglite start --cache-store cache")
    assert _shown(kernel, "out = map_tasks(cached, range(3))") == [
        "<map_tasks cached × 3 on thread: 3 finished>"
    ]
    assert _shown(kernel, "out = map_tasks(cached, range(3))") == [
        "<map_tasks cached × 3 on thread: 3 finished, 3 from the cache>"
    ]


def test_gathered_and_awaited_tasks_are_shown(session):
    assert _shown(session, "out = await gather_tasks(fetch, range(4))") == [
        "<gather_tasks fetch × 4 on thread: 4 finished>"
    ]
    assert _shown(session, "out = await fetch(3)") == ["<task fetch on thread: finished → 30>"]


def test_a_workflow_run_is_shown_with_its_tasks(session):
    session.ok("@workflow\ndef pipeline(n):\n    return map_tasks(square, range(n))")
    assert _shown(session, "out = pipeline(5)") == [
        "<workflow pipeline: finished; nested square × 5: 5 finished>"
    ]


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_nested_fan_outs_count_under_the_calls_that_made_them(session, backend):
    session.ok(f"%daglite use {backend}")
    assert _shown(session, "out = map_tasks(outer, [2, 3, 4])") == [
        f"<map_tasks outer × 3 on {backend}: 3 finished; nested inner × 9: 9 finished>"
    ]
    assert session.eval("out") == [1, 3, 6]


def test_generator_items_are_counted(session):
    session.ok("@task\ndef count_up(n):\n    yield from range(n)")
    assert _shown(session, "out = map_tasks(count_up, [3, 2])") == [
        "<map_tasks count_up × 2 on thread: 2 finished, 5 items>"
    ]


def test_a_name_template_names_each_call(session):
    session.ok("@task(name='load-{x}')\ndef load(x):\n    return x")
    assert _shown(session, "out = map_tasks(load, ['a', 'b'])") == [
        "<map_tasks load × 2 on thread: 2 finished>"
    ]
    names = session.eval("sorted(c.name for c in dnb.session.current().tracker.latest(2))")
    assert names == ["load-a[0]", "load-b[1]"]


def test_a_backend_a_cell_writes_shows_running_and_its_worker(session, tmp_path):
    session.ok(
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from daglite.backends.base import Backend\n"
        "class Plain(Backend):\n"
        "    name = 'plain'\n"
        "    def _start(self, *, context):\n"
        "        self.pool = ThreadPoolExecutor(2, thread_name_prefix='plain')\n"
        "    def _submit(self, func, args, kwargs, *, context):\n"
        "        return self.pool.submit(func, *args, **kwargs)  # no daglite context\n"
        "dnb.register_backend('plain', Plain)\n"
        "fut = dnb.submit(held, 5, backend='plain')"
    )
    wait_until(lambda: arrivals(tmp_path), what="the task to start")
    session.wait_for("fut.state == 'running'")
    assert session.eval("fut.worker").startswith("plain")
    open_gate(tmp_path)
    assert session.eval("fut.result()") == 5


def test_a_backend_registered_through_daglite_is_usable_and_tracked(session):
    session.ok(
        "from daglite.backends.manager import BackendManager\n"
        "from daglite.backends.local import InlineBackend\n"
        "class Viad(InlineBackend):\n"
        "    name = 'viad'\n"
        "BackendManager.get_active().register('viad', Viad)"
    )
    assert (
        "viad     -                           BackendManager.register"
        in session.ok("%daglite backends").text
    )
    assert "default backend: viad" in session.ok("%daglite use viad").stdout
    assert _shown(session, "out = map_tasks(inner, [1, 2])") == [
        "<map_tasks inner × 2 on viad: 2 finished>"
    ]


def test_session_plugins_and_plugins_registered_later_see_every_call(kernel):
    kernel.ok(TASKS)
    kernel.ok(
        "from daglite.plugins.hooks.markers import hook_impl\n"
        "from daglite.plugins.manager import register_plugins\n"
        "class Names:\n"
        "    def __init__(self):\n"
        "        self.seen = []\n"
        "    @hook_impl\n"
        "    def before_node_execute(self, metadata, reporter):\n"
        "        self.seen.append(metadata.name)\n"
        "    def to_config(self):\n"
        "        return {}\n"
        "    @classmethod\n"
        "    def from_config(cls, config):\n"
        "        return cls()\n"
        "early = Names()\n"
        "dnb.start(plugins=[early], backend='inline')"
    )
    kernel.ok("map_tasks(square, [1])")
    assert kernel.eval("early.seen") == ["square[0]"]
    kernel.ok("late = Names()\nregister_plugins(late)")
    kernel.ok("map_tasks(square, [2])")
    assert kernel.eval("late.seen") == ["square[0]"]


def test_counts_stay_honest_after_failures(session):
    session.ok(
        "@task\n"
        "def picky(x):\n"
        "    if x in (2, 5):\n"
        "        raise ValueError(f'no {x}')\n"
        "    return x"
    )
    result = session.run("out = map_tasks(picky, range(8))")
    assert result.error["ename"] == "TaskError"
    assert _outcomes(result) == ["<map_tasks picky × 8 on thread: 6 finished, 2 failed>"]
    shown = [o["data"]["text/html"] for o in result.outputs][-1]
    assert "✖ failed" in shown and "ValueError: no 2" in shown


def test_a_failure_shows_the_user_s_frames_first(session):
    session.ok(
        "def deep_in_user_code(x):\n"
        "    raise KeyError(x)\n"
        "@task\ndef boom(x):\n"
        "    return deep_in_user_code(x)\n"
        "bad = dnb.submit(boom, 'k')"
    )
    session.run("bad.result()")
    failure = session.eval("tuple(bad.call.failure)")
    summary, own, full = failure
    assert summary == "KeyError: 'k'" and "deep_in_user_code" in own
    assert "daglite/tasks.py" not in own and "daglite/tasks.py" in full


@pytest.mark.parametrize("how", ["stop", "restart"])
def test_every_live_widget_gets_its_final_word(session, tmp_path, how):
    shown = session.ok("group = dnb.map(held, range(6))\ngroup")
    model = next(
        o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for o in shown.outputs
    )
    wait_until(lambda: arrivals(tmp_path) >= 2, what="tasks to start")
    if how == "stop":
        session.ok("%daglite stop")
        reason = "the session stopped"
    else:
        session.shutdown(restart=True)
        reason = "the kernel shut down"
    open_gate(tmp_path)
    final = session.wait_for_update(model, lambda u: reason in u.get("value", ""))
    assert "cancelled" in final["value"] and "running" not in final["value"].split("</b>")[0]


def test_what_ended_calls_keep_is_small(session):
    session.ok(
        "import gc, psutil\n"
        "@task\ndef size(blob):\n    return len(blob)\n"
        "gc.collect(); before = psutil.Process().memory_info().rss\n"
        "futures = [dnb.submit(size, b'x' * 10_000_000) for _ in range(300)]\n"
        "assert [f.result() for f in futures] == [10_000_000] * 300\n"
        "del futures; gc.collect()\n"
        "grown = psutil.Process().memory_info().rss - before"
    )
    assert session.eval("grown") < 300_000_000, "300 calls of 10 MB: ended calls keep no arguments"
    session.ok(
        "import weakref\n"
        "class Big:\n    pass\n"
        "@task\ndef fail_with_big_locals(x):\n"
        "    big = Big(); marker.append(weakref.ref(big))\n"
        "    raise ValueError('no')\n"
        "marker = []\n"
        "bad = dnb.submit(fail_with_big_locals, 1)\n"
        "try:\n    bad.result()\nexcept ValueError:\n    pass\n"
        "del bad; gc.collect()"
    )
    assert session.eval("marker[0]() is None"), "a failure keeps no frames, no locals"
    session.ok(
        "tracker = weakref.ref(dnb.session.current().tracker)\n"
        "map_tasks(square, range(100))\n"
        "%daglite stop\n"
    )
    session.ok("gc.collect()")
    assert session.eval("tracker() is None"), "shown widgets keep no stopped session"
