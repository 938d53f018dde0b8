"""Text and HTML of calls, groups and the panel. Every piece of user data is escaped.

Each shown call or group has three renderings: the live HTML of its widget (timings, workers,
ETA), and two static fallbacks, text and HTML. The fallbacks are what a saved notebook keeps,
and nbval compares them: until the call or group ended they say only what it is (its state then
depends on when it was shown); once it ended they carry its outcome, never timings.
"""

from __future__ import annotations

import html
import re

from daglite_nb._output import Output
from daglite_nb._text import Failure
from daglite_nb.model import CANCELLED
from daglite_nb.model import FAILED
from daglite_nb.model import FINISHED
from daglite_nb.model import PENDING
from daglite_nb.model import RUNNING
from daglite_nb.model import STATES
from daglite_nb.model import Call
from daglite_nb.model import Group

# Colours follow JupyterLab's theme through its CSS variables, each with a fallback for viewers
# without them (an exported notebook, nbviewer). Chosen for text with a WCAG contrast of at least
# 4.5:1 on the notebook's background (--jp-layout-color0) in JupyterLab 4's light and dark themes:
#   muted      --jp-content-font-color2   light 4.61  dark 9.52
#   running    --jp-brand-color1          light 4.60  dark 6.04
#   finished   --jp-success-color0        light 7.87  dark 4.59  (color1: light 4.12)
#   failed     --jp-error-color1          light 4.98  dark 5.13  (color0: dark 3.79)
#   cancelled  --jp-warn-color0 mixed 20% toward --jp-ui-font-color0 (black in light, white in
#              dark)                      light 5.53  dark 8.42  (warn-color0 alone: light 3.79;
#              no level of --jp-warn-color reaches 4.5 in the light theme)
MUTED = "var(--jp-content-font-color2, #6b7280)"
"""The colour of secondary text: facts, hints, folds' titles."""

STYLE = {
    PENDING: ("○", MUTED),
    RUNNING: ("▶", "var(--jp-brand-color1, #2563eb)"),
    FINISHED: ("✔", "var(--jp-success-color0, #15803d)"),
    FAILED: ("✖", "var(--jp-error-color1, #b91c1c)"),
    CANCELLED: (
        "⊘",
        "color-mix(in srgb, var(--jp-warn-color0, #b45309) 80%, var(--jp-ui-font-color0, #000))",
    ),
}
"""Icon and colour of each state."""

ERROR = STYLE[FAILED][1]
"""The colour of an error message."""

BORDER = "var(--jp-border-color2, #d1d5db)"
"""The colour of a frame's border."""

TRACK = "var(--jp-layout-color2, #e5e7eb)"
"""The colour of a progress bar's empty part."""

NESTED_LINES = 6
"""How many nested groups a widget lists under its own line."""


def seconds(value: float) -> str:
    """Format a duration for people: `0.42 s`, `12.3 s`, `3 min 05 s`."""
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes} min {rest:02d} s"


def ticking_seconds(value: float) -> str:
    """A duration that changes at most once a second while it ticks: `0 s`, `12 s`, `3 min 05 s`."""
    return seconds(value) if value >= 60 else f"{int(value)} s"


def state_badge(state: str) -> str:
    """The state in words with its icon and colour."""
    icon, colour = STYLE[state]
    return f'<b style="color:{colour}">{icon} {state}</b>'


def _muted(text: str) -> str:
    return f'<span style="color:{MUTED}">{text}</span>'


# region Calls


def call_text(call: Call) -> str:
    """The plain-text fallback of a call: what it is; once it ended, its outcome too."""
    head = f"<{_call_kind(call)} {call.label} on {call.backend}"
    if not ended(call):
        return f"{head}>"
    output = "" if call.output is None else "\n" + call.output.text()
    return f"{head}: {_call_outcome(call)}>{output}"


def ended(unit: Call | Group) -> bool:
    """Whether *unit* ended, its nested work included (its fallbacks then carry the outcome)."""
    if isinstance(unit, Group):
        return unit.ended
    return unit.ended is not None and all(g.ended for g in (unit.children or {}).values())


