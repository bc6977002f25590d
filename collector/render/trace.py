"""Output of ``collector trace``: a tree view, JSON, NDJSON, CSV, a table, Graphviz and Mermaid.

Each function writes to the stream it is given. Only ``models`` (and the shared helpers of
``render``) are imported: rendering takes values and never reaches back into the pipeline.
Where each hop, outcome and notification sits in the tree was decided once by correlate
(``Hop.parent_index``, ``RecipientOutcome.hop_index``, ``Trace.anchor``); nothing here looks a
group up again. A value without a place (a hand-built one) is shown below the tree.

A hop's ``delays`` is the ``delays=a/b/c/d`` of the delivery that handed the message to it
(``Hop.handoff``); entry, pickup and notification hops have none. A recipient's delays are
those of its last attempt (``RecipientOutcome.attempt``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from collector.models import (
    Attempt,
    GroupRef,
    Hop,
    HopVia,
    LinkStrength,
    Outcome,
    RecipientOutcome,
    Trace,
)
from collector.render.rows import HostReport, host_dict, iso
from collector.render.safe import CsvWriter, printable, write_json, write_ndjson
from collector.render.text import clip, clip_parts, fit_widths

#: Columns of one (message, recipient) row, in order; also the CSV header.
TRACE_ROW_FIELDS = (
    "message_id",
    "sender",
    "recipient",
    "status",
    "outcome",
    "hops",
    "first_host",
    "last_host",
    "total_delay",
)

# Colours of Postfix's status words (sent, deferred) and of the outcomes concluded from them;
# the statuses bounced, rejected and expired are the same words as their outcomes.
_GREEN: frozenset[str] = frozenset({"sent", Outcome.DELIVERED, Outcome.RELAYED_OUT})
_YELLOW: frozenset[str] = frozenset({"deferred", Outcome.QUEUED})
_RED: frozenset[str] = frozenset({Outcome.BOUNCED, Outcome.REJECTED, Outcome.EXPIRED, Outcome.LOST})
_ANSI = {"green": "\x1b[32m", "yellow": "\x1b[33m", "red": "\x1b[31m", "bold": "\x1b[1m"}
_RESET = "\x1b[0m"
_LAST_FLOOR = 4  # a table column clipped to its floor that still does not fit goes down to this


# --------------------------------------------------------------------------- shared helpers


def _delays(hop: Hop) -> str | None:
    return hop.handoff.delays if hop.handoff is not None else None


def _sender(sender: str | None) -> str:
    if sender is None:
        return "-"
    return sender or "<>"


def fmt_duration(seconds: float) -> str:
    """``2.3 s``, ``4 min 10 s``, ``1 h 02 min``, ``3 d 04 h``."""
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 60:
        text = f"{s:.1f}".rstrip("0").rstrip(".")
        return f"{sign}{text} s"
    whole = round(s)
    if whole < 3600:
        return f"{sign}{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{sign}{whole // 3600} h {whole % 3600 // 60:02d} min"
    return f"{sign}{whole // 86400} d {whole % 86400 // 3600:02d} h"


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def fmt_delays(delays: str, sep: str = " · ") -> str:
    """``queue a s · qmgr b s · conn c s · xmit d s`` from Postfix's ``delays=a/b/c/d``."""
    parts = delays.split("/")
    if len(parts) != 4:
        return f"delays={delays}"
    names = ("queue", "qmgr", "conn", "xmit")
    return sep.join(f"{n} {p} s" for n, p in zip(names, parts, strict=True))


def _total_delay(trace: Trace, r: RecipientOutcome) -> float | None:
    if r.time is None:
        return None
    return (r.time - trace.first_seen).total_seconds()


def _walk(traces: Iterable[Trace]) -> Iterator[Trace]:
    """Each trace, then its notifications (depth first)."""
    for t in traces:
        yield t
        yield from _walk(t.notifications)


# --------------------------------------------------------------------------- JSON


def _ref_dict(ref: GroupRef | None) -> dict[str, str] | None:
    return None if ref is None else {"host": ref.host, "queue_id": ref.queue_id}


