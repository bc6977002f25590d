"""``collector trace --format html``: one self-contained HTML5 page for a ticket or a colleague.

The page holds what ``--format json`` holds, laid out for a person: a header (the query, when
the page was made, by which collector, the verdict), then per message its recipients' fates,
the hop tree (host, queue ID, via, time, client, relay, delays, filter verdicts, the
recipients each hop decided) with the log lines of every hop, notifications nested under the
hop that sent them, the trace's notes and the hosts' clock skew; then the coverage ledger of
every host (sources read with their first and last line, the parts of the window not seen,
host errors).

One file, nothing fetched: the style sheet is inline, there is no script, no font, image or
URL (the only links are ``#`` anchors into the page itself). Every text that came from a log
or a host goes through :func:`_text`: ``safe.printable`` first (control characters, bidi
controls and other invisible characters shown escaped, as in every other output for a
person), then ``html.escape(quote=True)``. Such text only ever lands in element content,
never in a tag, an attribute, the style sheet or a URL; attributes and class names are
collector's own words. The page is written in ASCII (anything else as ``&#NNNN;``), so it
stays right whatever encoding the stream it is written to has.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import IO

from collector.models import (
    Hop,
    LinkStrength,
    Query,
    RecipientOutcome,
    SourceState,
    Trace,
)
from collector.render.rows import HostReport, iso
from collector.render.safe import printable
from collector.render.trace import fmt_delays, fmt_duration, status_style

__all__ = ["describe_query", "render_traces_html"]

# The status and outcome words' colours, as CSS classes (collector's words, never the log's).
_STATUS_CLASS = {"green": "st-ok", "yellow": "st-wait", "red": "st-bad", None: "st-other"}
_VERDICT_CLASS = {"found": "v-found", "absent": "v-absent", "inconclusive": "v-inconclusive"}
_STATE_CLASS = {SourceState.READ: "st-ok", SourceState.SKIPPED: "st-other",
                SourceState.UNREAD: "st-bad"}

_STYLE = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;
  --ok: #1a7f37; --ok-bg: #dafbe1; --wait: #9a6700; --wait-bg: #fff8c5;
  --bad: #cf222e; --bad-bg: #ffebe9; --other: #59636e; --other-bg: #eff2f5;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 75rem; padding: 1.25rem 1.5rem 2rem; color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; background: #fff; }
h1 { font-size: 1.35rem; margin: 0 0 .4rem; font-weight: 600; }
h2 { font-size: 1.1rem; margin: 0 0 .5rem; font-weight: 600; word-break: break-all; }
h3 { font-size: .8rem; margin: 1rem 0 .35rem; color: var(--muted); text-transform: uppercase;
  letter-spacing: .05em; font-weight: 600; }
code, .mono, pre { font-family: var(--mono); font-size: 12.5px; }
header.page { border-bottom: 1px solid var(--line); padding-bottom: .75rem;
  margin-bottom: 1rem; }
dl.facts { display: flex; flex-wrap: wrap; gap: .15rem 1.4rem; margin: .2rem 0 0; }
dl.facts div { display: flex; gap: .4rem; min-width: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; word-break: break-all; }
section.trace, section.ledger, section.clocks { border: 1px solid var(--line);
  border-radius: 6px; padding: .9rem 1.1rem; margin: 0 0 1rem; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 1rem; font-size: 12px;
  font-weight: 600; line-height: 1.6; vertical-align: middle; white-space: nowrap; }
.v-found { color: var(--ok); background: var(--ok-bg); }
.v-absent { color: #0550ae; background: #ddf4ff; }
.v-inconclusive { color: var(--wait); background: var(--wait-bg); }
.st-ok { color: var(--ok); background: var(--ok-bg); }
.st-wait { color: var(--wait); background: var(--wait-bg); }
.st-bad { color: var(--bad); background: var(--bad-bg); }
.st-other { color: var(--other); background: var(--other-bg); }
table { border-collapse: collapse; width: 100%; margin: .2rem 0 .4rem; }
th, td { text-align: left; vertical-align: top; padding: .25rem .6rem .25rem 0;
  border-bottom: 1px solid var(--line); }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
td.wrap { word-break: break-word; }
td.addr { min-width: 12rem; word-break: break-all; }
td.nowrap, th.nowrap { white-space: nowrap; }
ul.tree, ul.tree ul { list-style: none; margin: 0; padding: 0; }
ul.tree ul { margin-left: .55rem; padding-left: 1rem; border-left: 2px solid var(--line); }
li.hop { margin: .45rem 0; }
.hop-head { font-family: var(--mono); font-size: 13px; }
.hop-head .host { font-weight: 700; }
.hop-head .qid { font-weight: 700; color: #0550ae; }
.hop-head .via { display: inline-block; padding: 0 .4rem; border-radius: 3px;
  background: var(--soft); border: 1px solid var(--line); font-size: 12px; }
.muted, .hop-detail { color: var(--muted); }
.hop-detail { font-size: 12.5px; }
ul.rcpts { list-style: none; margin: .2rem 0; padding: 0; }
ul.rcpts li { margin: .1rem 0; font-size: 13px; word-break: break-word; }
ul.rcpts .addr { font-family: var(--mono); }
.filter-verdict { font-size: 12.5px; }
details.log { margin: .25rem 0 .1rem; }
details.log summary { cursor: pointer; color: var(--muted); font-size: 12px; }
pre { margin: .2rem 0 0; padding: .45rem .6rem; background: var(--soft);
  border: 1px solid var(--line); border-radius: 4px; white-space: pre-wrap;
  overflow-wrap: anywhere; line-height: 1.4; }
div.notification { margin: .45rem 0; padding: .5rem .75rem; border: 1px dashed var(--line);
  border-radius: 6px; background: #fcfcfd; }
div.notification h4 { margin: 0; font-size: 13px; font-weight: 600; word-break: break-all; }
ul.notes { margin: .3rem 0; padding-left: 1.2rem; color: var(--wait); }
.host-error { color: var(--bad); }
nav.index { margin: 0 0 1rem; }
nav.index ol { margin: .25rem 0 0; padding-left: 1.4rem; }
footer { color: var(--muted); font-size: 12px; margin-top: 1.5rem; }
@media print { details.log summary { display: none; } section { break-inside: avoid-page; } }
"""


