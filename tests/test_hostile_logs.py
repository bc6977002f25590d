"""Hostile log content: what an SMTP client (HELO, MAIL FROM, RCPT TO, headers) or a
compromised server (main.cf, file names) chooses must never become another message's fields,
drop a logged line, or stall the collector.

The lines are shaped the way Postfix writes them (smtpd_check.c log_whatsup(),
cleanup_message.c cleanup_act_log(), cleanup_milter.c, postscreen_smtpd.c, log_adhoc.c,
opened.c; addresses in the external form of quote_822_local.c).
"""

from __future__ import annotations

import os
import posixpath
import time
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.logs import select
from collector.logs.assemble import assemble, distinct_lines
from collector.logs.commands import filter_file_command, pass1_needles
from collector.logs.discovery import (
    MAX_ROTATION_NAMES,
    config_from_main_cf,
    rotation_candidates,
    strftime_regex,
)
from collector.logs.parse import LineParser, TimeContext, parse_line
from collector.logs.select import fixed_part, fold, select_rows
from collector.models import Host, Kind, Query, Record, TransportKind
from collector.search.host import HostSearch, search_host
from collector.search.view import SessionView, discover_host
from collector.transport.local import LocalSession

CTX = TimeContext(tz=UTC, reference=datetime(2026, 12, 1, tzinfo=UTC))
STAMP = "Nov 29 17:32:45 mx1"


def parse(text: str) -> Record:
    record = parse_line(f"{STAMP} {text}", CTX)
    assert record is not None
    return record


# --------------------------------------------------------------------------- forged trailers

# RCPT TO:<"x; from=<ceo@corp.example> to=<cfo@corp.example>"@evil.example>: Postfix quotes
# the local part in the trailer and echoes the client's form in the reply.
FORGED_RCPT = '"x; from=<ceo@corp.example> to=<cfo@corp.example>"@evil.example'
FORGED_SENDER = '"a; from=<ceo@corp.example> to=<cfo@corp.example> proto=ESMTP helo=<x>"@evil.example'


def test_forged_recipient_in_an_smtpd_reject_stays_the_recipient() -> None:
    r = parse(
        "postfix/smtpd[23778]: NOQUEUE: reject: RCPT from unknown[192.0.2.66]: 550 5.1.1 "
        f"<{FORGED_RCPT}>: Recipient address rejected: User unknown in local recipient table; "
        f"from=<mallory@evil.example> to=<{FORGED_RCPT}> proto=ESMTP helo=<evil.example>"
    )
    assert r.kind is Kind.REJECT
    assert r.fields["from"] == "mallory@evil.example"
    assert r.fields["to"] == FORGED_RCPT
    assert r.fields["helo"] == "evil.example"
    assert r.fields["client"] == "unknown[192.0.2.66]"
    assert r.text == (
        f"550 5.1.1 <{FORGED_RCPT}>: Recipient address rejected: User unknown in local "
        "recipient table"
    )


def test_forged_sender_in_an_smtpd_reject_stays_the_sender() -> None:
    r = parse(
        "postfix/smtpd[23778]: NOQUEUE: reject: RCPT from unknown[192.0.2.66]: 554 5.7.1 "
        "<victim@example.test>: Relay access denied; "
        f"from=<{FORGED_SENDER}> to=<victim@example.test> proto=ESMTP helo=<h>"
    )
    assert r.fields["from"] == FORGED_SENDER
    assert r.fields["to"] == "victim@example.test"
    assert r.fields["proto"] == "ESMTP"
    assert r.fields["helo"] == "h"