def trace_dict(trace: Trace) -> dict[str, Any]:
    """One trace as the documented JSON object (notifications nested the same way)."""
    return {
        "message_id": trace.message_id,
        "sender": trace.sender,
        "first_seen": iso(trace.first_seen),
        "last_seen": iso(trace.last_seen),
        "size": trace.size,
        "hops": [
            {
                "host": h.host,
                "queue_id": h.queue_id,
                "time": iso(h.time),
                "client": h.client,
                "parent": _ref_dict(h.parent),
                "via": h.via,
                "evidence": list(h.evidence),
                "delays": _delays(h),
                "sender": h.group.sender,
                "message_id": h.group.message_id,
                "strength": h.strength,
                "verdict": h.verdict,
            }
            for h in trace.hops
        ],
        "recipients": [
            {
                "address": r.address,
                "orig_address": r.orig_address,
                "status": r.status,
                "outcome": r.outcome,
                "host": r.host,
                "queue_id": r.queue_id,
                "dsn": r.dsn,
                "response": r.response,
                "time": iso(r.time),
                "path": [_ref_dict(p) for p in r.path],
            }
            for r in trace.recipients
        ],
        "notifications": [trace_dict(n) for n in trace.notifications],
        "notes": list(trace.notes),
        "subject": trace.subject,
    }


def render_traces_json(
    traces: Sequence[Trace], hosts: Sequence[HostReport], out: IO[str], verdict: str | None = None
) -> None:
    """``{"traces": [...], "hosts": [...], "verdict": ...}``; ``hosts`` always says which hosts
    failed, and each host's ``coverage`` what of the window it saw."""
    from collector.trace.skew import clock_skews

    payload: dict[str, Any] = {
        "traces": [trace_dict(t) for t in traces], "hosts": [host_dict(h) for h in hosts]
    }
    if verdict is not None:
        payload["verdict"] = verdict
    payload["clock_skew"] = [
        {"sender": k.sender, "receiver": k.receiver, "seconds": k.seconds, "samples": k.samples}
        for k in clock_skews(traces)
    ]
    write_json(payload, out)


def render_traces_ndjson(traces: Sequence[Trace], out: IO[str]) -> None:
    """One top-level trace object per line (notifications stay nested in their parent)."""
    write_ndjson((trace_dict(t) for t in traces), out)


# --------------------------------------------------------------------------- CSV and table


def _trace_rows(traces: Sequence[Trace]) -> Iterator[tuple[Trace, bool, RecipientOutcome]]:
    def rows(t: Trace, nested: bool) -> Iterator[tuple[Trace, bool, RecipientOutcome]]:
        for r in t.recipients:
            yield t, nested, r
        for n in t.notifications:
            yield from rows(n, True)

    for t in traces:
        yield from rows(t, False)


def render_traces_csv(traces: Sequence[Trace], out: IO[str]) -> None:
    """One row per (message, recipient); notifications' rows follow their parent's.

    The null sender is an empty field (as in the search CSV); ``total_delay`` is seconds from the
    message's first sighting to the recipient's last status, empty when no status was logged.
    """
    writer = CsvWriter(out)
    writer.writerow(TRACE_ROW_FIELDS)
    for t, _, r in _trace_rows(traces):
        delay = _total_delay(t, r)
        writer.writerow(
            [
                t.message_id or "",
                t.sender or "",
                r.address,
                r.status,
                r.outcome,
                len(r.path),
                r.path[0].host if r.path else "",
                r.path[-1].host if r.path else "",
                "" if delay is None else _seconds(delay),
            ]
        )


def _fit(
    table: list[list[str]], headers: list[str], shrink: Sequence[tuple[int, int]], width: int
) -> list[int]:
    """Clip cells and headers in place until the table fits ``width``; the column widths.

    ``shrink`` lists (column, floor) in the order columns give up room; if the floors are still
    too wide, every listed column goes down to a few characters.
    """
    natural = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(headers)]
    floors = dict(shrink)
    order = list(floors)
    widths = fit_widths(natural, [floors.get(i, 0) for i in range(len(natural))], order, width)
    widths = fit_widths(widths, [_LAST_FLOOR] * len(widths), order, width)
    for i in order:
        headers[i] = clip(headers[i], widths[i])
        for row in table:
            row[i] = clip(row[i], widths[i])
    return widths