def _call_kind(call: Call) -> str:
    return "LiveFuture" if call.text else "task"


def _call_outcome(call: Call) -> str:
    words = [call.state, *_call_facts(call)]
    outcome = ", ".join(words)
    if call.state == FINISHED and call.outcome is not None:
        outcome += f" → {call.outcome}"
    elif call.state == FAILED and call.failure is not None:
        outcome += f": {call.failure.summary}"
    elif call.state == CANCELLED and call.reason:
        outcome += f" ({call.reason})"
    return outcome


def _call_facts(call: Call) -> list[str]:
    facts = []
    if call.cached:
        facts.append("from the cache")
    if call.attempts:
        facts.append(f"{call.attempts} {'retry' if call.attempts == 1 else 'retries'}")
    if call.items:
        facts.append(f"{call.items} {'item' if call.items == 1 else 'items'}")
    return facts


def call_static_html(call: Call) -> str:
    """The HTML fallback of a call: once it ended, its outcome and nested work; no timings."""
    if not ended(call):
        return f"<code>{html.escape(call_text(call))}</code>"
    return _call_html(call, live=False)


def call_live_html(call: Call) -> str:
    """The live line of a call's widget: state, call, backend, worker, elapsed, outcome."""
    return _call_html(call, live=True)


def _call_html(call: Call, live: bool) -> str:
    facts = [html.escape(call.backend)]
    if live and call.worker:
        facts.append(html.escape(call.worker))
    if live and call.state != PENDING:
        ended = call.state in (FINISHED, FAILED, CANCELLED)
        facts.append(seconds(call.elapsed) if ended else ticking_seconds(call.elapsed))
    facts += _call_facts(call)
    line = (
        f"{state_badge(call.state)} <code>{html.escape(call.label)}</code> "
        f"{_muted(' · '.join(facts))}{_call_end_html(call, live)}"
    )
    nested = nested_html(call.children, live)
    output = "" if live or call.state == FAILED else output_details(call.output)
    return f'<div class="daglite-nb-future">{line}{nested}{output}</div>'


def _call_end_html(call: Call, live: bool) -> str:
    if call.state == FINISHED and call.outcome is not None:
        return f" → <code>{html.escape(call.outcome)}</code>"
    if call.state == FAILED and call.failure is not None:
        return failure_details(call.failure, full=live, output=None if live else call.output)
    if call.state == CANCELLED and call.reason:
        return " " + _muted(html.escape(call.reason))
    return ""


def failure_details(
    failure: Failure, full: bool = True, call: str | None = None, output: Output | None = None
) -> str:
    """The exception in one line; the user's frames (and what the call wrote) fold open on click.

    With *full*, the whole traceback folds open below them; static fallbacks leave it out (its
    paths are those of the machine that ran it). A failure in a fan-out says which *call* it is.
    """
    summary = html.escape(f"{call}: {failure.summary}" if call else failure.summary)
    own = html.escape(failure.traceback)
    pre = '<pre style="font-size:11px;white-space:pre-wrap;margin:2px 0">'
    whole = (
        f'<details><summary style="color:{MUTED};font-size:11px">full traceback</summary>'
        f"{pre}{html.escape(failure.full)}</pre></details>"
        if full and failure.full != failure.traceback
        else ""
    )
    return (
        f'<details><summary style="color:{STYLE[FAILED][1]}">{summary}</summary>'
        f"{pre}{own}</pre>{whole}{output_details(output)}</details>"
    )


def output_title(output: Output) -> str:
    """What a fold of a call's output says: how many lines it holds."""
    lines = output.count + bool(output.partial)
    return f"output · {lines} {'line' if lines == 1 else 'lines'}"


def output_html(output: Output | None) -> str:
    """What a call printed and logged (its newest lines), as preformatted text."""
    if output is None:
        return _muted("<i>no output</i>")
    return (
        '<pre class="daglite-nb-output" style="font-size:11px;white-space:pre-wrap;'
        f'margin:2px 0;max-height:20em;overflow:auto">{html.escape(output.text())}</pre>'
    )