@pytest.mark.parametrize(
    "address",
    [
        '"a> to=<cfo@corp.example>"@evil.example',
        '"a;b"@evil.example',
        '"a\\" to=<cfo@corp.example> \\\\"@evil.example',
        '"; from=<ceo@corp.example> to=<cfo@corp.example> proto=ESMTP helo=<h> sasl_method=PLAIN'
        ' sasl_username=ceo sasl_sender=x"@evil.example',
    ],
)
def test_quoted_local_parts_keep_their_specials(address: str) -> None:
    r = parse(
        "postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.66]: 550 5.1.1 "
        f"<{address}>: Recipient address rejected: User unknown; "
        f"from=<{address}> to=<{address}> proto=ESMTP helo=<h>"
    )
    assert (r.fields["from"], r.fields["to"], r.fields["helo"]) == (address, address, "h")
    assert "sasl_username" not in r.fields


def test_3_10_sasl_fields_after_a_forged_recipient() -> None:
    r = parse(
        "postfix/submission/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.66]: 554 5.7.1 "
        f"<{FORGED_RCPT}>: Recipient address rejected: Access denied; "
        f"from=<alice@example.test> to=<{FORGED_RCPT}> proto=ESMTP helo=<h> "
        "sasl_method=PLAIN sasl_username=alice sasl_sender=alice+40example.test"
    )
    assert r.fields["from"] == "alice@example.test"
    assert r.fields["to"] == FORGED_RCPT
    assert r.fields["sasl_username"] == "alice"
    assert r.fields["sasl_sender"] == "alice+40example.test"


def test_forged_sender_in_a_cleanup_milter_reject() -> None:
    r = parse(
        "postfix/cleanup[23782]: D4721168242: milter-reject: END-OF-MESSAGE from "
        "unknown[192.0.2.66]: 5.7.1 Spam detected; "
        f"from=<{FORGED_SENDER}> to=<victim@example.test> proto=ESMTP helo=<h>"
    )
    assert r.kind is Kind.REJECT
    assert r.fields["from"] == FORGED_SENDER
    assert r.fields["to"] == "victim@example.test"
    assert r.text == "5.7.1 Spam detected"


# A `: ` inside the quoted sender would let a look-alike's "text" swallow the real trailer.
FORGED_SENDER_TEXT = '"x; from=<ceo@corp.example> to=<cfo@corp.example>: y"@evil.example'


def test_forged_sender_in_a_cleanup_header_reject_with_text() -> None:
    r = parse(
        "postfix/cleanup[23782]: 116F21681F0: reject: header Subject: hello from "
        f"unknown[192.0.2.66]; from=<{FORGED_SENDER_TEXT}> to=<victim@example.test> "
        "proto=ESMTP helo=<h>: 5.7.1 Message content rejected"
    )
    assert r.fields["from"] == FORGED_SENDER_TEXT
    assert r.fields["to"] == "victim@example.test"
    assert r.fields["client"] == "unknown[192.0.2.66]"
    assert r.fields["what"] == "Subject: hello"
    assert r.text == "5.7.1 Message content rejected"


def test_forged_trailer_in_a_header_and_in_the_sender() -> None:
    # The Subject (chosen by the sender) opens a quote that the real sender's quote closes.
    r = parse(
        "postfix/cleanup[23782]: 116F21681F0: reject: header Subject: a from x[192.0.2.1]; "
        'from=<"q from unknown[192.0.2.66]; from=<"@corp.example>: y'
        ' from unknown[192.0.2.66]; from=<"@corp.example>: z"@evil.example> '
        "to=<victim@example.test> proto=ESMTP helo=<h>: 5.7.1 Message content rejected"
    )
    assert r.fields["from"] == '"@corp.example>: z"@evil.example'
    assert r.fields["to"] == "victim@example.test"
    assert r.text == "5.7.1 Message content rejected"


def test_a_header_that_looks_like_a_trailer() -> None:
    r = parse(
        "postfix/cleanup[23782]: 116F21681F0: reject: header Subject: x from mx[192.0.2.1]; "
        "from=<ceo@corp.example> to=<cfo@corp.example>: y from unknown[192.0.2.66]; "
        "from=<mallory@evil.example> to=<victim@example.test> proto=ESMTP helo=<h>: "
        "5.7.1 Message content rejected"
    )
    assert r.fields["from"] == "mallory@evil.example"
    assert r.fields["to"] == "victim@example.test"
    assert r.fields["client"] == "unknown[192.0.2.66]"