def render_traces_table(traces: Sequence[Trace], out: IO[str], *, width: int = 100) -> None:
    """The CSV's rows as a table that fits ``width``; a notification's rows start with ``↳``.

    Long values are clipped with ``…``, the message ID first (it repeats on every row of a
    message), the recipient last; logged values are escaped (``safe.printable``) before they
    are measured. Full values are in ``--format csv|json``.
    """
    headers = ["message_id", "sender", "recipient", "status", "outcome", "hops", "first", "last"]
    headers.append("delay")
    table: list[list[str]] = []
    for t, nested, r in _trace_rows(traces):
        delay = _total_delay(t, r)
        table.append(
            [
                ("↳ " if nested else "") + printable(t.message_id or "-"),
                printable(_sender(t.sender)),
                printable(r.address or "-"),
                printable(r.status),
                printable(r.outcome),
                str(len(r.path)),
                printable(r.path[0].host) if r.path else "-",
                printable(r.path[-1].host) if r.path else "-",
                "-" if delay is None else fmt_duration(delay),
            ]
        )
    if not table:
        return
    widths = _fit(table, headers, ((0, 12), (1, 12), (6, 6), (7, 6), (2, 16)), width)
    # Laid out here rather than by tabulate, whose headers always take two extra columns:
    # in 100 columns those are the room an address needs. The look is tabulate's "simple".
    for row in (headers, ["-" * w for w in widths], *table):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        out.write(line.rstrip() + "\n")


# --------------------------------------------------------------------------- text (tree)


@dataclass(frozen=True, slots=True)
class _Seg:
    text: str
    style: str | None = None


_Line = tuple[_Seg, ...]


@dataclass
class _Node:
    lines: list[_Line]
    children: list[_Node] = field(default_factory=list)


def status_style(word: str) -> str | None:
    if word in _GREEN:
        return "green"
    if word in _YELLOW:
        return "yellow"
    if word in _RED:
        return "red"
    return None


@dataclass(frozen=True, slots=True)
class _Glyphs:
    branch: str
    last: str
    pipe: str
    blank: str
    dot: str
    ellipsis: str
    arrow: str


_UNICODE = _Glyphs("├─ ", "└─ ", "│  ", "   ", " · ", "…", "→")
_ASCII = _Glyphs("|- ", "`- ", "|  ", "   ", ", ", "~", "->")


def _header(trace: Trace, word: str) -> list[_Line]:
    size = f"  size {trace.size}" if trace.size is not None else ""
    elapsed = fmt_duration((trace.last_seen - trace.first_seen).total_seconds())
    first = trace.first_seen.strftime("%Y-%m-%d %H:%M:%S %z")
    return [
        (
            _Seg(f"{word} ", "bold"),
            _Seg(printable(trace.message_id or "(no message-id)"), "bold"),
            _Seg(f"  from {printable(_sender(trace.sender))}{size}"),
        ),
        (_Seg(f"first seen {first}  end-to-end {elapsed}"),),
        *([(_Seg(f"subject {printable(trace.subject)}"),)] if trace.subject is not None else []),
    ]


def _hop_line(hop: Hop) -> _Line:
    client = f"  from {printable(hop.client)}" if hop.client else ""
    # Only a link short of a logged hand-off says how sure it is.
    sure = f" ({hop.strength})" if hop.strength not in (None, LinkStrength.STRONG) else ""
    return (
        _Seg(f"{printable(hop.host)} {printable(hop.queue_id)}", "bold"),
        _Seg(f"  {hop.time.strftime('%H:%M:%S')}  via {printable(hop.via)}{sure}{client}"),
    )