# --------------------------------------------------------------------------- text


def _text(value: object) -> str:
    """A value as element content: shown (``printable``), then HTML-escaped."""
    return html.escape(printable(str(value)), quote=True)


def _when(when: datetime | None, day: date | None = None) -> str:
    """A ``<time>`` of the page (ISO 8601 in its attribute): the time of day when ``day`` is
    its date, else date and time; ``-`` for none."""
    if when is None:
        return "-"
    clock = when.strftime("%H:%M:%S")
    if when.microsecond:
        clock += f".{when.microsecond // 1000:03d}"
    if day is None or when.date() != day:
        clock = f"{when.strftime('%Y-%m-%d')} {clock} {when.strftime('%z')}"
    return f'<time datetime="{iso(when)}">{clock}</time>'


def _status(word: str) -> str:
    """A status or outcome word in its colour (the class is chosen from collector's words)."""
    return f'<span class="badge {_STATUS_CLASS[status_style(word)]}">{_text(word)}</span>'


def _sender(sender: str | None) -> str:
    if sender is None:
        return "-"
    return sender or "<>"


def describe_query(query: Query) -> str:
    """What was asked, as the trace's command line says it: the QUERY, then the selectors."""
    words: list[str] = list(query.terms)
    for option, values in (
        ("--from", query.senders), ("--to", query.recipients),
        ("--message-id", query.message_ids), ("--queue-id", query.queue_ids),
        ("--status", query.statuses), ("--client", query.clients),
        ("--subject", query.subjects),
    ):
        words += [f"{option} {v}" for v in values]
    if query.since is not None:
        words.append(f"--since {iso(query.since)}")
    if query.until is not None:
        words.append(f"--until {iso(query.until)}")
    return " ".join(words) or "(every message)"