def output_details(output: Output | None) -> str:
    """A call's output, folded (nothing if it wrote nothing)."""
    if output is None:
        return ""
    summary = f'<summary style="color:{MUTED};font-size:11px">{output_title(output)}</summary>'
    return f"<details>{summary}{output_html(output)}</details>"


# region Groups


def group_text(group: Group) -> str:
    """The plain-text fallback of a group: what it is; once it ended, counts by outcome too."""
    where = f" on {group.backend}" if group.backend else ""
    if not group.ended:
        return f"<{group.kind} {group.label}{where}>"
    if group.kind != "workflow":
        head = f"<{group.kind} {group.label} × {group.total}{where}: {_group_counts(group)}"
    else:  # its calls are counted by task
        head = f"<{group.kind} {group.label}: {group.state}"
    nested = [
        f"{child.label} × {child.total}: {_group_counts(child)}"
        for child in _children(group.children)
    ]
    return head + ("; nested " + "; ".join(nested) if nested else "") + ">"


def _group_counts(group: Group) -> str:
    counts = group.counts
    if not group.complete or not group.total:
        return f"{group.state}, {group.done} of {group.total} done"
    parts = [f"{counts[state]} {state}" for state in (FINISHED, FAILED, CANCELLED) if counts[state]]
    parts += _group_facts(group)
    return ", ".join(parts)


def _group_facts(group: Group) -> list[str]:
    facts = []
    if group.cached:
        facts.append(f"{group.cached} from the cache")
    if group.retried:
        facts.append(f"{group.retried} retried")
    if group.items:
        facts.append(f"{group.items} {'item' if group.items == 1 else 'items'}")
    return facts


def group_static_html(group: Group) -> str:
    """The HTML fallback of a group: once it ended, counts and a bar of outcomes; no timings."""
    if not group.ended:
        return f"<code>{html.escape(group_text(group))}</code>"
    return _group_html(group, live=False)


def group_live_html(group: Group) -> str:
    """The progress bar of a group's widget, with its counts, timings and first failures."""
    return _group_html(group, live=True)


def _group_html(group: Group, live: bool) -> str:
    counts = group.counts
    facts = [f"<b>{group.done}/{group.total}</b> done"]
    facts += [f"{counts[state]} {state}" for state in (RUNNING, FAILED, CANCELLED)]
    facts += _group_facts(group)
    if live:
        facts.append(ticking_seconds(group.elapsed) if not group.ended else seconds(group.elapsed))
        if group.eta is not None:
            facts.append(f"ETA {ticking_seconds(group.eta)}")
    where = f" on {html.escape(group.backend)}" if group.backend else ""
    if group.kind != "workflow":
        head = (
            f"{state_badge(group.state)} <code>{html.escape(group.label)}</code> × {group.total}"
            f"{where} {bar(group)} {' · '.join(facts)}"
        )
    else:  # its calls are counted by task, below
        head = f"{state_badge(group.state)} {group.kind} <code>{html.escape(group.label)}</code>"
    if group.reason:
        head += " " + _muted(html.escape(group.reason))
    failures = "".join(
        failure_details(failure, full=live, call=call.label, output=call.output)
        for call, failure in group.failures
    )
    nested = nested_html(group.children, live)
    return f'<div class="daglite-nb-group">{head}{failures}{nested}</div>'


def bar(group: Group, width: int = 240) -> str:
    """A bar with one segment per outcome (and the running calls), so failures show at a glance."""
    counts = group.counts
    total = max(sum(counts.values()), 1)
    segments = "".join(
        f'<span title="{count} {state}" style="display:inline-block;height:100%;'
        f'width:{100 * count / total:.2f}%;{_background(STYLE[state][1])}"></span>'
        for state in (FINISHED, FAILED, CANCELLED, RUNNING)
        if (count := counts[state])
    )
    return (
        f'<span class="daglite-nb-bar" style="display:inline-flex;width:{width}px;height:10px;'
        f'vertical-align:middle;border-radius:3px;overflow:hidden;{_background(TRACK)}">'
        f"{segments}</span>"
    )