def _recipient_node(r: RecipientOutcome, attempt: Attempt | None, g: _Glyphs) -> _Node:
    addr = printable(r.address or "(no recipient)")
    if r.orig_address and r.orig_address != r.address:
        addr += f" (orig {printable(r.orig_address)})"
    # The words are escaped before they are coloured: the colour is collector's, the word is
    # the log's (an unknown status is shown as it was logged).
    words: list[_Seg] = [_Seg(printable(r.status), status_style(r.status))]
    if r.outcome != r.status:
        words += [_Seg(f" {g.arrow} "), _Seg(printable(r.outcome), status_style(r.outcome))]
    tail = ""
    if r.dsn:
        tail += f"  {printable(r.dsn)}"
    if r.time is not None:
        tail += f"  {r.time.strftime('%H:%M:%S')}"
    if r.response:
        tail += f"  {printable(r.response)}"
    lines: list[_Line] = [(_Seg(f"{g.arrow} {addr}  "), *words, _Seg(tail))]
    if attempt is not None and attempt.delays:
        lines.append((_Seg(printable(fmt_delays(attempt.delays, g.dot))),))
    return _Node(lines)


def _trace_roots(trace: Trace, g: _Glyphs, depth: int = 0) -> tuple[list[_Node], list[_Node]]:
    """The hop tree of one trace (roots) and what could not be attached under a hop."""
    nodes = [_hop_node(h, g) for h in trace.hops]
    loose: list[_Node] = []
    for r in trace.recipients:
        node = _recipient_node(r, r.attempt, g)
        (nodes[r.hop_index].children if r.hop_index is not None else loose).append(node)
    for h, node in zip(trace.hops, nodes, strict=True):
        if h.parent_index is not None:
            nodes[h.parent_index].children.append(node)
    for n in trace.notifications:
        node = _notification_node(n, g, depth + 1)
        (nodes[n.anchor].children if n.anchor is not None else loose).append(node)
    roots = [node for h, node in zip(trace.hops, nodes, strict=True) if h.parent_index is None]
    return roots, loose


def _hop_node(hop: Hop, g: _Glyphs) -> _Node:
    delays = _delays(hop)
    shown = [(_Seg(printable(fmt_delays(delays, g.dot))),)] if delays else []
    verdict = hop.verdict
    if verdict is not None:
        shown.append((_Seg(f"verdict {printable(verdict)}"),))
    return _Node([_hop_line(hop), *shown])


def _notification_node(trace: Trace, g: _Glyphs, depth: int) -> _Node:
    roots, loose = _trace_roots(trace, g, depth)
    notes = [_Node([(_Seg(f"note: {printable(note)}", "yellow"),)]) for note in trace.notes]
    return _Node(_header(trace, "notification"), roots + loose + notes)


def _tree_lines(node: _Node, first: str, rest: str, g: _Glyphs) -> Iterator[_Line]:
    for k, line in enumerate(node.lines):
        if k == 0:
            yield (_Seg(first), *line)
        else:
            yield (_Seg(rest + (g.pipe if node.children else g.blank)), *line)
    for k, child in enumerate(node.children):
        last = k == len(node.children) - 1
        yield from _tree_lines(
            child, rest + (g.last if last else g.branch), rest + (g.blank if last else g.pipe), g
        )


def _emit(line: _Line, out: IO[str], width: int, color: bool, ellipsis: str) -> None:
    kept, cut = clip_parts([s.text for s in line], width, ellipsis)
    if cut:
        line = (*(_Seg(text, s.style) for text, s in zip(kept, line)), _Seg(ellipsis))
    text = "".join(
        f"{_ANSI[s.style]}{s.text}{_RESET}" if color and s.style and s.text else s.text
        for s in line
    )
    out.write(text.rstrip() + "\n")


def render_traces_text(
    traces: Sequence[Trace],
    out: IO[str],
    *,
    width: int = 100,
    color: bool = False,
    ascii: bool = False,
) -> None:
    """One block per message: a header, the hop tree with recipients and notifications, notes.

    No line is longer than ``width`` characters (code points; long values are clipped with
    ``…``). Logged values are escaped (``safe.printable``) as the lines are built, before they
    are clipped and before collector's own ANSI colours (only with ``color=True``) are added.
    ``ascii=True`` draws the tree with ``|-`` and `` `- `` and uses ASCII punctuation (logged
    values are printed as they are, escaped).
    """
    g = _ASCII if ascii else _UNICODE
    for n, trace in enumerate(traces):
        if n:
            out.write("\n")
        lines: list[_Line] = _header(trace, "message")
        roots, loose = _trace_roots(trace, g)
        for root in roots:
            lines += _tree_lines(root, "", "", g)
        for node in loose:
            lines += _tree_lines(node, "", "", g)
        lines += [(_Seg(f"note: {printable(note)}", "yellow"),) for note in trace.notes]
        for line in lines:
            _emit(line, out, width, color, g.ellipsis)


