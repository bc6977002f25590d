"""``trace --format html``: the page parsed by a strict tree builder (stdlib ``html.parser``).

Runs the real CLI over (copies of) the demo fleet: real Postfix logs, local transport. What the
page must show is taken from elsewhere: the hops and recipients from ``--format json`` of the
same trace, the evidence lines from the hosts' log files themselves.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from support import DEMO, DEMO_HOSTS, run

from collector.cli.app import ExitCode
from collector.models import (
    Coverage,
    Hole,
    HostError,
    SourceSpan,
    SourceState,
    Stage,
    Uncovered,
)
from collector.render.html import render_traces_html
from collector.render.rows import HostReport
from collector.render.safe import printable

MULTI = "<multi_split.20261129173200@lab.example.test>"
UNKNOWN = "<unknown_user.20261129173200@lab.example.test>"

# --------------------------------------------------------------------------- a strict tree

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
# what a browser would take as the end of an open <p> (so a page must never put it inside one)
BLOCK = {"address", "article", "aside", "details", "div", "dl", "fieldset", "footer", "form",
         "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p", "pre",
         "section", "table", "ul"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.walk()

    def find(self, tag: str, cls: str | None = None) -> list[Node]:
        return [n for n in self.walk() if n.tag == tag and (cls is None or cls in n.classes)]

    def by_id(self, ident: str) -> Node:
        (found,) = [n for n in self.walk() if n.attrs.get("id") == ident]
        return found

    def one(self, tag: str, cls: str | None = None) -> Node:
        (found,) = self.find(tag, cls)
        return found


class StrictTree(HTMLParser):
    """The element tree of a page; any end tag that does not close the innermost open element,
    an element left open, a block inside a <p> or a duplicate attribute is an error."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.doctype: str | None = None

    def handle_decl(self, decl: str) -> None:
        assert self.doctype is None and len(self.stack) == 1
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = [k for k, _ in attrs]
        assert len(names) == len(set(names)), f"duplicate attribute in <{tag}>"
        if tag in BLOCK:
            assert all(n.tag != "p" for n in self.stack), f"<{tag}> inside <p>"
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in VOID, f"<{tag}/> is not a void element"
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        assert tag not in VOID, f"</{tag}> of a void element"
        assert len(self.stack) > 1 and self.stack[-1].tag == tag, (
            f"</{tag}> closes <{self.stack[-1].tag}>")
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    tree = StrictTree()
    tree.feed(page)
    tree.close()
    assert len(tree.stack) == 1, f"left open: {[n.tag for n in tree.stack[1:]]}"
    assert tree.doctype is not None and tree.doctype.lower() == "doctype html"
    return tree.root


def check_document(page: str, query: str) -> Node:
    """One valid, self-contained HTML5 document; returns its tree."""
    assert page.isascii()  # anything else as a character reference: right in any encoding
    doc = parse(page)
    (html,) = doc.find("html")
    assert html.attrs["lang"] == "en"
    assert [c.tag for c in html.children if isinstance(c, Node)] == ["head", "body"]
    head = html.one("head")
    assert head.find("meta")[0].attrs == {"charset": "utf-8"}  # the first element of <head>
    assert head.one("title").text() == f"collector trace {printable(query)}"
    # nothing runs, nothing is fetched, nothing reacts
    assert not doc.find("script") and not doc.find("iframe") and not doc.find("object")
    for node in doc.walk():
        assert not [a for a in node.attrs if a.startswith("on")], node
        assert not {"src", "srcset", "action", "formaction", "style"} & set(node.attrs), node
        if "href" in node.attrs:
            assert re.fullmatch(r"#[a-z0-9-]+", node.attrs["href"]), node.attrs
    style = head.one("style").text()
    assert "url(" not in style and "@import" not in style and "//" not in style
    return doc


def html_of(query: str, *args: str | Path) -> tuple[Node, Any]:
    """The page and the JSON of the same trace (exit codes and stderr the same); ``query`` is
    what its title must name."""
    as_html = run("trace", *args, "-f", "html")
    as_json = run("trace", *args, "-f", "json")
    assert as_html.exit_code == as_json.exit_code, as_html.stderr
    assert as_html.stderr == as_json.stderr
    return check_document(as_html.stdout, query), json.loads(as_json.stdout)


