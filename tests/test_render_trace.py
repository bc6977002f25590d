"""Trace rendering of a hand-built trace: exact JSON/CSV, width and colour rules, graph syntax."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from collector.models import (
    Attempt,
    GroupRef,
    Hop,
    HopVia,
    HostError,
    Outcome,
    QueueGroup,
    Recipient,
    RecipientOutcome,
    Stage,
    Trace,
)
from collector.render.rows import HostReport
from collector.render.trace import (
    fmt_delays,
    fmt_duration,
    render_traces_csv,
    render_traces_dot,
    render_traces_json,
    render_traces_mermaid,
    render_traces_ndjson,
    render_traces_table,
    render_traces_text,
)

T0 = datetime(2026, 11, 29, 16, 43, 57, tzinfo=UTC)
MSGID = "<20261129164357.A1B2C3D4E5@mx1.example.test>"
DSN_MSGID = "<20261129164405.E5F6A7B8C9@mx2.example.test>"
SENDER = "alice@example.org"
# A quoted local part with an escaped quote: legal in SMTP and poison for naive quoting.
CAROL = '"carol\\"o"@example.net'
GOOGLE_REPLY = (
    "250 2.0.0 OK  1764434638 a640c23a62f3a-b7a1234567si1234567ab.123 - gsmtp "
    "(this reply is long enough to be clipped in a hundred columns)"
)
ESC = re.compile(r"\x1b\[")


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ref(host: str, qid: str) -> GroupRef:
    return GroupRef(host, qid)


# --------------------------------------------------------------------------- builders


def attempt(
    at: float,
    *,
    relay: str,
    delays: str,
    reply: str,
    status: str = "sent",
    dsn: str = "2.0.0",
    program: str = "smtp",
    next_queue_id: str | None = None,
) -> Attempt:
    return Attempt(
        time=t(at),
        program=program,
        status=status,
        relay=relay,
        delay=0.2,
        delays=delays,
        dsn=dsn,
        response=reply,
        next_queue_id=next_queue_id,
    )


def to_host(at: float, host: str, addr: str, nxt: str) -> Attempt:
    return attempt(
        at,
        relay=f"{host}.example.test[{addr}]:25",
        delays="0.02/0.01/0.06/0.08",
        reply=f"250 2.0.0 Ok: queued as {nxt}",
        next_queue_id=nxt,
    )


def mailbox(at: float) -> Attempt:
    return attempt(
        at, relay="local", delays="0.01/0.04/0/0.01", reply="delivered to mailbox", program="local"
    )


def group(host: str, qid: str, first: float, *rcpts: Recipient, **kw: object) -> QueueGroup:
    values: dict[str, object] = {
        "host": host,
        "instance": "postfix",
        "queue_id": qid,
        "first_time": t(first),
        "last_time": t(first + 1),
        "origin": "smtp",
        "sender": SENDER,
        "size": 1834,
        "message_id": MSGID,
        "recipients": rcpts,
        "removed": True,
    }
    values.update(kw)
    return QueueGroup(**values)  # type: ignore[arg-type]


def hop(
    g: QueueGroup,
    via: str,
    *evidence: str,
    parent: GroupRef | None = None,
    parent_index: int | None = None,
    handoff: Attempt | None = None,
) -> Hop:
    """A hop as correlate makes it: ``parent_index`` is the parent's place in the same trace,
    ``handoff`` the parent's delivery that names this hop's queue ID."""
    return Hop(
        host=g.host,
        queue_id=g.queue_id,
        time=g.first_time,
        client=g.client,
        parent=parent,
        via=HopVia(via),
        evidence=evidence,
        group=g,
        parent_index=parent_index,
        handoff=handoff,
    )


def outcome(
    g: QueueGroup,
    address: str,
    outcome: str,
    *path: GroupRef,
    hop_index: int | None = None,
    orig: str | None = None,
) -> RecipientOutcome:
    """A recipient's last attempt in ``g``, logged by hop ``hop_index`` (no hop: no attempt)."""
    a = next(r for r in g.recipients if r.address == address).last
    return RecipientOutcome(
        address=address,
        orig_address=orig,
        status=a.status,
        outcome=Outcome(outcome),
        host=g.host,
        queue_id=g.queue_id,
        dsn=a.dsn,
        response=a.response,
        time=a.time,
        path=path,
        hop_index=hop_index,
        attempt=a if hop_index is not None else None,
    )