def _background(colour: str) -> str:
    """A background of *colour*, after its plain fallback.

    JupyterLab's sanitizer (a saved notebook opened again, untrusted) drops declarations with
    `var()`: text then keeps the theme's own colour, and a bar keeps its fallback colours.
    """
    fallback = re.search(r"#[0-9a-fA-F]{3,8}", colour)
    plain = f"background:{fallback.group()};" if fallback else ""
    return f"{plain}background:{colour}"


def nested_html(children: dict[str, Group] | None, live: bool, depth: int = 1) -> str:
    """One line per nested group (the fan-outs the calls made), and theirs below, indented."""
    lines = []
    for child in _children(children):
        counts = child.counts
        facts = [f"{child.done}/{child.total} done"]
        facts += [f"{counts[s]} {s}" for s in (RUNNING, FAILED, CANCELLED) if counts[s]]
        facts += _group_facts(child)
        line = (
            f'<div style="margin-left:{16 * depth}px;font-size:12px">↳ '
            f"{state_badge(child.state)} <code>{html.escape(child.label)}</code> "
            f"{bar(child, 120)} {_muted(' · '.join(facts))}</div>"
        )
        lines.append(line + nested_html(child.children, live, depth + 1))
    return "".join(lines)


def _children(children: dict[str, Group] | None) -> list[Group]:
    return list((children or {}).values())[:NESTED_LINES]


# region Panel


def panel_header_html(state: str, session_id: str, uptime: float | None) -> str:
    """Session state, short id and uptime."""
    colour = STYLE[FINISHED][1] if state == "open" else STYLE[PENDING][1]
    facts = [f'<b style="color:{colour}">● {html.escape(state)}</b>']
    if session_id:
        facts.append(f"<code>{html.escape(session_id)}</code>")
    if uptime is not None:
        facts.append(f"up {ticking_seconds(uptime)}")
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
    return "".join(
        f'<span style="color:{STYLE[state][1]};margin-right:12px">'
        f"{STYLE[state][0]} {state} <b>{counts.get(state, 0)}</b></span>"
        for state in STATES
    )


def panel_table_html(calls: list[Call]) -> str:
    """The most recent calls: call, backend, worker, state, elapsed, submitting cell."""
    if not calls:
        return f'<i style="color:{MUTED}">no tasks yet</i>'
    head = "".join(
        f'<th style="text-align:left;padding:0 8px">{name}</th>'
        for name in ("call", "backend", "worker", "state", "elapsed", "cell")
    )
    rows = "".join(
        "<tr>"
        f'<td style="padding:0 8px"><code>{html.escape(c.label)}</code></td>'
        f'<td style="padding:0 8px">{html.escape(c.backend)}</td>'
        f'<td style="padding:0 8px">{html.escape(c.worker or "-")}</td>'
        f'<td style="padding:0 8px">{state_badge(c.state)}</td>'
        f'<td style="padding:0 8px">{seconds(c.elapsed)}</td>'
        f'<td style="padding:0 8px">{"-" if c.cell is None else f"[{c.cell}]"}</td>'
        "</tr>"
        for c in calls
    )
    return f'<table style="font-size:12px"><tr>{head}</tr>{rows}</table>'


def panel_output_html(call: Call | None) -> str:
    """The output of the call picked in the panel."""
    if call is None:
        return ""
    head = f"{state_badge(call.state)} <code>{html.escape(call.label)}</code>"
    return f'<div style="font-size:12px">{head}{output_html(call.output)}</div>'


def panel_text(state: str, backend: str | None) -> str:
    """The plain-text fallback of the panel: no ids, no timings, no counts."""
    return f"<daglite panel: session {state}" + (f", backend {backend}>" if backend else ">")