# --------------------------------------------------------------------------- one trace


class _Page:
    """The page being written: its parts, and the counter its anchors are numbered by."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.hops = 0

    def add(self, *parts: str) -> None:
        self.parts.extend(parts)


def _recipients_table(page: _Page, trace: Trace, day: date) -> None:
    if not trace.recipients:
        page.add('<p class="muted">No recipient logged.</p>\n')
        return
    page.add('<table class="recipients"><thead><tr><th>recipient</th><th>status</th>'
             '<th>outcome</th><th class="nowrap">dsn</th><th>at</th><th>time</th>'
             '<th>response</th></tr></thead><tbody>\n')
    for r in trace.recipients:
        addr = _text(r.address or "(no recipient)")
        if r.orig_address and r.orig_address != r.address:
            addr += f' <span class="muted">(orig {_text(r.orig_address)})</span>'
        page.add(
            f'<tr class="recipient"><td class="addr mono">{addr}</td>'
            f"<td>{_status(r.status)}</td><td>{_status(r.outcome)}</td>"
            f'<td class="nowrap mono">{_text(r.dsn or "-")}</td>'
            f'<td class="nowrap mono">{_text(r.host)} {_text(r.queue_id)}</td>'
            f'<td class="nowrap mono">{_when(r.time, day)}</td>'
            f'<td class="wrap">{_text(r.response or "-")}</td></tr>\n'
        )
    page.add("</tbody></table>\n")


def _hop_lines(hop: Hop) -> list[str]:
    """The log lines of a hop: its queue file's lines, or the refusal it logged."""
    lines = [r.line for r in hop.group.records if r.line]
    lines += [rej.line for rej in hop.group.rejects if rej.line and rej.queue_id is None]
    return lines


def _recipient_item(r: RecipientOutcome, day: date) -> str:
    addr = _text(r.address or "(no recipient)")
    if r.orig_address and r.orig_address != r.address:
        addr += f" (orig {_text(r.orig_address)})"
    words = _status(r.status)
    if r.outcome != r.status:
        words += f" &rarr; {_status(r.outcome)}"
    tail = []
    if r.dsn:
        tail.append(f'<span class="mono">{_text(r.dsn)}</span>')
    if r.time is not None:
        tail.append(f'<span class="mono">{_when(r.time, day)}</span>')
    if r.attempt is not None and r.attempt.relay:
        tail.append(f'relay <span class="mono">{_text(r.attempt.relay)}</span>')
    if r.response:
        tail.append(_text(r.response))
    delays = ""
    if r.attempt is not None and r.attempt.delays:
        delays = f'<br><span class="hop-detail">{_text(fmt_delays(r.attempt.delays))}</span>'
    return (f'<li class="rcpt">&rarr; <span class="addr">{addr}</span> {words} '
            f'{" &middot; ".join(tail)}{delays}</li>\n')