def test_postscreen_junk_domain_forges_nothing() -> None:
    # postscreen checks no domain: `r@x; from=<ceo>, to=<cfo` is logged as is.
    r = parse(
        "postfix/postscreen[1485]: NOQUEUE: reject: RCPT from [192.0.2.66]:4711: 550 5.7.1 "
        "Service unavailable; client [192.0.2.66] blocked using zen.example; "
        "from=<mallory@evil.example>, to=<r@x; from=<ceo>, to=<cfo>, proto=ESMTP, helo=<h>"
    )
    assert r.kind is Kind.REJECT
    assert r.fields.get("from") != "ceo"
    assert r.fields.get("to") != "cfo"


def test_postscreen_quoted_recipient() -> None:
    r = parse(
        "postfix/postscreen[1485]: NOQUEUE: reject: RCPT from [192.0.2.66]:4711: 550 5.7.1 "
        "Service unavailable; client [192.0.2.66] blocked using zen.example; "
        'from=<mallory@evil.example>, to=<"a>, to=<cfo>, proto=ESMTP, helo=<h"@x.example>, '
        "proto=ESMTP, helo=<h>"
    )
    assert r.fields["from"] == "mallory@evil.example"
    assert r.fields["to"] == '"a>, to=<cfo>, proto=ESMTP, helo=<h"@x.example'
    assert r.fields["helo"] == "h"


# --------------------------------------------------------------------------- other lines


def test_qmgr_sender_with_a_fake_size_and_nrcpt() -> None:
    sender = '"x>, size=1, nrcpt=99 (queue active"@evil.example'
    r = parse(f"postfix/qmgr[811]: 4F2A81C0042: from=<{sender}>, size=2000, nrcpt=1 (queue active)")
    assert r.kind is Kind.QUEUED
    assert dict(r.fields) == {"from": sender, "size": "2000", "nrcpt": "1"}
    assert r.text == "queue active"


def test_qmgr_expired_sender_with_a_fake_status() -> None:
    sender = '"x, status=sent, y"@evil.example'
    r = parse(f"postfix/qmgr[811]: 4F2A81C0042: from=<{sender}>, status=expired, returned to sender")
    assert r.kind is Kind.EXPIRED
    assert dict(r.fields) == {"from": sender, "status": "expired"}
    assert r.text == "returned to sender"


FAKE_SENT = (
    '"a>, relay=mx.corp.example[198.51.100.7]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, '
    'status=sent (250 2.0.0 Ok: queued as 4TBq3k1XYZz9sQ)"@evil.example'
)


def test_status_sent_inside_a_recipient_is_not_the_status() -> None:
    r = parse(
        f"postfix/smtp[23456]: 4F2A81C0042: to=<{FAKE_SENT}>, relay=mx.evil.example"
        "[203.0.113.9]:25, delay=1.2, delays=0.05/0.01/0.6/0.54, dsn=5.1.1, status=bounced "
        "(host mx.evil.example[203.0.113.9] said: 550 5.1.1 no such user (in reply to RCPT TO "
        "command))"
    )
    assert r.kind is Kind.DELIVERY
    assert r.fields["to"] == FAKE_SENT
    assert r.fields["status"] == "bounced"
    assert r.fields["relay"] == "mx.evil.example[203.0.113.9]:25"
    assert r.child is None