def trace(
    *hops: Hop,
    recipients: tuple[RecipientOutcome, ...] = (),
    notifications: tuple[Trace, ...] = (),
    notes: tuple[str, ...] = (),
    message_id: str | None = MSGID,
    sender: str | None = SENDER,
    first_seen: datetime = T0,
    last_seen: datetime | None = None,
    size: int | None = None,
    anchor: int | None = None,
) -> Trace:
    return Trace(
        message_id=message_id,
        sender=sender,
        first_seen=first_seen,
        last_seen=last_seen or first_seen,
        size=size,
        hops=hops,
        recipients=recipients,
        notifications=notifications,
        notes=notes,
        anchor=anchor,
    )


# --------------------------------------------------------------------------- the trace

# mx1 A1 -> (content filter) mx1 B2 -> mx2 C3 -> mx3 D4; B2 also relays dave out and defers
# erin; C3 bounces carol, and mx2's notification E5 reaches the sender on mx1 (F6).
TO_FILTER = attempt(
    0.4,
    relay="127.0.0.1[127.0.0.1]:10024",
    delays="0.11/0/0.02/0.05",
    reply="250 2.0.0 Ok: queued as B2C3D4E5F6",
    next_queue_id="B2C3D4E5F6",
)
TO_MX2 = to_host(0.6, "mx2", "127.0.0.22", "C3D4E5F6A7")
TO_MX3 = to_host(1.0, "mx3", "127.0.0.23", "D4E5F6A7B8")
TO_MX1 = to_host(8.2, "mx1", "127.0.0.21", "F6A7B8C9D0")

A1 = group(
    "mx1",
    "A1B2C3D4E5",
    0,
    *(
        Recipient(a, None, (TO_FILTER,))
        for a in ("bob@example.org", CAROL, "dave@gmail.example", "erin@example.net")
    ),
    client="client.example.com[192.0.2.10]",
)
GMAIL = attempt(
    1.2,
    relay="gmail-smtp-in.l.google.com[142.250.102.26]:25",
    delays="0.01/0/0.35/0.4",
    reply=GOOGLE_REPLY,
)
TIMED_OUT = attempt(
    30.5,
    status="deferred",
    relay="none",
    delays="0.01/0/30/0",
    dsn="4.4.1",
    reply="connect to mx.example.net[203.0.113.5]:25: Connection timed out",
)
B2 = group(
    "mx1",
    "B2C3D4E5F6",
    0.4,
    Recipient("bob@example.org", None, (TO_MX2,)),
    Recipient(CAROL, None, (TO_MX2,)),
    Recipient("dave@gmail.example", "dave@example.org", (GMAIL,)),
    Recipient("erin@example.net", None, (TIMED_OUT,)),
    client="localhost[127.0.0.1]",
    orig_queue_id="A1B2C3D4E5",
    removed=False,
)
NO_CAROL = attempt(
    0.9,
    status="bounced",
    relay="local",
    delays="0.01/0/0/0",
    dsn="5.1.1",
    reply='unknown user: "carol\\"o"',
    program="local",
)
C3 = group(
    "mx2",
    "C3D4E5F6A7",
    0.7,
    Recipient("bob@example.org", None, (TO_MX3,)),
    Recipient(CAROL, None, (NO_CAROL,)),
    client="mx1.example.test[127.0.0.21]",
)
D4 = group(
    "mx3",
    "D4E5F6A7B8",
    1.1,
    Recipient("bob@example.org", None, (mailbox(1.3),)),
    client="mx2.example.test[127.0.0.22]",
    last_time=t(250),
)
E5 = group(
    "mx2",
    "E5F6A7B8C9",
    8,
    Recipient("alice@example.org", None, (TO_MX1,)),
    origin="local",
    sender="",
    size=3911,
    message_id=DSN_MSGID,
)
F6 = group(
    "mx1",
    "F6A7B8C9D0",
    8.3,
    Recipient("alice@example.org", None, (mailbox(8.4),)),
    client="mx2.example.test[127.0.0.22]",
    sender="",
    size=4102,
    message_id=DSN_MSGID,
)

P1, P2, P3, P4 = (ref("mx1", A1.queue_id), ref("mx1", B2.queue_id), ref("mx2", C3.queue_id),
                  ref("mx3", D4.queue_id))  # fmt: skip
P5, P6 = ref("mx2", E5.queue_id), ref("mx1", F6.queue_id)