def walk(traces: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for t in traces:
        yield t
        yield from walk(t["notifications"])


def hop_of(li: Node) -> tuple[str, str]:
    head = li.children[0]
    assert isinstance(head, Node) and "hop-head" in head.classes
    return head.one("span", "host").text(), head.one("span", "qid").text()


def own_lines(li: Node) -> list[str]:
    """The evidence lines of one hop (its own <pre>, not its children's)."""
    logs = [c for c in li.children if isinstance(c, Node) and c.tag == "details"]
    if not logs:
        return []
    (details,) = logs
    return details.one("pre").text().splitlines()


def logged(root: Path, host: str, needle: str) -> list[str]:
    """Every line of a host's log files that contains ``needle``, in order."""
    lines = []
    for path in sorted((root / "fleet" / host / "var" / "log").iterdir()):
        lines += [x for x in path.read_text("utf-8").splitlines() if needle in x]
    return lines


# --------------------------------------------------------------------------- the demo fleet


@pytest.mark.parametrize("message_id", [UNKNOWN, MULTI])
def test_a_trace_page_has_every_hop_recipient_and_log_line(message_id: str) -> None:
    doc, data = html_of(message_id, "-i", DEMO / "inventory.toml", message_id)
    assert doc.by_id("verdict").text() == data["verdict"] == "found"
    sections = doc.find("section", "trace")
    assert len(sections) == len(data["traces"]) == 1
    (section,), (trace,) = sections, data["traces"]
    assert section.one("h2").text() == f"message {message_id}"
    # each recipient's fate, in the table and at the hop that logged it
    rows = [[td.text() for td in tr.find("td")] for tr in section.find("tr", "recipient")]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (r["address"], r["status"], r["outcome"], r["dsn"] or "-") for r in trace["recipients"]
    ]
    everyone = [r for t in walk([trace]) for r in t["recipients"]]
    items = section.find("li", "rcpt")
    shown = [(i.one("span", "addr").text(), i.find("span", "badge")[0].text(), i.text())
             for i in items]
    assert sorted(x[:2] for x in shown) == sorted((r["address"], r["status"]) for r in everyone)
    for r in everyone:
        assert any(a == r["address"] and r["response"] in text for a, _, text in shown)
    for item in items:
        assert item.find("span", "badge")[0].classes & {"st-ok", "st-wait", "st-bad", "st-other"}
    # one element per hop, notifications' hops included, each with its own log lines
    hops = [hop_of(li) for li in section.find("li", "hop")]
    expected = [(h["host"], h["queue_id"]) for t in walk([trace]) for h in t["hops"]]
    assert sorted(hops) == sorted(expected) and len(hops) >= 4
    assert len(section.find("div", "notification")) == len(list(walk([trace]))) - 1
    for li in section.find("li", "hop"):
        host, qid = hop_of(li)
        lines = own_lines(li)
        if qid == "NOQUEUE":  # the refusal the next host logged
            (line,) = lines
            assert line in logged(DEMO, host, "NOQUEUE: reject:")
        else:
            assert lines == logged(DEMO, host, f" {qid}: "), (host, qid)
    # the coverage ledger: every host, each complete
    ledger = doc.one("section", "ledger")
    hosts = [(tr.find("td")[0].text(), tr.find("td")[1].text()) for tr in ledger.find("tr", "host")]
    assert hosts == [(h["name"], "complete") for h in data["hosts"]]
    sources = [(tr.find("td")[0].text(), tr.find("td")[1].text())
               for tr in ledger.find("tr", "source")]
    assert sources == [(h["name"], s["path"]) for h in data["hosts"]
                       for s in h["coverage"]["sources"]]
    firsts = [tr.find("time")[0].attrs["datetime"] for tr in ledger.find("tr", "source")]
    assert firsts == [s["first"] for h in data["hosts"] for s in h["coverage"]["sources"]]
    assert not ledger.find("tr", "hole")