# --------------------------------------------------------------------------- Graphviz and Mermaid


def _dot_escape(text: str) -> str:
    """Shown (``printable``), then backslashes doubled so a label never sees ``\\l``/``\\N``."""
    return printable(text).replace("\\", "\\\\").replace('"', '\\"')


def _dot_quote(text: str) -> str:
    """A DOT string literal of one text."""
    return f'"{_dot_escape(text)}"'


def _dot_label(*parts: str) -> str:
    """Parts joined by DOT's ``\\n`` line break, each part escaped on its own."""
    return '"' + "\\n".join(_dot_escape(p) for p in parts) + '"'


@dataclass
class _GraphNode:
    id: str
    label: tuple[str, ...]
    host: str | None  # hops are clustered by host; recipients are not


@dataclass
class _GraphEdge:
    src: str
    dst: str
    label: str
    dashed: bool


def _graph(traces: Sequence[Trace]) -> tuple[list[_GraphNode], list[_GraphEdge]]:
    """Nodes n1, n2, ... for hops and recipient outcomes; edges parent -> child."""
    nodes: list[_GraphNode] = []
    edges: list[_GraphEdge] = []

    def new(label: tuple[str, ...], host: str | None) -> str:
        nodes.append(_GraphNode(f"n{len(nodes) + 1}", label, host))
        return nodes[-1].id

    def add(trace: Trace, attach: str | None) -> None:
        ids = [new((h.host, h.queue_id), h.host) for h in trace.hops]
        for h, hop_id in zip(trace.hops, ids, strict=True):
            if h.parent_index is not None:
                edges.append(_GraphEdge(ids[h.parent_index], hop_id, h.via, False))
        if attach is not None and trace.hops:
            edges.append(_GraphEdge(attach, ids[0], HopVia.NOTIFICATION, True))
        for r in trace.recipients:
            leaf = new((r.address or "(no recipient)", r.outcome), None)
            if r.hop_index is not None:
                edges.append(_GraphEdge(ids[r.hop_index], leaf, r.status, False))
        for n in trace.notifications:
            add(n, ids[n.anchor] if n.anchor is not None else None)

    for t in traces:
        add(t, None)
    return nodes, edges


def _hosts_in_order(nodes: Sequence[_GraphNode]) -> list[str]:
    return list(dict.fromkeys(n.host for n in nodes if n.host is not None))


def render_traces_dot(traces: Sequence[Trace], out: IO[str]) -> None:
    """A Graphviz digraph: hops clustered per host, recipient outcomes as leaves.

    Notifications hang off the hop that generated them on a dashed edge.
    """
    nodes, edges = _graph(traces)
    out.write("digraph traces {\n")
    out.write("  rankdir=LR;\n")
    out.write('  node [shape=box, fontname="monospace"];\n')
    for k, host in enumerate(_hosts_in_order(nodes), 1):
        out.write(f"  subgraph cluster_{k} {{\n")
        out.write(f"    label={_dot_quote(host)};\n")
        for n in nodes:
            if n.host == host:
                out.write(f"    {n.id} [label={_dot_label(*n.label)}];\n")
        out.write("  }\n")
    for n in nodes:
        if n.host is None:
            out.write(f"  {n.id} [label={_dot_label(*n.label)}, shape=ellipse];\n")
    for e in edges:
        style = ", style=dashed" if e.dashed else ""
        out.write(f"  {e.src} -> {e.dst} [label={_dot_quote(e.label)}{style}];\n")
    out.write("}\n")