NOTIFICATION = trace(
    hop(E5, "notification", "sender non-delivery notification", parent=P3),
    hop(
        F6,
        "smtp",
        "queued-as",
        "client=mx2.example.test",
        parent=P5,
        parent_index=0,
        handoff=TO_MX1,
    ),
    recipients=(outcome(F6, "alice@example.org", "delivered", P5, P6, hop_index=1),),
    message_id=DSN_MSGID,
    sender="",
    first_seen=t(8),
    last_seen=t(9.3),
    size=3911,
    anchor=2,  # sent by C3, the third hop of TRACE
)
LOST_NOTE = "lost at mx4: no logs from this host (queue ID 9Z8Y7X6W5V)"
TRACE = trace(
    hop(A1, "entry"),
    hop(
        B2,
        "reinjection",
        "queued-as",
        "orig_queue_id",
        parent=P1,
        parent_index=0,
        handoff=TO_FILTER,
    ),
    hop(
        C3,
        "smtp",
        "queued-as",
        "client=mx1.example.test[127.0.0.21]",
        "+0.1s",
        parent=P2,
        parent_index=1,
        handoff=TO_MX2,
    ),
    hop(
        D4,
        "smtp",
        "queued-as",
        "client=mx2.example.test[127.0.0.22]",
        "+0.1s",
        parent=P3,
        parent_index=2,
        handoff=TO_MX3,
    ),
    recipients=(
        outcome(
            B2, "dave@gmail.example", "relayed-out", P1, P2, hop_index=1, orig="dave@example.org"
        ),
        outcome(B2, "erin@example.net", "queued", P1, P2, hop_index=1),
        outcome(C3, CAROL, "bounced", P1, P2, P3, hop_index=2),
        outcome(D4, "bob@example.org", "delivered", P1, P2, P3, P4, hop_index=3),
    ),
    notifications=(NOTIFICATION,),
    notes=(LOST_NOTE,),
    last_seen=t(250),
    size=1834,
)

REPORTS = (
    HostReport("mx1"),
    HostReport("mx4", error=HostError("mx4", Stage.CONNECT, "connection refused")),
)


def render(fn: Callable[..., None], *args: object, **kw: object) -> str:
    out = io.StringIO()
    fn(*args, out, **kw)
    return out.getvalue()


# --------------------------------------------------------------------------- JSON


def test_json_is_one_object_with_traces_and_hosts() -> None:
    doc = json.loads(render(render_traces_json, [TRACE], REPORTS))
    assert list(doc) == ["traces", "hosts", "clock_skew"]
    assert [h["name"] for h in doc["hosts"]] == ["mx1", "mx4"]
    assert doc["hosts"][1]["error"] == {"stage": "connect", "message": "connection refused"}
    (tr,) = doc["traces"]
    assert list(tr) == [
        "message_id",
        "sender",
        "first_seen",
        "last_seen",
        "size",
        "hops",
        "recipients",
        "notifications",
        "notes",
        "subject",
    ]
    assert tr["subject"] is None
    assert tr["message_id"] == MSGID
    assert tr["sender"] == SENDER
    assert tr["first_seen"] == "2026-11-29T16:43:57+00:00"
    assert tr["last_seen"] == "2026-11-29T16:48:07+00:00"
    assert tr["size"] == 1834
    assert tr["notes"] == [LOST_NOTE]


def test_json_hops() -> None:
    (tr,) = json.loads(render(render_traces_json, [TRACE], ()))["traces"]
    assert tr["hops"][0] == {
        "host": "mx1",
        "queue_id": "A1B2C3D4E5",
        "time": "2026-11-29T16:43:57+00:00",
        "client": "client.example.com[192.0.2.10]",
        "parent": None,
        "via": "entry",
        "evidence": [],
        "delays": None,
        "sender": SENDER,
        "message_id": MSGID,
        "strength": None,
        "verdict": None,
    }
    assert tr["hops"][1]["parent"] == {"host": "mx1", "queue_id": "A1B2C3D4E5"}
    assert tr["hops"][1]["via"] == "reinjection"
    assert tr["hops"][1]["time"] == "2026-11-29T16:43:57.400000+00:00"
    # The delays of the delivery that handed the message to the hop.
    assert [h["delays"] for h in tr["hops"]] == [
        None,
        "0.11/0/0.02/0.05",
        "0.02/0.01/0.06/0.08",
        "0.02/0.01/0.06/0.08",
    ]
    assert tr["hops"][2]["evidence"] == [
        "queued-as",
        "client=mx1.example.test[127.0.0.21]",
        "+0.1s",
    ]