def test_many_messages_are_one_section_each_with_an_index() -> None:
    doc, data = html_of("--from alice@example.test", "-i", DEMO / "inventory.toml", "--from",
                        "alice@example.test")
    sections = doc.find("section", "trace")
    assert len(sections) == len(data["traces"]) >= 2
    assert [s.one("h2").text() for s in sections] == [
        f"message {t['message_id']}" for t in data["traces"]]
    ids = {n.attrs["id"] for n in doc.walk() if "id" in n.attrs}
    links = doc.one("nav").find("a")
    assert len(links) == len(sections)
    assert all(a.attrs["href"][1:] in ids for a in links)
    assert doc.one("title").text() == "collector trace --from alice@example.test"


def test_nothing_found_with_a_hole_is_inconclusive_and_shows_the_range_not_seen() -> None:
    result = run("trace", "-i", DEMO / "inventory.toml", "<nosuch@example.test>",
                 "--since", "2026-11-29", "-f", "html")
    assert result.exit_code == ExitCode.PARTIAL
    doc = check_document(result.stdout, "<nosuch@example.test> --since 2026-11-29T00:00:00+00:00")
    data = json.loads(run("trace", "-i", DEMO / "inventory.toml", "<nosuch@example.test>",
                          "--since", "2026-11-29", "-f", "json").stdout)
    assert data["verdict"] == "inconclusive" == doc.by_id("verdict").text()
    assert not doc.find("section", "trace")
    assert "does not prove" in doc.one("section", "trace-none").text()
    holes = [
        (tr.find("td")[0].text(), tr.find("td")[1].text(),
         *(t.attrs["datetime"] for t in tr.find("time")))
        for tr in doc.one("section", "ledger").find("tr", "hole")
    ]
    assert holes == [(h["name"], u["why"], u["from"], u["to"]) for h in data["hosts"]
                     for u in h["coverage"]["uncovered"]]
    assert {h[0] for h in holes} == set(DEMO_HOSTS) and {h[1] for h in holes} == {"before-logs"}
    answers = [tr.find("td")[1].text() for tr in doc.find("tr", "host")]
    assert answers == ["incomplete"] * len(DEMO_HOSTS)