def _hop(page: _Page, trace: Trace, k: int, children: list[list[int]], day: date) -> None:
    hop = trace.hops[k]
    page.hops += 1
    head = [
        f'<span class="host">{_text(hop.host)}</span>',
        f'<span class="qid">{_text(hop.queue_id)}</span>',
        f'<span class="time">{_when(hop.time, day)}</span>',
        f'<span class="via">via {_text(hop.via)}'
        + (f" ({_text(hop.strength)})" if hop.strength not in (None, LinkStrength.STRONG)
           else "") + "</span>",
    ]
    if hop.client:
        head.append(f'<span class="client">from {_text(hop.client)}</span>')
    page.add(f'<li class="hop" id="hop-{page.hops}"><div class="hop-head">{" ".join(head)}'
             "</div>\n")
    detail = []
    if hop.handoff is not None and hop.handoff.relay:
        detail.append(f'hand-off <span class="mono">relay={_text(hop.handoff.relay)}'
                      "</span>")
    if hop.handoff is not None and hop.handoff.delays:
        detail.append(_text(fmt_delays(hop.handoff.delays)))
    if hop.evidence:
        detail.append("evidence: " + ", ".join(_text(e) for e in hop.evidence))
    if detail:
        page.add(f'<div class="hop-detail">{" &middot; ".join(detail)}</div>\n')
    for v in hop.group.verdicts:
        said = f"{v.filter} {v.verdict}" + (f" {v.detail}" if v.detail else "")
        page.add(f'<div class="filter-verdict">verdict <span class="mono">{_text(said)}'
                 "</span></div>\n")
    mine = [r for r in trace.recipients if r.hop_index == k]
    if mine:
        page.add('<ul class="rcpts">\n', *(_recipient_item(r, day) for r in mine), "</ul>\n")
    lines = _hop_lines(hop)
    if lines:
        s = "s" if len(lines) != 1 else ""
        page.add(f'<details class="log" open><summary>{len(lines)} log line{s} of '
                 f"{_text(hop.host)} {_text(hop.queue_id)}</summary><pre>",
                 "".join(_text(line) + "\n" for line in lines), "</pre></details>\n")
    notes = [n for n in trace.notifications if n.anchor == k]
    if children[k] or notes:
        page.add("<ul>\n")
        for c in children[k]:
            _hop(page, trace, c, children, day)
        for n in notes:
            page.add('<li class="notice">')
            _notification(page, n)
            page.add("</li>\n")
        page.add("</ul>\n")
    page.add("</li>\n")


def _tree(page: _Page, trace: Trace, day: date) -> None:
    """The hops of one trace as nested lists; what has no place in the tree follows it."""
    children: list[list[int]] = [[] for _ in trace.hops]
    roots = []
    for k, h in enumerate(trace.hops):
        if h.parent_index is None:
            roots.append(k)
        else:
            children[h.parent_index].append(k)
    page.add('<ul class="tree">\n')
    for k in roots:
        _hop(page, trace, k, children, day)
    page.add("</ul>\n")
    loose = [r for r in trace.recipients if r.hop_index is None]
    if loose:
        page.add('<ul class="rcpts">\n', *(_recipient_item(r, day) for r in loose), "</ul>\n")
    for n in trace.notifications:
        if n.anchor is None:
            _notification(page, n)


def _facts(trace: Trace) -> str:
    facts = [("from", _text(_sender(trace.sender)))]
    if trace.size is not None:
        facts.append(("size", f"{trace.size} bytes"))
    if trace.subject is not None:
        facts.append(("subject", _text(trace.subject)))
    facts.append(("first seen", _when(trace.first_seen)))
    facts.append(("end to end", fmt_duration((trace.last_seen - trace.first_seen)
                                             .total_seconds())))
    return _dl(facts)


def _dl(facts: Iterable[tuple[str, str]]) -> str:
    """Name-value pairs (the names are collector's, the values already made safe)."""
    return ('<dl class="facts">'
            + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts) + "</dl>\n")


def _notes(page: _Page, trace: Trace) -> None:
    if trace.notes:
        page.add('<ul class="notes">\n',
                 *(f'<li class="note">{_text(n)}</li>\n' for n in trace.notes), "</ul>\n")


def _notification(page: _Page, trace: Trace) -> None:
    day = trace.first_seen.date()
    page.add('<div class="notification">',
             f"<h4>notification {_text(trace.message_id or '(no message-id)')}</h4>\n",
             _facts(trace))
    _tree(page, trace, day)
    _notes(page, trace)
    page.add("</div>\n")


def _trace(page: _Page, trace: Trace, n: int) -> None:
    day = trace.first_seen.date()
    page.add(f'<section class="trace" id="trace-{n}">\n',
             f"<h2>message {_text(trace.message_id or '(no message-id)')}</h2>\n",
             _facts(trace), "<h3>Recipients</h3>\n")
    _recipients_table(page, trace, day)
    page.add("<h3>Hops</h3>\n")
    _tree(page, trace, day)
    _notes(page, trace)
    page.add("</section>\n")


# --------------------------------------------------------------------------- hosts