def test_status_sent_inside_a_recipient_of_an_unknown_delivery_shape() -> None:
    # A field collector does not know yet (`xyz=1`) sends the line to the key=value reader.
    r = parse(
        f"postfix/smtp[23456]: 4F2A81C0042: to=<{FAKE_SENT}>, orig_to=<{FAKE_SENT}>, "
        "relay=mx.evil.example[203.0.113.9]:25, xyz=1, delay=1.2, delays=0.05/0.01/0.6/0.54, "
        "dsn=5.1.1, status=bounced (550 5.1.1 no such user, status=sent (ok))"
    )
    assert r.kind is Kind.DELIVERY
    assert r.fields["to"] == FAKE_SENT
    assert r.fields["orig_to"] == FAKE_SENT
    assert r.fields["status"] == "bounced"
    assert r.fields["xyz"] == "1"
    assert r.text == "550 5.1.1 no such user, status=sent (ok)"


def test_hostile_reject_lines_parse_in_linear_time() -> None:
    # Hundreds of look-alike starts in one reply: each is read up to its next `;` or quote,
    # never to the end of the line again. (A hang guard, not a speed target.)
    junk = '; from=<a; sasl_username=b c; from=<"d' * 100
    line = (
        f"{STAMP} postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.66]: 550 5.1.1 "
        f"<x>: {junk}; from=<s@evil.example> to=<r@example.test> proto=ESMTP helo=<h>"
    )
    start = time.perf_counter()
    for _ in range(20):
        r = parse_line(line, CTX)
    assert time.perf_counter() - start < 2.0
    assert r is not None and r.kind is Kind.REJECT
    assert (r.fields["from"], r.fields["to"]) == ("s@evil.example", "r@example.test")


# --------------------------------------------------------------------------- every line counts

REFUSED = (
    "2026-11-29T17:32:45.012468+00:00 mx1 postfix/smtpd[23799]: NOQUEUE: reject: RCPT from "
    "unknown[192.0.2.66]: 550 5.1.1 <ghost@example.test>: Recipient address rejected: User "
    "unknown in virtual mailbox table; from=<spammer@evil.example> to=<ghost@example.test> "
    "proto=ESMTP helo=<evil.example>"
)
OTHER_LINE = (
    "2026-11-29T17:32:45.100000+00:00 mx1 postfix/smtpd[23799]: connect from "
    "unknown[192.0.2.67]"
)


def read(lines: list[str]) -> list[Record]:
    parser = LineParser(CTX)
    return list(parser.parse_blocks([("\n".join(lines) + "\n").encode()]))


def test_identical_lines_of_one_read_are_distinct_lines() -> None:
    # A BSD stamp has no fraction: a client repeating a refused RCPT within a second writes
    # the same line twice.
    line = REFUSED.replace("2026-11-29T17:32:45.012468+00:00", "Nov 29 17:32:45")
    first, second = read([line, line])
    assert first == second  # equal as values...
    assert first.read == second.read
    assert len(distinct_lines([first, second])) == 2  # ...and both logged lines count


def test_the_same_line_read_twice_counts_once() -> None:
    pass1 = read([REFUSED, OTHER_LINE, REFUSED])
    pass2 = read([REFUSED, REFUSED])
    again = read([REFUSED])
    assert pass1[0].read != pass2[0].read
    kept = distinct_lines(pass1 + pass2 + again)
    assert [r.line for r in kept].count(REFUSED) == 2
    assert len(distinct_lines(read([REFUSED]) + read([REFUSED]))) == 1


def test_rsyslog_repeated_message_stands_for_every_line() -> None:
    head, _, body = REFUSED.partition("NOQUEUE: ")
    wrapped = f"{head}message repeated 3 times: [ NOQUEUE: {body}]"
    records = read([REFUSED, wrapped])
    assert [r.kind for r in records] == [Kind.REJECT] * 4
    assert len(distinct_lines(records)) == 4
    parser = LineParser(CTX)
    assert len(parser.feed_all(wrapped.encode())) == 3
    assert parser.feed(wrapped.encode()) is not None and parser.stats.lines == 2


def test_identical_refusals_are_as_many_rows() -> None:
    records = distinct_lines(read([REFUSED, REFUSED]) + read([REFUSED, REFUSED]))
    log = assemble("mx1", records)
    rows = select_rows([log], Query(senders=("spammer@evil.example",)))
    assert len(rows) == 2


