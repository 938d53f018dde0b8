"""The static and live HTML renderers, without IPython: formatting and escaping."""

from __future__ import annotations

from concurrent.futures import Future

from daglite_nb.display import render
from daglite_nb.tracking import Failure
from daglite_nb.tracking import TaskRecord

EVIL = "<script>alert(1)</script>"


def _record(name=EVIL, args=(EVIL,), state="finished"):
    record = TaskRecord(1, name, args, {}, backend=EVIL, map_index=None, cell=3, group=None)
    record.worker, record.started = EVIL, 1.0
    record.final = None if state == "running" else state
    return record


def test_seconds_read_well():
    assert render.seconds(0.123) == "0.12 s"
    assert render.seconds(12.34) == "12.3 s"
    assert render.seconds(185) == "3 min 05 s"


def test_future_html_escapes_call_backend_worker_and_result():
    future = Future()
    future.set_result(EVIL)
    html = render.future_live_html(_record(), future)
    assert "<script" not in html and "&lt;script&gt;" in html
    static = render.future_static_html(_record())
    assert "<script" not in static


def test_failures_and_panel_parts_escape_user_data():
    failure = render.failure_details(Failure(EVIL, EVIL))
    assert "<script" not in failure and failure.count("&lt;script&gt;") == 2
    table = render.panel_table_html([_record(state="failed")])
    assert "<script" not in table and "[3]" in table
    details = render.panel_details_html(
        {EVIL: {"dashboard": "http://127.0.0.1:1/status", "note": EVIL}}
    )
    assert "<script" not in details
    assert '<a href="http://127.0.0.1:1/status" target="_blank">' in details
    assert "<a" not in render.panel_details_html({"x": {"link": "javascript:alert(1)"}})