def test_json_recipients_and_nested_notification() -> None:
    (tr,) = json.loads(render(render_traces_json, [TRACE], ()))["traces"]
    assert [r["address"] for r in tr["recipients"]] == [
        "dave@gmail.example",
        "erin@example.net",
        CAROL,
        "bob@example.org",
    ]
    assert tr["recipients"][2] == {
        "address": CAROL,
        "orig_address": None,
        "status": "bounced",
        "outcome": "bounced",
        "host": "mx2",
        "queue_id": "C3D4E5F6A7",
        "dsn": "5.1.1",
        "response": 'unknown user: "carol\\"o"',
        "time": "2026-11-29T16:43:57.900000+00:00",
        "path": [
            {"host": "mx1", "queue_id": "A1B2C3D4E5"},
            {"host": "mx1", "queue_id": "B2C3D4E5F6"},
            {"host": "mx2", "queue_id": "C3D4E5F6A7"},
        ],
    }
    assert tr["recipients"][0]["orig_address"] == "dave@example.org"
    assert tr["recipients"][0]["outcome"] == "relayed-out"
    (dsn,) = tr["notifications"]
    assert dsn["sender"] == ""
    assert dsn["message_id"] == DSN_MSGID
    assert dsn["hops"][0]["parent"] == {"host": "mx2", "queue_id": "C3D4E5F6A7"}
    assert dsn["hops"][0]["via"] == "notification"
    assert dsn["hops"][1]["delays"] == "0.02/0.01/0.06/0.08"
    assert dsn["recipients"][0]["outcome"] == "delivered"
    assert dsn["notifications"] == []


def test_ndjson_one_trace_per_line() -> None:
    other = trace(hop(A1, "entry"), sender=None, first_seen=t(1))
    lines = render(render_traces_ndjson, [TRACE, other]).splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["notifications"][0]["message_id"] == DSN_MSGID
    assert second["sender"] is None and second["recipients"] == []
    assert "hosts" not in first


def test_json_times_keep_the_offset() -> None:
    cet = timezone(timedelta(hours=1))
    local = trace(message_id=None, first_seen=T0.astimezone(cet))
    (tr,) = json.loads(render(render_traces_json, [local], ()))["traces"]
    assert tr["first_seen"] == "2026-11-29T17:43:57+01:00"


# --------------------------------------------------------------------------- CSV and table


def test_csv_exact() -> None:
    assert render(render_traces_csv, [TRACE]) == (
        "message_id,sender,recipient,status,outcome,hops,first_host,last_host,total_delay\n"
        f"{MSGID},{SENDER},dave@gmail.example,sent,relayed-out,2,mx1,mx1,1.2\n"
        f"{MSGID},{SENDER},erin@example.net,deferred,queued,2,mx1,mx1,30.5\n"
        f'{MSGID},{SENDER},"""carol\\""o""@example.net",bounced,bounced,3,mx1,mx2,0.9\n'
        f"{MSGID},{SENDER},bob@example.org,sent,delivered,4,mx1,mx3,1.3\n"
        f"{DSN_MSGID},,alice@example.org,sent,delivered,2,mx2,mx1,0.4\n"
    )


def test_csv_without_traces_is_the_header() -> None:
    assert render(render_traces_csv, []) == (
        "message_id,sender,recipient,status,outcome,hops,first_host,last_host,total_delay\n"
    )


def test_table_rows_fit_and_mark_notifications() -> None:
    text = render(render_traces_table, [TRACE], width=100)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].split() == [
        "message_id",
        "sender",
        "recipient",
        "status",
        "outcome",
        "hops",
        "first",
        "last",
        "delay",
    ]
    assert len(lines) == 2 + 5
    dsn_row = lines[-1]
    assert dsn_row.startswith("↳ ")
    assert " <> " in dsn_row and "alice@example.org" in dsn_row
    assert "30.5 s" in lines[3]


def test_table_clips_in_narrow_terminals() -> None:
    lines = render(render_traces_table, [TRACE], width=80).splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any("…" in line for line in lines)


# --------------------------------------------------------------------------- text


def text_of(**kw: object) -> str:
    return render(render_traces_text, [TRACE], **kw)


