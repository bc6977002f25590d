"""render: exact JSON, NDJSON and CSV output of search rows; tables that fit their width."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from collector.models import Compression, HostError, LogSource, ParseStats, Row, Stage, Status
from collector.render.rows import (
    ROW_FIELDS,
    HostReport,
    host_dict,
    iso,
    render_hosts_table,
    render_rows_csv,
    render_rows_json,
    render_rows_ndjson,
    render_rows_table,
    render_summary_table,
    row_dict,
)

T = datetime(2026, 11, 29, 17, 24, 6, tzinfo=UTC)

# Rows as the lab's logs give them (values from real lines of the four hosts).
SENT = Row(
    time=T,
    host="mx1",
    queue_id="1462A168101",
    sender="alice@example.test",
    recipient="bob@example.test",
    orig_recipient=None,
    status="sent",
    dsn="2.0.0",
    relay="filter1.example.test[127.0.0.22]:2525",
    delay=0.01,
    message_id="<multi_split.20261129172326@lab.example.test>",
    response="250 2.0.0 Ok: queued as 1556E168106",
    client="ws1.example.test[127.0.0.30]",
)
MAILBOX = Row(
    time=T.replace(microsecond=262931),
    host="mbox1",
    queue_id="4jcvCB6wXpzC61K",
    sender="",
    recipient="bob@example.test",
    orig_recipient="fwd@mbox1.example.test",
    status="sent",
    dsn="2.0.0",
    relay="virtual",
    delay=0.0,
    message_id="<alias_forward.20261129172326@lab.example.test>",
    response="delivered to maildir",
    client=None,
)
NOQUEUE = Row(
    time=T,
    host="mx1",
    queue_id=None,
    sender="sender@example.org",
    recipient="victim@example.net",
    orig_recipient=None,
    status="rejected",
    dsn="4.7.1",
    relay=None,
    delay=None,
    message_id=None,
    response='454 4.7.1 <victim@example.net>: Relay access denied, "quoted"',
    client="ext-client.example.org[127.0.0.50]",
)


def test_row_fields() -> None:
    assert ROW_FIELDS == (
        "time", "host", "queue_id", "from", "to", "orig_to", "status", "dsn", "relay", "delay",
        "message_id", "response", "client",
    )


def test_row_dict() -> None:
    assert row_dict(SENT) == {
        "time": "2026-11-29T17:24:06+00:00",
        "host": "mx1",
        "queue_id": "1462A168101",
        "from": "alice@example.test",
        "to": "bob@example.test",
        "orig_to": None,
        "status": "sent",
        "dsn": "2.0.0",
        "relay": "filter1.example.test[127.0.0.22]:2525",
        "delay": 0.01,
        "message_id": "<multi_split.20261129172326@lab.example.test>",
        "response": "250 2.0.0 Ok: queued as 1556E168106",
        "client": "ws1.example.test[127.0.0.30]",
    }
    assert list(row_dict(SENT)) == list(ROW_FIELDS)
    assert row_dict(MAILBOX)["time"] == "2026-11-29T17:24:06.262931+00:00"
    assert row_dict(MAILBOX)["from"] == ""  # the null sender stays distinguishable from None


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (None, None),
        (T, "2026-11-29T17:24:06+00:00"),
        (T.replace(microsecond=5), "2026-11-29T17:24:06.000005+00:00"),
        (
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
            "2026-01-02T03:04:05-05:00",
        ),
    ],
)
def test_iso(when: datetime | None, text: str | None) -> None:
    assert iso(when) == text


def test_json_document() -> None:
    ok = HostReport(
        "mx1",
        sources=(LogSource("/var/log/postfix-mx1.log", origin="maillog_file", size=15812),),
        notes=("postfix: maillog_file /var/log/postfix-mx1.log",),
        stats=ParseStats(lines=128, parsed=127, unknown=1, unknown_samples=("junk",)),
    )
    dead = HostReport("ghost", error=HostError("ghost", Stage.CONNECT, "no such directory: x"))
    out = io.StringIO()
    render_rows_json([SENT, NOQUEUE], [ok, dead], out)
    text = out.getvalue()
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert list(doc) == ["results", "hosts"]
    assert doc["results"] == [row_dict(SENT), row_dict(NOQUEUE)]
    assert doc["hosts"] == [
        {
            "name": "mx1",
            "ok": True,
            "error": None,
            "sources": [
                {
                    "path": "/var/log/postfix-mx1.log",
                    "kind": "file",
                    "origin": "maillog_file",
                    "compression": None,
                    "size": 15812,
                    "mtime": None,
                    "instance": None,
                    "readable": True,
                }
            ],
            "notes": ["postfix: maillog_file /var/log/postfix-mx1.log"],
            "stats": {
                "lines": 128,
                "parsed": 127,
                "unknown": 1,
                "bad": 0,
                "blank": 0,
                "unknown_samples": ["junk"],
            },
            "coverage": None,
        },
        {
            "name": "ghost",
            "ok": False,
            "error": {"stage": "connect", "message": "no such directory: x"},
            "sources": [],
            "notes": [],
            "stats": None,
            "coverage": None,
        },
    ]


def test_json_with_no_rows_still_names_the_hosts() -> None:
    out = io.StringIO()
    render_rows_json([], [HostReport("mx1")], out)
    assert json.loads(out.getvalue())["results"] == []
    assert [h["name"] for h in json.loads(out.getvalue())["hosts"]] == ["mx1"]


def test_host_dict_source_fields() -> None:
    src = LogSource(
        "/var/log/mail.log.2.gz", compression=Compression.GZIP, mtime=T.timestamp(), size=10
    )
    (d,) = host_dict(HostReport("mbox1", sources=(src,)))["sources"]
    assert d["compression"] == "gz"
    assert datetime.fromisoformat(d["mtime"]) == T


def test_ndjson_one_object_per_line() -> None:
    out = io.StringIO()
    render_rows_ndjson([SENT, MAILBOX, NOQUEUE], out)
    lines = out.getvalue().split("\n")
    assert lines[-1] == ""
    assert [json.loads(x) for x in lines[:-1]] == [row_dict(r) for r in (SENT, MAILBOX, NOQUEUE)]


def test_csv_exact() -> None:
    out = io.StringIO()
    render_rows_csv([SENT, MAILBOX, NOQUEUE], out)
    assert out.getvalue() == (
        "time,host,queue_id,from,to,orig_to,status,dsn,relay,delay,message_id,response,client\n"
        "2026-11-29T17:24:06+00:00,mx1,1462A168101,alice@example.test,bob@example.test,,sent,"
        "2.0.0,filter1.example.test[127.0.0.22]:2525,0.01,"
        "<multi_split.20261129172326@lab.example.test>,250 2.0.0 Ok: queued as 1556E168106,"
        "ws1.example.test[127.0.0.30]\n"
        "2026-11-29T17:24:06.262931+00:00,mbox1,4jcvCB6wXpzC61K,,bob@example.test,"
        "fwd@mbox1.example.test,sent,2.0.0,virtual,0.0,"
        "<alias_forward.20261129172326@lab.example.test>,delivered to maildir,\n"
        "2026-11-29T17:24:06+00:00,mx1,,sender@example.org,victim@example.net,,rejected,4.7.1,,,,"
        '"454 4.7.1 <victim@example.net>: Relay access denied, ""quoted""",'
        "ext-client.example.org[127.0.0.50]\n"
    )