def host_root(tmp_path: Path, name: str, log: str) -> Host:
    root = tmp_path / name
    (root / "etc/postfix").mkdir(parents=True)
    (root / "etc/postfix/main.cf").write_text("", encoding="utf-8")
    (root / "var/log").mkdir(parents=True)
    (root / "var/log/mail.log").write_text(log, encoding="utf-8")
    return Host(name=name, transport=TransportKind.LOCAL, root=str(root), timezone="UTC")


def test_search_keeps_identical_refusals(tmp_path: Path) -> None:
    host = host_root(tmp_path, "mx1", f"{REFUSED}\n{OTHER_LINE}\n{REFUSED}\n")
    query = Query(senders=("spammer@evil.example",))
    result = search_host(LocalSession(host), query, UTC, datetime(2026, 12, 1, tzinfo=UTC))
    assert len(select_rows([result.log], query)) == 2


# --------------------------------------------------------------------------- SMTPUTF8 addresses


def utf8_line(sender: str, recipient: str, qid: str = "4F2A81C0042") -> str:
    return (
        f"2026-11-29T17:32:45.012468+00:00 mx1 postfix/qmgr[811]: {qid}: from=<{sender}>, "
        f"size=1200, nrcpt=1 (queue active)\n"
        f"2026-11-29T17:32:45.112468+00:00 mx1 postfix/local[812]: {qid}: to=<{recipient}>, "
        "relay=local, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to "
        "mailbox)\n"
        f"2026-11-29T17:32:45.212468+00:00 mx1 postfix/qmgr[811]: {qid}: removed\n"
    )


@pytest.mark.parametrize(
    ("logged", "wanted"),
    [
        ("jÖRG@bÜCHER.example", "Jörg@Bücher.example"),
        ("Jörg@Bücher.example", "JÖRG@BÜCHER.EXAMPLE"),
        ("ΣΊΣΥΦΟΣ@παράδειγμα.gr", "σίσυφος@ΠΑΡΆΔΕΙΓΜΑ.GR"),
        ("用户@例子.广告", "用户@例子.广告"),
    ],
)
def test_search_finds_a_non_ascii_sender_in_any_case(
    tmp_path: Path, logged: str, wanted: str
) -> None:
    host = host_root(tmp_path, "mx1", utf8_line(logged, "bob@example.test"))
    for query in (Query(senders=(wanted,)), Query(terms=(wanted,))):
        result = search_host(LocalSession(host), query, UTC, datetime(2026, 12, 1, tzinfo=UTC))
        rows = select_rows([result.log], query)
        assert [r.sender for r in rows] == [logged], query


def test_search_finds_a_non_ascii_recipient_in_any_case(tmp_path: Path) -> None:
    host = host_root(tmp_path, "mx1", utf8_line("bob@example.test", "ÉLODIE@ÉCOLE.EXAMPLE"))
    query = Query(recipients=("élodie@école.example",))
    result = search_host(LocalSession(host), query, UTC, datetime(2026, 12, 1, tzinfo=UTC))
    assert [r.recipient for r in select_rows([result.log], query)] == ["ÉLODIE@ÉCOLE.EXAMPLE"]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("straße@x.example", "STRASSE@X.EXAMPLE"),  # ß -> ss would turn non-ASCII into ASCII
        ("\u212aate@x.example", "kate@x.example"),  # the Kelvin sign is not k
        ("\ufb01le@x.example", "file@x.example"),  # the fi ligature is not fi
        ("jo\u0308rg@x.example", "jörg@x.example"),  # no normalization: decomposed differs
    ],
)
def test_folds_that_would_reach_ascii_do_not_apply(a: str, b: str) -> None:
    # Decided: grep -i under LC_ALL=C cannot see these, so the comparison does not make them.
    assert fold(a) != fold(b)