def test_an_unread_log_and_a_failed_host_are_in_the_ledger(demo_fleet: Path) -> None:
    log = demo_fleet.parent / "fleet" / "filter1" / "var" / "log"
    packed = gzip.compress((log / "maillog").read_bytes())
    (log / "maillog.1.gz").write_bytes(packed[: len(packed) // 2])
    with demo_fleet.open("a", encoding="utf-8") as f:  # nothing listens on port 1
        f.write('\n[[hosts]]\nname = "mx9"\ntransport = "ssh"\naddress = "127.0.0.1"\n'
                "port = 1\n")
    doc, data = html_of(UNKNOWN, "-i", demo_fleet, UNKNOWN)
    assert len(doc.find("section", "trace")) == 1  # the answer of the others stands
    ledger = doc.one("section", "ledger")
    answers = {tr.find("td")[0].text(): tr.find("td")[1].text() for tr in ledger.find("tr", "host")}
    assert answers == {"mx1": "complete", "filter1": "incomplete", "mbox1": "complete",
                       "out1": "complete", "mx9": "failed"}
    (error,) = ledger.find("tr", "host-error")
    (failed,) = [h for h in data["hosts"] if not h["ok"]]
    assert [td.text() for td in error.find("td")] == [
        "mx9", failed["error"]["stage"], failed["error"]["message"]]
    states = {tr.find("td")[1].text(): tr.find("td")[2].text() for tr in ledger.find("tr", "source")}
    assert states["/var/log/maillog.1.gz"] == "unread"
    holes = [[td.text() for td in tr.find("td")] for tr in ledger.find("tr", "hole")]
    assert [h[:2] for h in holes] == [["filter1", "unread"]]
    assert "/var/log/maillog.1.gz" in holes[0][4]


# --------------------------------------------------------------------------- hostile lines

SCRIPT = "</pre><script>alert(1)</script>"
RLO = "\u202e"
QID = "5A1B2168401"
MSGID = f"<{SCRIPT}@evil.example.org>"
SENDER = f"ceo{RLO}gro.live@evil.example.org"
RCPT = '"x\\"onmouseover=alert(1)"@example.test'
REPLY = f'host said: 550 5.1.1 \x1b[31m{SCRIPT} "onmouseover=alert(1) {RLO}unknown user'
# modelled on real smtpd/cleanup/qmgr/smtp lines of the lab (tests/test_hostile_terminal.py)
SESSION = [
    "Nov 29 17:40:01 mx1 postfix/smtpd[23778]: connect from evil.example.org[127.0.0.66]",
    f"Nov 29 17:40:01 mx1 postfix/smtpd[23778]: {QID}: client=evil.example.org[127.0.0.66]",
    f"Nov 29 17:40:01 mx1 postfix/cleanup[23782]: {QID}: message-id={MSGID}",
    f"Nov 29 17:40:01 mx1 postfix/qmgr[23688]: {QID}: from=<{SENDER}>, size=510, nrcpt=1"
    " (queue active)",
    f"Nov 29 17:40:01 mx1 postfix/smtp[23783]: {QID}: to=<{RCPT}>,"
    " relay=filter1.example.test[127.0.0.22]:2525, delay=0.14, delays=0.03/0.04/0.04/0.04,"
    f" dsn=5.1.1, status=bounced ({REPLY})",
    f"Nov 29 17:40:01 mx1 postfix/qmgr[23688]: {QID}: removed",
]


def test_hostile_log_text_is_shown_escaped_and_never_acts(demo_fleet: Path) -> None:
    log = demo_fleet.parent / "fleet" / "mx1" / "var" / "log" / "postfix-mx1.log"
    with log.open("a", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in SESSION)
    result = run("trace", "-i", demo_fleet, MSGID, "-f", "html")
    assert result.exit_code == ExitCode.FOUND, result.stderr
    assert "<script" not in result.stdout.lower()
    doc = check_document(result.stdout, MSGID)  # no <script>, no on* attribute
    shown = doc.text()
    assert not {"\x1b", RLO} & set(shown)  # control and bidi characters are shown escaped
    (section,) = doc.find("section", "trace")
    assert section.one("h2").text() == f"message {printable(MSGID)}"
    (li,) = section.find("li", "hop")
    assert own_lines(li) == [printable(line) for line in SESSION[1:]]
    (row,) = section.find("tr", "recipient")
    cells = [td.text() for td in row.find("td")]
    assert cells[0] == RCPT and cells[1] == "bounced" and cells[6] == printable(REPLY)
    assert "\\x1b[31m" in cells[6] and "\\u202e" in cells[6]
    facts = {dt.text(): dd.text() for dt, dd in zip(section.find("dt"), section.find("dd"),
                                                    strict=True)}
    assert facts["from"] == printable(SENDER)


def test_a_hostile_host_error_and_path_are_text() -> None:
    t0 = datetime(2026, 11, 29, 17, 0, tzinfo=UTC)
    evil = f'/var/log/{SCRIPT}"onmouseover=x{RLO}.log'
    cov = Coverage(None, None, t0, t0, (SourceSpan(evil, t0, t0, SourceState.UNREAD, SCRIPT),),
                   (Uncovered(t0, t0, Hole.UNREAD, evil),))
    hosts = [
        HostReport("mx1", coverage=cov),
        HostReport("mx2", error=HostError("mx2", Stage.CONNECT, f"banner {SCRIPT}\x1b[2J")),
    ]
    out = io.StringIO()
    render_traces_html([], hosts, out, query=SCRIPT, verdict="inconclusive", generated=t0,
                       version="0.1.0")
    doc = check_document(out.getvalue(), SCRIPT)
    assert doc.one("tr", "source").find("td")[1].text() == printable(evil)
    assert doc.one("tr", "host-error").find("td")[2].text() == printable(f"banner {SCRIPT}\x1b[2J")
    assert doc.find("time")[0].attrs["datetime"] == "2026-11-29T17:00:00+00:00"


def test_the_readme_excerpt_is_the_real_page() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    start = readme.index("**A page for a ticket.**")
    command = re.search(r"```sh\ncollector (trace .*?) --format html > case.html\n```",
                        readme[start:])
    block = re.search(r"```html\n(.*?)```", readme[start:], flags=re.S)
    assert command is not None and block is not None
    words = shlex.split(command.group(1))
    page = run(*words[:1], "-i", DEMO / "inventory.toml", *words[1:], "-f", "html").stdout
    real = page.splitlines()
    for line in block.group(1).splitlines():
        if line == "...":
            continue
        if line.endswith(" ..."):
            assert any(r.startswith(line[:-4]) for r in real), line
        else:
            assert line in real, line