def test_csv_header_only_when_no_rows() -> None:
    out = io.StringIO()
    render_rows_csv([], out)
    assert out.getvalue() == ",".join(ROW_FIELDS) + "\n"


def _table(rows: list[Row], width: int) -> list[str]:
    out = io.StringIO()
    render_rows_table(rows, out, width=width)
    return out.getvalue().splitlines()


def test_table_same_day_and_clipping() -> None:
    lines = _table([SENT, MAILBOX, NOQUEUE], 120)
    assert lines[0].split() == ["time", "host", "queue_id", "from", "to", "status", "relay",
                                "response"]
    assert lines[2].startswith("17:24:06  mx1 ")
    assert "<>" in lines[3]  # the null sender
    assert "virtual" in lines[3]
    assert "filter1.exam" in lines[2] and "[127.0.0.22]" not in lines[2]  # the name only


def test_table_two_days_shows_the_date() -> None:
    lines = _table([SENT, replace(NOQUEUE, time=T + timedelta(days=1))], 120)
    assert lines[2].startswith("11-29 17:24:06")
    assert lines[3].startswith("11-30 17:24:06")


def test_table_empty_writes_nothing() -> None:
    assert _table([], 100) == []


LONG = Row(
    time=T,
    host="filter1",
    queue_id="4jcvCB6wXpzC61K",
    sender="a-very-long-sender-address@subdomain.example.org",
    recipient="a-very-long-recipient-address@example.net",
    orig_recipient=None,
    status="deferred",
    dsn="4.4.1",
    relay="none",
    delay=79.0,
    message_id=None,
    response="connect to 127.0.0.9[127.0.0.9]:2599: Connection refused",
    client=None,
)


