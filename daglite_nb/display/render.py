"""Static and live HTML/text for futures and fan-outs. Every piece of user data is escaped."""

from __future__ import annotations

import html
import reprlib
from concurrent.futures import Future
from typing import Any

from daglite_nb.tracking import CANCELLED
from daglite_nb.tracking import FAILED
from daglite_nb.tracking import FINISHED
from daglite_nb.tracking import PENDING
from daglite_nb.tracking import RUNNING
from daglite_nb.tracking import Failure
from daglite_nb.tracking import TaskGroup
from daglite_nb.tracking import TaskRecord
from daglite_nb.tracking import safe_repr

STYLE = {
    PENDING: ("○", "#6b7280"),
    RUNNING: ("▶", "#2563eb"),
    FINISHED: ("✔", "#15803d"),
    FAILED: ("✖", "#b91c1c"),
    CANCELLED: ("⊘", "#b45309"),
}
"""Icon and colour of each state."""

RESULT_WIDTH = 80

_result_repr = reprlib.Repr()
_result_repr.maxstring = _result_repr.maxother = RESULT_WIDTH


def seconds(value: float) -> str:
    """Format a duration for people: `0.42 s`, `12.3 s`, `3 min 05 s`."""
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes} min {rest:02d} s"


def state_badge(state: str) -> str:
    """The state in words with its icon and colour."""
    icon, colour = STYLE[state]
    return f'<b style="color:{colour}">{icon} {state}</b>'


# region Futures


def future_text(record: TaskRecord) -> str:
    """The plain-text fallback: no timings, no live state (nbval compares it)."""
    return f"<LiveFuture {record.call} on {record.backend}>"


def future_static_html(record: TaskRecord) -> str:
    """The HTML fallback for viewers without widgets: as stable as the text one."""
    return f"<code>{html.escape(future_text(record))}</code>"


def future_live_html(record: TaskRecord, future: Future[Any]) -> str:
    """The live line of a future's widget: state, call, backend, worker, elapsed, outcome."""
    facts = [html.escape(record.backend)]
    if record.worker:
        facts.append(html.escape(record.worker))
    if record.state != PENDING:
        facts.append(seconds(record.elapsed))
    line = (
        f"{state_badge(record.state)} <code>{html.escape(record.call)}</code>"
        f' <span style="color:#6b7280">{" · ".join(facts)}</span>'
    )
    return f'<div class="daglite-nb-future">{line}{_outcome(record, future)}</div>'


def _outcome(record: TaskRecord, future: Future[Any]) -> str:
    if record.state == FINISHED and future.done():
        value = html.escape(safe_repr(future.result(), _result_repr))
        return f" → <code>{value}</code>"
    if record.state == FAILED and future.done():
        return failure_details(Failure.of(future.exception()))
    return ""


def failure_details(failure: Failure) -> str:
    """The exception in one line; its traceback folds open on click."""
    if not failure.summary:
        return ""
    summary = html.escape(failure.summary)
    trace = html.escape(failure.traceback)
    return (
        f'<details><summary style="color:{STYLE[FAILED][1]}">{summary}</summary>'
        f'<pre style="font-size:11px;white-space:pre-wrap">{trace}</pre></details>'
    )


# region Fan-outs


def group_static_html(text: str) -> str:
    """The HTML fallback of a fan-out."""
    return f"<code>{html.escape(text)}</code>"


def group_live_html(group: TaskGroup) -> str:
    """The progress bar and summary of a fan-out, with its first failures."""
    counts = group.counts
    facts = [
        f"<b>{group.done}/{group.total}</b> done",
        f"{counts[RUNNING]} running",
        f"{counts[FAILED]} failed",
        f"{counts[CANCELLED]} cancelled",
        seconds(group.elapsed),
        f"{group.rate:.1f}/s",
    ]
    if group.eta is not None:
        facts.append(f"ETA {seconds(group.eta)}")
    state = _group_state(group)
    bar = (
        f'<progress value="{group.done}" max="{max(group.total, 1)}"'
        ' style="width:240px;vertical-align:middle"></progress>'
    )
    head = (
        f"{state_badge(state)} <code>{html.escape(group.label)}</code> × {group.total}"
        f" on {html.escape(group.backend)} {bar} {' · '.join(facts)}"
    )
    failures = "".join(failure_details(failure) for failure in group.failures)
    return f'<div class="daglite-nb-group">{head}{failures}</div>'


def _group_state(group: TaskGroup) -> str:
    if group.ended is None:
        return RUNNING if group.counts[RUNNING] or group.done else PENDING
    if group.counts[FAILED]:
        return FAILED
    return CANCELLED if group.counts[CANCELLED] else FINISHED


# region Panel


def panel_header_html(state: str, session_id: str, uptime: float | None) -> str:
    """Session state, short id and uptime."""
    colour = STYLE[FINISHED][1] if state == "open" else STYLE[PENDING][1]
    facts = [f'<b style="color:{colour}">● {html.escape(state)}</b>']
    if session_id:
        facts.append(f"<code>{html.escape(session_id)}</code>")
    if uptime is not None:
        facts.append(f"up {seconds(uptime)}")
    return "daglite session " + " · ".join(facts)


def panel_details_html(details: dict[str, dict[str, str]]) -> str:
    """What the started backends tell about themselves; links stay links, all escaped."""
    lines = []
    for name, facts in details.items():
        parts = [
            f'{html.escape(key)} <a href="{html.escape(value)}" target="_blank">'
            f"{html.escape(value)}</a>"
            if value.startswith(("http://", "https://"))
            else f"{html.escape(key)} {html.escape(value)}"
            for key, value in facts.items()
        ]
        lines.append(f"<b>{html.escape(name)}</b>: {' · '.join(parts)}")
    return "<br>".join(lines)


def panel_counts_html(counts: dict[str, int]) -> str:
    """Counters by state, each with its icon and colour."""
    cells = [
        f'<span style="color:{STYLE[state][1]};margin-right:12px">'
        f"{STYLE[state][0]} {state} <b>{counts.get(state, 0)}</b></span>"
        for state in STYLE
    ]
    return "".join(cells)


def panel_table_html(records: list[TaskRecord]) -> str:
    """The most recent tasks: call, backend, worker, state, elapsed, submitting cell."""
    if not records:
        return '<i style="color:#6b7280">no tasks yet</i>'
    head = "".join(
        f'<th style="text-align:left;padding:0 8px">{name}</th>'
        for name in ("call", "backend", "worker", "state", "elapsed", "cell")
    )
    rows = "".join(
        "<tr>"
        f'<td style="padding:0 8px"><code>{html.escape(r.call)}</code></td>'
        f'<td style="padding:0 8px">{html.escape(r.backend)}</td>'
        f'<td style="padding:0 8px">{html.escape(r.worker or "-")}</td>'
        f'<td style="padding:0 8px">{state_badge(r.state)}</td>'
        f'<td style="padding:0 8px">{seconds(r.elapsed)}</td>'
        f'<td style="padding:0 8px">{"-" if r.cell is None else f"[{r.cell}]"}</td>'
        "</tr>"
        for r in records
    )
    return f'<table style="font-size:12px"><tr>{head}</tr>{rows}</table>'


def panel_text(state: str, backend: str | None) -> str:
    """The plain-text fallback of the panel: no ids, no timings, no counts."""
    return f"<daglite panel: session {state}" + (f", backend {backend}>" if backend else ">")