def test_capital_sharp_s_and_final_sigma_fold() -> None:
    assert fold("STRAẞE@x.example") == fold("straße@X.example")
    assert fold("ΟΔΟΣ@x.gr") == fold("οδος@x.gr") == fold("οδοσ@x.gr")


def test_fixed_part_is_found_in_every_line_that_folds_equal() -> None:
    needle = "from=<Jörg@Bücher.example>"
    part = fixed_part(needle)
    assert part and part.isascii()
    for logged in ("jÖRG@bÜCHER.example", "JÖRG@BÜCHER.EXAMPLE", "jörg@bücher.example"):
        line = f"from=<{logged}>"
        assert fold(line) == fold(needle)
        assert part.lower() in line.lower()  # what grep -F -i does under LC_ALL=C
    assert fixed_part("to=<bob@example.test>") == "to=<bob@example.test>"
    assert fixed_part("to=<用户@例子.广告>") == "to=<用户@例子.广告>"


def test_the_grep_needle_of_a_non_ascii_address() -> None:
    needles = pass1_needles(Query(senders=("Jörg@Bücher.example",)))
    assert needles is not None
    argv = filter_file_command("/var/log/mail.log", needles).argv
    # Pass 1 greps the address's ASCII part, then the exact needles' ASCII parts (one a line,
    # as the script's second argument), both case-insensitively.
    assert argv[argv.index("-e") + 1] == "cher.example"
    assert argv[argv.index("/var/log/mail.log") + 1].split("\n") == [
        "cher.example>", "cher.example,"]
    assert "-i" in argv


def _assigned() -> list[str]:
    return [
        chr(cp)
        for cp in range(0x80, 0x110000)
        if unicodedata.category(chr(cp)) not in ("Cn", "Co", "Cs")
    ]


def test_fold_keeps_ascii_and_non_ascii_apart_over_all_of_unicode() -> None:
    exact = {c for c in _assigned() if select._exact(c)}
    for c in _assigned():
        folded = select._fold_char.__wrapped__(c)
        assert folded and not any(x.isascii() for x in folded), c
        # A character that stands for itself is never what another one folds into.
        assert not (set(folded) & exact) or folded == c, c


# --------------------------------------------------------------------------- hostile main.cf


def _unbounded(regex: str) -> int:
    """Quantifiers without an upper bound in a regex (escaped characters skipped)."""
    count, i = 0, 0
    while i < len(regex):
        if regex[i] == "\\":
            i += 2
            continue
        count += regex[i] in "+*"
        i += 1
    return count


@pytest.mark.parametrize(
    "suffix", ["%Y%m%d-%H%M%S", "%Y-%m-%d_%Hh", "%s", "%F.%T", "%B-%Y", "x%Q%%y", "%%s%%s"]
)
def test_rotate_suffix_regex_is_linear_by_construction(suffix: str) -> None:
    assert _unbounded(strftime_regex(suffix)) <= 1


@pytest.mark.parametrize(
    "suffix",
    ["%Y" * 5000, "%s" * 30, "%s%Q", "%Q%Q", "%A%B", "%%" * 40, "%" + "s%" * 20],
)
def test_hostile_rotate_suffix_is_a_note_never_a_hang(suffix: str) -> None:
    names = ["postfix.log", "postfix.log.1", "postfix.log." + "1" * 200 + "x"]
    names += [f"postfix.log.{'9' * (i % 200)}-{i}z" for i in range(2000)]
    notes: list[str] = []
    start = time.perf_counter()
    found = rotation_candidates("/var/log/postfix.log", names, suffix, notes)
    assert time.perf_counter() - start < 2.0
    assert "postfix.log.1" in found
    assert any("maillog_file_rotate_suffix" in n for n in notes)


def test_a_directory_of_look_alike_names_is_capped() -> None:
    names = [f"mail.log.{i}x" for i in range(MAX_ROTATION_NAMES + 5)] + ["mail.log.1"]
    notes: list[str] = []
    start = time.perf_counter()
    rotation_candidates("/var/log/mail.log", names, None, notes)
    assert time.perf_counter() - start < 2.0
    assert any("names alike" in n for n in notes)