def test_table_wide_enough_clips_nothing() -> None:
    lines = _table([SENT, MAILBOX, NOQUEUE, LONG], 400)
    assert "…" not in "\n".join(lines)
    assert LONG.response in lines[-1]


@pytest.mark.parametrize("width", [100, 120, 160])
def test_table_fits_its_width(width: int) -> None:
    for rows in ([SENT], [SENT, MAILBOX, NOQUEUE], [SENT, MAILBOX, NOQUEUE, LONG]):
        lines = _table(rows, width)
        assert max(len(x) for x in lines) <= width, (width, len(rows))


def test_summary_table() -> None:
    ok = HostReport(
        "mx1",
        sources=(LogSource("/var/log/postfix-mx1.log"),),
        stats=ParseStats(lines=128, parsed=128),
        summary={"messages": 17, "sent": 19, "bounced": 1, "rejected": 4},
    )
    dead = HostReport("ghost", error=HostError("ghost", Stage.CONNECT, "no such directory: x"))
    out = io.StringIO()
    render_summary_table([ok, dead], out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [
        "host", "lines", "msgs", "sent", "defer", "bounce", "expire", "discard", "reject",
        "unparsed",
    ]
    assert lines[2].split() == ["mx1", "128", "17", "19", "0", "1", "0", "0", "4", "0"]
    assert max(len(line) for line in lines[:3]) <= 100
    assert lines[3].split()[:2] == ["ghost", "error:"]
    assert "connect: no such directory: x" in lines[3]


def test_hosts_table_keeps_text() -> None:
    out = io.StringIO()
    render_hosts_table([["mx1", "local", "0010"]], ["name", "transport", "root"], out)
    assert out.getvalue().splitlines()[2].split() == ["mx1", "local", "0010"]


# Values whose text looks like the JSON around them (braces, separators, quotes, newlines),
# and the characters write_json escapes on top of json's own.
_TRICKY = ["", "a}b", '{"x": 1}', "},\n    {", '},\n      {"', "line\nbreak", "tab\t", "é",
           "\u2028", "\x85", 'q"uote', "\\", "}", '{"', None, 0, -3, 1.5, 1e300,
           float("inf"), True, False, Status.SENT]


@pytest.mark.parametrize("seed", range(40))
def test_write_json_fast_path_writes_what_json_dump_writes(seed: int) -> None:
    import random

    from collector.render.safe import _json_safe, write_json

    rnd = random.Random(seed)
    keys = ["time", "host", "to", "from", "status"]
    rows = [{k: rnd.choice(_TRICKY) for k in rnd.sample(keys, rnd.randint(1, 5))}
            for _ in range(rnd.randint(0, 8))]
    payload = {"results": rows, "hosts": [{"name": "x", "notes": ["a\nb"], "stats": {"n": 1},
                                           "sources": []}]}
    out = io.StringIO()
    write_json(payload, out)
    assert out.getvalue() == _json_safe(json.dumps(payload, ensure_ascii=False, indent=2)) + "\n"