def _clocks(page: _Page, traces: Sequence[Trace]) -> None:
    from collector.trace.skew import NOTABLE, clock_skews

    skews = clock_skews(traces)
    if not skews:
        return
    page.add('<section class="clocks" id="clocks"><h2>Clocks</h2>\n'
             '<p class="muted">Each host pair that handed messages over: the receiver\'s clock '
             "minus the sender's, from the hand-offs' times (whole-second stamps make a second "
             "either way noise).</p>\n<table><thead><tr><th>sender</th><th>receiver</th>"
             "<th>seconds</th><th>hand-offs</th><th></th></tr></thead><tbody>\n")
    for k in skews:
        mark = (f'<span class="badge st-wait">{_text(k)}</span>' if abs(k.seconds) >= NOTABLE
                else '<span class="muted">within the stamps\' grain</span>')
        page.add(f"<tr><td>{_text(k.sender)}</td><td>{_text(k.receiver)}</td>"
                 f'<td class="mono">{k.seconds:+.3f}</td><td>{k.samples}</td>'
                 f"<td>{mark}</td></tr>\n")
    page.add("</tbody></table></section>\n")


def _answer(h: HostReport) -> str:
    """How complete one host's answer is, as a coloured word."""
    if h.error is not None:
        return '<span class="badge st-bad">failed</span>'
    if h.coverage is None:
        return '<span class="badge st-other">no coverage</span>'
    if h.coverage.complete:
        return '<span class="badge st-ok">complete</span>'
    return '<span class="badge st-wait">incomplete</span>'


def _window(h: HostReport) -> tuple[str, str, str]:
    cov = h.coverage
    if cov is None:
        return "-", "-", "-"
    asked = (f"{_when(cov.since) if cov.since else 'open'} to "
             f"{_when(cov.until) if cov.until else 'now'}")
    return asked, _when(cov.first), _when(cov.last)


def _ledger(page: _Page, hosts: Sequence[HostReport]) -> None:
    """Every host's answer: how complete, its sources, the parts of the window not seen,
    its error."""
    page.add('<section class="ledger" id="coverage"><h2>Coverage</h2>\n'
             '<p class="muted">What of the time window each host\'s logs let this answer see. '
             "Only a host whose answer is complete proves that a message is not there.</p>\n"
             "<table><thead><tr><th>host</th><th>answer</th><th>window asked</th>"
             "<th>logs from</th><th>logs to</th><th>lines read</th></tr></thead><tbody>\n")
    for h in hosts:
        asked, first, last = _window(h)
        s = h.stats
        lines = (f"{s.lines} ({s.parsed} parsed, {s.unknown} not understood, {s.bad} bad)"
                 if s is not None else "-")
        via = f' <span class="muted">read on {_text(h.via)}</span>' if h.via else ""
        page.add(f'<tr class="host"><td class="mono host-name">{_text(h.name)}</td>'
                 f"<td>{_answer(h)}{via}</td>"
                 f'<td class="mono">{asked}</td><td class="nowrap mono">{first}</td>'
                 f'<td class="nowrap mono">{last}</td><td>{lines}</td></tr>\n')
    page.add("</tbody></table>\n")
    failed = [h for h in hosts if h.error is not None]
    if failed:
        page.add("<h3>Host errors</h3>\n<table><thead><tr><th>host</th><th>stage</th>"
                 "<th>error</th></tr></thead><tbody>\n")
        for h in failed:
            assert h.error is not None
            page.add(f'<tr class="host-error"><td class="mono">{_text(h.name)}</td>'
                     f'<td class="nowrap">{_text(h.error.where)}</td>'
                     f'<td class="wrap">{_text(h.error.message)}</td></tr>\n')
        page.add("</tbody></table>\n")
    spans = [(h, src) for h in hosts if h.coverage is not None for src in h.coverage.sources]
    if spans:
        page.add("<h3>Sources</h3>\n<table><thead><tr><th>host</th><th>source</th>"
                 "<th>state</th><th>first line</th><th>last line</th><th>note</th></tr>"
                 "</thead><tbody>\n")
        for h, src in spans:
            page.add(f'<tr class="source"><td class="mono">{_text(h.name)}</td>'
                     f'<td class="wrap mono">{_text(src.path)}</td>'
                     f'<td><span class="badge {_STATE_CLASS[src.state]}">'
                     f"{_text(src.state)}</span></td>"
                     f'<td class="nowrap mono">{_when(src.first)}</td>'
                     f'<td class="nowrap mono">{_when(src.last)}</td>'
                     f'<td class="wrap">{_text(src.why or "")}</td></tr>\n')
        page.add("</tbody></table>\n")
    holes = [(h, u) for h in hosts if h.coverage is not None for u in h.coverage.uncovered]
    if holes:
        page.add("<h3>Not seen</h3>\n<table><thead><tr><th>host</th><th>why</th>"
                 "<th>from</th><th>to</th><th>what</th></tr></thead><tbody>\n")
        for h, u in holes:
            page.add(f'<tr class="hole"><td class="mono">{_text(h.name)}</td>'
                     f'<td><span class="badge st-wait">{_text(u.why)}</span></td>'
                     f'<td class="nowrap mono">{_when(u.start)}</td>'
                     f'<td class="nowrap mono">{_when(u.end)}</td>'
                     f'<td class="wrap">{_text(u)}</td></tr>\n')
        page.add("</tbody></table>\n")
    page.add("</section>\n")