def test_main_cf_that_doubles_at_every_level_expands_in_bounded_time() -> None:
    lines = [f"p{i} = $p{i + 1}$p{i + 1}" for i in range(60)] + ["p60 = x"]
    text = "\n".join(lines) + "\nmaillog_file = /var/log/$p0\n"
    start = time.perf_counter()
    config = config_from_main_cf(text, "/etc/postfix")
    assert time.perf_counter() - start < 2.0
    assert config.maillog_file.startswith("/var/log/x")


# --------------------------------------------------------------------------- hostile file names

LOG = utf8_line("alice@example.test", "bob@example.test")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def searched(host: Host) -> tuple[list[str], HostSearch]:
    query = Query(senders=("alice@example.test",))
    result = search_host(LocalSession(host), query, UTC, NOW)
    return [r.recipient or "" for r in select_rows([result.log], query)], result


def test_a_file_name_with_a_newline_does_not_break_the_listing(tmp_path: Path) -> None:
    host = host_root(tmp_path, "mx1", LOG)
    log_dir = tmp_path / "mx1/var/log"
    (log_dir / "mail.log.1\nmail.log.2").write_text("junk\n", encoding="utf-8")
    (log_dir / "new\nline.log").write_text("junk\n", encoding="utf-8")
    found = discover_host(LocalSession(host), host)
    names = {posixpath.basename(s.path) for s in found.sources}
    assert names == {"mail.log"}
    listing = SessionView(LocalSession(host)).list_dir("/var/log")
    assert listing is not None
    assert {"mail.log.1\nmail.log.2", "new\nline.log"} <= {f.name for f in listing}
    rows, result = searched(host)
    assert rows == ["bob@example.test"] and result.unread == ()


def linked_host(tmp_path: Path, link: str) -> Host:
    host = host_root(tmp_path, "mx1", "")
    root = tmp_path / "mx1"
    (root / "var/log/mail.log").unlink()
    (root / "data/log").mkdir(parents=True)
    (root / "data/log/mail.log").write_text(LOG, encoding="utf-8")
    os.symlink(link.replace("ROOT", str(root)), root / "var/log/mail.log")
    return host


@pytest.mark.parametrize(
    "link", ["../../data/log/mail.log", "ROOT/data/log/mail.log", "../../data/../data/log/mail.log"]
)
def test_a_symlinked_log_is_read_through_its_name(tmp_path: Path, link: str) -> None:
    host = linked_host(tmp_path, link)
    found = discover_host(LocalSession(host), host)
    assert [s.path for s in found.sources] == ["/var/log/mail.log"]
    assert found.sources[0].size == len(LOG.encode())
    rows, result = searched(host)
    assert rows == ["bob@example.test"] and result.unread == ()


def test_a_directory_hosts_absolute_symlink_is_read_inside_its_root(tmp_path: Path) -> None:
    # The link names a place on the host (/data/log/mail.log): inside the root, never this
    # machine's /data.
    host = linked_host(tmp_path, "/data/log/mail.log")
    found = discover_host(LocalSession(host), host)
    assert [s.path for s in found.sources] == ["/data/log/mail.log"]
    assert any("/var/log/mail.log -> /data/log/mail.log" in n for n in found.notes)
    rows, result = searched(host)
    assert rows == ["bob@example.test"] and result.unread == ()


@pytest.mark.parametrize(
    "link", ["/nowhere/mail.log", "../../../../../../../../etc/passwd", "mail.log.missing"]
)
def test_a_symlink_out_of_the_root_or_to_nothing_is_a_note(tmp_path: Path, link: str) -> None:
    host = linked_host(tmp_path, link)
    found = discover_host(LocalSession(host), host)
    assert "/var/log/mail.log" not in [s.path for s in found.sources]
    assert any("/var/log/mail.log -> " in n for n in found.notes)