def test_text_header() -> None:
    lines = text_of().splitlines()
    assert lines[0] == f"message {MSGID}  from {SENDER}  size 1834"
    assert lines[1] == "first seen 2026-11-29 16:43:57 +0000  end-to-end 4 min 10 s"


def test_text_tree() -> None:
    lines = text_of().splitlines()
    assert lines[2] == "mx1 A1B2C3D4E5  16:43:57  via entry  from client.example.com[192.0.2.10]"
    assert lines[3] == ("└─ mx1 B2C3D4E5F6  16:43:57  via reinjection  from localhost[127.0.0.1]")
    assert lines[4] == "   │  queue 0.11 s · qmgr 0 s · conn 0.02 s · xmit 0.05 s"
    # The reinjected copy splits: two recipients end here, the rest goes on to mx2.
    assert lines[5].startswith(
        "   ├─ → dave@gmail.example (orig dave@example.org)  sent → relayed-out"
    )
    assert lines[7].startswith(
        "   ├─ → erin@example.net  deferred → queued  4.4.1  16:44:27  connect"
    )
    assert lines[9] == (
        "   └─ mx2 C3D4E5F6A7  16:43:57  via smtp  from mx1.example.test[127.0.0.21]"
    )
    text = "\n".join(lines)
    assert "      ├─ mx3 D4E5F6A7B8  16:43:58  via smtp" in text
    assert "→ bob@example.org  sent → delivered  2.0.0  16:43:58  delivered to mailbox" in text
    assert "queue 0.01 s · qmgr 0.04 s · conn 0 s · xmit 0.01 s" in text


def test_text_notification_is_nested_under_the_bouncing_hop() -> None:
    lines = text_of().splitlines()
    bounce = next(i for i, line in enumerate(lines) if "bounced" in line)
    dsn = next(i for i, line in enumerate(lines) if "notification " + DSN_MSGID in line)
    assert bounce < dsn
    assert lines[dsn] == f"      └─ notification {DSN_MSGID}  from <>  size 3911"
    assert lines[dsn + 1] == "         │  first seen 2026-11-29 16:44:05 +0000  end-to-end 1.3 s"
    assert lines[dsn + 2] == "         └─ mx2 E5F6A7B8C9  16:44:05  via notification"
    assert lines[dsn + 3] == (
        "            └─ mx1 F6A7B8C9D0  16:44:05  via smtp  from mx2.example.test[127.0.0.22]"
    )
    assert "→ alice@example.org  sent → delivered" in lines[dsn + 5]
    assert lines[dsn + 5].startswith("               └─ ")


def test_text_notes_close_the_block() -> None:
    assert text_of().splitlines()[-1] == f"note: {LOST_NOTE}"


@pytest.mark.parametrize("width", [100, 72, 40])
def test_text_never_exceeds_width(width: int) -> None:
    lines = text_of(width=width).splitlines()
    assert max(len(line) for line in lines) <= width
    assert any(line.endswith("…") for line in lines)


def test_text_colour_only_when_asked() -> None:
    plain = text_of()
    assert not ESC.search(plain) and "\x1b" not in plain
    coloured = text_of(color=True)
    assert "\x1b[32msent\x1b[0m" in coloured
    assert "\x1b[31mbounced\x1b[0m" in coloured
    assert "\x1b[33mdeferred\x1b[0m" in coloured
    # Colour codes do not count towards the width.
    visible = [ESC.sub("", re.sub(r"\x1b\[\d+m", "", line)) for line in coloured.splitlines()]
    assert visible == plain.splitlines()


def test_text_ascii_tree() -> None:
    text = text_of(ascii=True)
    assert "`- mx1 B2C3D4E5F6" in text
    assert "   |- -> dave@gmail.example" in text
    assert "queue 0.11 s, qmgr 0 s" in text
    assert not {"├", "└", "│", "…", "·"} & set(text)


def test_text_escape_sequences_in_logged_values_are_neutralised() -> None:
    evil = trace(message_id="<x\x1b[2J@y>", notes=("lost\x1b]0;owned\x07",))
    text = render(render_traces_text, [evil])
    assert "\x1b" not in text and "\x07" not in text
    assert "message <x\\x1b[2J@y>" in text  # shown escaped (render.safe.printable)
    assert "note: lost\\x1b]0;owned\\x07" in text