def _mermaid_text(text: str) -> str:
    """Shown (``printable``), with Mermaid entity codes for what would end a label or be read
    as HTML."""
    out = []
    for c in printable(text):
        if c == "#":
            out.append("#35;")
        elif c == '"':
            out.append("#quot;")
        elif c == "<":
            out.append("#lt;")
        elif c == ">":
            out.append("#gt;")
        elif c == "&":
            out.append("#amp;")
        else:
            out.append(c)
    return "".join(out)


def _mermaid_label(*parts: str) -> str:
    return '"' + "<br/>".join(_mermaid_text(p) for p in parts) + '"'


def render_traces_mermaid(traces: Sequence[Trace], out: IO[str]) -> None:
    """A bare ``flowchart LR`` (no Markdown fence: wrap it in a mermaid fence to embed it).

    Node ids are n1, n2, ...; host subgraphs are h1, h2, ...; every label is quoted, with ``"``,
    ``#``, ``<``, ``>`` and ``&`` written as Mermaid entity codes.
    """
    nodes, edges = _graph(traces)
    out.write("flowchart LR\n")
    for k, host in enumerate(_hosts_in_order(nodes), 1):
        out.write(f"  subgraph h{k}[{_mermaid_label(host)}]\n")
        for n in nodes:
            if n.host == host:
                out.write(f"    {n.id}[{_mermaid_label(*n.label)}]\n")
        out.write("  end\n")
    for n in nodes:
        if n.host is None:
            out.write(f"  {n.id}([{_mermaid_label(*n.label)}])\n")
    for e in edges:
        arrow = "-.->" if e.dashed else "-->"
        out.write(f"  {e.src} {arrow}|{_mermaid_label(e.label)}| {e.dst}\n")


# --------------------------------------------------------------------------- follow


def _path_hosts(path: Sequence[GroupRef]) -> str:
    """``mx1>filter1>mbox1``: the hosts a recipient went through (a re-injection on the same
    host is one step)."""
    hosts: list[str] = []
    for ref in path:
        if not hosts or hosts[-1] != ref.host:
            hosts.append(ref.host)
    return ">".join(hosts) or "-"


def live_line(trace: Trace, r: RecipientOutcome) -> str:
    """``follow``'s line for one recipient of ``trace`` (``time host queue_id from to status
    outcome hops``), one line of printable text whatever the log said."""
    when = iso(r.time or trace.last_seen) or "-"
    words = (when, r.host, r.queue_id, _sender(trace.sender), r.address or "<>", r.status,
             str(r.outcome), _path_hosts(r.path))
    return " ".join(printable(w).replace(" ", "\\x20") for w in words)


def live_lines(trace: Trace) -> list[str]:
    """``follow``'s lines for one completed message: one per (message, recipient), then its
    notifications' (see :func:`live_line`)."""
    out = [live_line(t, r) for t, _, r in _trace_rows([trace])]
    if not out:  # a message with no recipient logged (a discarded pickup)
        first = trace.hops[0]
        words = (iso(trace.last_seen) or "-", first.host, first.queue_id, _sender(trace.sender),
                 "-", "-", "-", first.host)
        out.append(" ".join(printable(w).replace(" ", "\\x20") for w in words))
    return out


def render_live_text(trace: Trace, out: IO[str]) -> None:
    """``follow``'s text output for one completed message (see :func:`live_lines`)."""
    out.write("".join(line + "\n" for line in live_lines(trace)))


def render_live_rows(trace: Trace, rows: Sequence[tuple[Trace, RecipientOutcome]],
                     complete: bool, out: IO[str]) -> None:
    """``follow``'s text output for what became known of one message: a line per recipient
    in ``rows`` (each with the trace it belongs to); a completed message without any
    recipient (a discarded pickup) is one line of its own."""
    lines = [live_line(t, r) for t, r in rows]
    if not lines and complete and not any(True for _ in _trace_rows([trace])):
        lines = live_lines(trace)
    out.write("".join(line + "\n" for line in lines))


def render_live_ndjson(trace: Trace, out: IO[str]) -> None:
    """``follow --format ndjson``: one trace object on one line (as ``trace --format json``)."""
    write_ndjson([trace_dict(trace)], out)