# --------------------------------------------------------------------------- the page


def render_traces_html(
    traces: Sequence[Trace],
    hosts: Sequence[HostReport],
    out: IO[str],
    *,
    query: str,
    verdict: str,
    generated: datetime,
    version: str,
) -> None:
    """The whole page for one trace run: ``query`` as the user asked it (see
    :func:`describe_query`), ``verdict`` as in JSON, ``generated`` and ``version`` for the
    header (given, so that the same run renders the same page)."""
    page = _Page()
    v_class = _VERDICT_CLASS.get(verdict, "v-inconclusive")
    failed = sum(1 for h in hosts if not h.ok)
    page.add(
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="collector {html.escape(version, quote=True)}">\n'
        f"<title>collector trace {_text(query)}</title>\n<style>{_STYLE}</style>\n"
        "</head>\n<body>\n",
        '<header class="page">\n',
        f'<h1>Trace of <code>{_text(query)}</code> '
        f'<span class="badge {v_class}" id="verdict">{_text(verdict)}</span></h1>\n',
        _dl([
            ("verdict", _text(verdict)),
            ("messages", str(len(traces))),
            ("hosts", f"{len(hosts)}"
             + (f' (<span class="host-error">{failed} failed</span>)' if failed else "")),
            ("generated", _when(generated)),
            ("by", f"collector {_text(version)}"),
        ]),
        "</header>\n<main>\n",
    )
    if len(traces) > 1:
        page.add('<nav class="index"><h3>Messages</h3><ol>\n')
        for n, t in enumerate(traces, 1):
            page.add(f'<li><a href="#trace-{n}">{_text(t.message_id or "(no message-id)")}'
                     f'</a> <span class="muted">from {_text(_sender(t.sender))}</span></li>\n')
        page.add("</ol></nav>\n")
    if not traces:
        page.add('<section class="trace-none"><p>No message matched in what was read. ')
        page.add("Every host's logs cover the whole window: the message is not there.</p>"
                 if verdict == "absent" else
                 "Not all of the window could be read (see the coverage below): this does not "
                 "prove the message is not there.</p>")
        page.add("</section>\n")
    for n, t in enumerate(traces, 1):
        _trace(page, t, n)
    _clocks(page, traces)
    _ledger(page, hosts)
    page.add("</main>\n",
             f"<footer>Made by collector {_text(version)} on {_when(generated)}; "
             "one self-contained page (no scripts, nothing fetched).</footer>\n"
             "</body>\n</html>\n")
    out.write("".join(page.parts).encode("ascii", "xmlcharrefreplace").decode("ascii"))