def test_text_blocks_are_separated_by_a_blank_line() -> None:
    text = render(render_traces_text, [NOTIFICATION, NOTIFICATION])
    assert "\n\nmessage " + DSN_MSGID in text
    assert text.count("from <>") == 2


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (2.3, "2.3 s"),
        (59.94, "59.9 s"),
        (250, "4 min 10 s"),
        (3720, "1 h 02 min"),
        (90000, "1 d 01 h"),
        (-1.5, "-1.5 s"),
    ],
)
def test_fmt_duration(seconds: float, text: str) -> None:
    assert fmt_duration(seconds) == text


def test_fmt_delays() -> None:
    assert fmt_delays("0.2/0/0.01/1.5") == "queue 0.2 s · qmgr 0 s · conn 0.01 s · xmit 1.5 s"
    assert fmt_delays("junk") == "delays=junk"


# --------------------------------------------------------------------------- graphs


def dot_tokens(text: str) -> tuple[list[str], list[str]]:
    """Braces outside strings, and every string literal unescaped as Graphviz reads it."""
    braces: list[str] = []
    strings: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            buf = []
            while text[j] != '"':
                if text[j] == "\\" and text[j + 1] in '"\\':
                    buf.append(text[j + 1])
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            strings.append("".join(buf))
            i = j + 1
            continue
        if c in "{}":
            braces.append(c)
        i += 1
    return braces, strings


def test_dot_is_balanced_and_escapes_labels() -> None:
    text = render(render_traces_dot, [TRACE])
    assert text.startswith("digraph traces {\n")
    assert text.endswith("}\n")
    braces, strings = dot_tokens(text)
    depth = 0
    for b in braces:
        depth += 1 if b == "{" else -1
        assert depth >= 0
    assert depth == 0
    assert f"{CAROL}\\nbounced" in strings  # \n is Graphviz's line break, kept as written
    assert "mx1\\nA1B2C3D4E5" in strings


def test_dot_nodes_edges_and_clusters() -> None:
    text = render(render_traces_dot, [TRACE])
    assert text.count("subgraph cluster_") == 3  # mx1, mx2, mx3
    assert 'n1 -> n2 [label="reinjection"];' in text
    node_ids = re.findall(r"^\s+(n\d+) \[label=", text, re.MULTILINE)
    assert len(node_ids) == len(set(node_ids)) == 6 + 5  # hops + recipient leaves
    dashed = [line for line in text.splitlines() if "style=dashed" in line]
    assert len(dashed) == 1 and 'label="notification"' in dashed[0]


def test_dot_backslash_is_doubled() -> None:
    text = render(render_traces_dot, [TRACE])
    assert '\\"carol\\\\\\"o\\"@example.net\\nbounced' in text


def test_mermaid() -> None:
    text = render(render_traces_mermaid, [TRACE])
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert not text.startswith("```")
    ids = re.findall(r"^\s+(n\d+)[\[(]", text, re.MULTILINE)
    assert len(ids) == len(set(ids)) == 11
    assert text.count("subgraph ") == text.count("\n  end\n") == 3
    # No raw quote inside a label: every label is "..." with #quot; for quotes.
    for label in re.findall(r'\["(.*?)"\]', text):
        assert '"' not in label
    assert "#quot;carol\\#quot;o#quot;@example.net<br/>bounced" in text
    assert 'n1 -->|"reinjection"| n2' in text
    assert sum("-.->" in line for line in lines) == 1


def test_text_orphans_stay_visible() -> None:
    """A notification whose parent hop is not in the trace, and an outcome with no hop."""
    orphan = trace(
        hop(E5, "notification", parent=ref("mx9", "0123456789")),
        notes=("lost at mx9: host failed: connect: timed out (queue ID 0123456789)",),
        message_id=DSN_MSGID,
        sender="",
        first_seen=t(8),
    )
    stray = outcome(D4, "bob@example.org", "delivered")
    parent = trace(recipients=(stray,), notifications=(orphan,), last_seen=t(1))
    lines = render(render_traces_text, [parent]).splitlines()
    assert lines[2].startswith("→ bob@example.org  sent → delivered")
    assert lines[3] == f"notification {DSN_MSGID}  from <>"
    assert lines[5] == "├─ mx2 E5F6A7B8C9  16:44:05  via notification"
    assert lines[6] == "└─ note: lost at mx9: host failed: connect: timed out (queue ID 0123456789)"
    graph = render(render_traces_dot, [parent])
    assert "notification" not in graph  # no edge to a hop that is not there
