"""parse: envelopes, tags, queue IDs and bodies of real Postfix lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector.logs.parse import LineParser, TimeContext, parse_line
from collector.models import NO_FIELDS, Kind, RejectAction

LINES = Path(__file__).parent / "fixtures" / "lines"
CTX = TimeContext(UTC, datetime(2024, 1, 20, tzinfo=UTC))


def _p(line: str, ctx: TimeContext = CTX):  # type: ignore[no-untyped-def]
    record = parse_line(line, ctx)
    assert record is not None, line
    return record


# --------------------------------------------------------------------------- envelopes

ENVELOPES = [
    # BSD syslog, space-padded day
    (
        "Jan  5 12:34:56 mx1 postfix/smtpd[12345]: connect from mail.example.org[192.0.2.10]",
        datetime(2024, 1, 5, 12, 34, 56, tzinfo=UTC),
    ),
    (
        "Jan 15 12:34:56 mx1 postfix/qmgr[811]: 4F2A81C0042: removed",
        datetime(2024, 1, 15, 12, 34, 56, tzinfo=UTC),
    ),
    # postlogd maillog_file and journalctl -o short: zero-padded day
    (
        "Jan 05 12:34:56 mx1 postfix/smtpd[12345]: connect from mail.example.org[192.0.2.10]",
        datetime(2024, 1, 5, 12, 34, 56, tzinfo=UTC),
    ),
    # journalctl -o short-precise
    (
        "Jan 05 12:34:56.123456 mx1 postfix/smtpd[12345]: connect from mail.example.org[192.0.2.10]",
        datetime(2024, 1, 5, 12, 34, 56, 123456, tzinfo=UTC),
    ),
    # rsyslog RFC 3339 with fraction and colon offset
    (
        "2024-01-15T12:34:56.123456+01:00 mx1 postfix/smtp[23456]: 4F2A81C0042: to=<bob@example.net>, relay=mx.example.net[198.51.100.7]:25, delay=1.2, delays=0.05/0.01/0.6/0.54, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4TBq3k1XYZz9sQ)",
        datetime(2024, 1, 15, 11, 34, 56, 123456, tzinfo=UTC),
    ),
    # RFC 3339 without fraction (remote messages), Z
    (
        "2024-01-15T12:34:56Z mx1 postfix/qmgr[811]: 4F2A81C0042: removed",
        datetime(2024, 1, 15, 12, 34, 56, tzinfo=UTC),
    ),
    # journalctl -o short-iso (systemd <= 254: no colon)
    (
        "2024-01-05T12:34:56+0000 mx1 postfix/smtpd[12345]: connect from mail.example.org[192.0.2.10]",
        datetime(2024, 1, 5, 12, 34, 56, tzinfo=UTC),
    ),
    # journalctl -o short-iso (systemd >= 255)
    (
        "2024-01-05T12:34:56+00:00 mx1 postfix/smtpd[12345]: connect from mail.example.org[192.0.2.10]",
        datetime(2024, 1, 5, 12, 34, 56, tzinfo=UTC),
    ),
    # journalctl -o short-iso-precise
    (
        "2024-01-05T12:34:56.123456-0500 mx1 postfix/smtpd[12345]: connect from mail.example.org[192.0.2.10]",
        datetime(2024, 1, 5, 17, 34, 56, 123456, tzinfo=UTC),
    ),
]


@pytest.mark.parametrize(("line", "when"), ENVELOPES)
def test_envelope(line: str, when: datetime) -> None:
    r = _p(line)
    assert r.time == when
    assert r.time.tzinfo is not None
    assert r.host == "mx1"
    assert r.instance == "postfix"
    assert r.line == line


TAGS = [
    ("postfix/smtpd", ("postfix", "", "smtpd")),
    ("postfix/relay/smtp", ("postfix", "relay", "smtp")),
    ("postfix-out/smtp", ("postfix-out", "", "smtp")),
    ("postfix/submission/smtpd", ("postfix", "submission", "smtpd")),
    ("postfix/smtp-amavis/smtp", ("postfix", "smtp-amavis", "smtp")),
    ("postfix/10025/smtpd", ("postfix", "10025", "smtpd")),
    ("postfix/a/b/smtp", ("postfix", "a/b", "smtp")),
    ("mail/smtpd", ("mail", "", "smtpd")),  # custom syslog_name, known program
]


@pytest.mark.parametrize(("tag", "names"), TAGS)
def test_program_tag(tag: str, names: tuple[str, str, str]) -> None:
    r = _p(f"Jan 15 12:34:56 mx1 {tag}[42]: 4F2A81C0042: removed")
    assert (r.instance, r.service, r.program) == names
    assert r.pid == 42


@pytest.mark.parametrize(
    "line",
    [
        "Jan 15 00:00:03 filter1 amavis[2027]: (2027-02) Passed CLEAN {RelayedInbound}, [91.220.81.26]:59020 [91.220.81.26] <sharon.jackson@gmail.com> -> <awright@example.com>, Queue-ID: F0E3231103E3",
        "Jan 15 00:00:04 mbox1 dovecot[2030]: lmtp(awright@example.com)<18733><d32aa3a5defa31c6>: msgid=<34fe2c11@hooli.es>: saved mail to INBOX",
        "Jan 15 00:00:00 out1 opendkim[2035]: 6E02D3101A8C: DKIM-Signature field added (s=mail, d=example.com)",
        "Jan 15 00:00:00 out1 dovecot: imap-login: Login: user=<a>",
        "Jan 15 00:00:00 out1 kernel: [123.4] eth0: link up",
        "not a log line at all",
        "",
        "Feb 31 00:00:00 mx1 postfix/qmgr[1]: 4F2A81C0042: removed",  # no such date
    ],
)
def test_not_postfix(line: str) -> None:
    assert parse_line(line, CTX) is None


# --------------------------------------------------------------------------- queue IDs

QUEUE_IDS = [
    ("Jan 15 12:34:56 mx1 postfix/qmgr[811]: C3CD21F3E90: removed", "C3CD21F3E90", Kind.REMOVED),
    ("Jan 15 12:34:56 mx1 postfix/qmgr[811]: ABCDEF: removed", "ABCDEF", Kind.REMOVED),
    ("Jan 15 12:34:56 mx1 postfix/qmgr[811]: 3Pt2mN2VXxznjll: removed", "3Pt2mN2VXxznjll", Kind.REMOVED),
    ("Jan 15 12:34:56 mx1 postfix/qmgr[811]: 4JhJXC248TzgB0: removed", "4JhJXC248TzgB0", Kind.REMOVED),
    (
        "Jan 15 12:34:56 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 554 5.7.1 <x@example.com>: Relay access denied; from=<spam@example.biz> to=<x@example.com> proto=ESMTP helo=<pc1>",
        None,
        Kind.REJECT,
    ),
    (
        "Jan 15 12:34:56 mx1 postfix/smtp[1]: warning: 4F2A81C0042: enabling PIX workarounds",
        "4F2A81C0042",
        Kind.DIAGNOSTIC,
    ),
    # `statistics:` is not an ID (lower case, vowels); `ABCDE:` is too short
    ("Jan 15 00:05:01 mx1 postfix/scache[27611]: statistics: start interval Jan 14 23:55:00", None, Kind.OTHER),
    ("Jan 15 00:05:01 mx1 postfix/smtpd[1]: ABCDE: removed", None, Kind.OTHER),
]


@pytest.mark.parametrize(("line", "queue_id", "kind"), QUEUE_IDS)
def test_queue_id(line: str, queue_id: str | None, kind: Kind) -> None:
    r = _p(line)
    assert r.queue_id == queue_id
    assert r.kind == kind


# --------------------------------------------------------------------------- bodies

# (line, kind, fields that must be there, text, child, severity)
BODIES: list[tuple[str, Kind, dict[str, str], str | None, str | None]] = [
    (
        "Jan 15 12:34:58 mx1 postfix/smtp[23456]: 4F2A81C0042: to=<bob@example.net>, orig_to=<sales@example.com>, relay=mx.example.net[198.51.100.7]:25, conn_use=2, delay=1.2, delays=0.05/0.01/0.6/0.54, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4TBq3k1XYZz9sQ)",
        Kind.DELIVERY,
        {"to": "bob@example.net", "orig_to": "sales@example.com", "relay": "mx.example.net[198.51.100.7]:25", "conn_use": "2", "delay": "1.2", "delays": "0.05/0.01/0.6/0.54", "dsn": "2.0.0", "status": "sent"},
        "250 2.0.0 Ok: queued as 4TBq3k1XYZz9sQ",
        "4TBq3k1XYZz9sQ",
    ),
    (
        "Jan 15 12:35:01 mx1 postfix/local[23460]: 51B0C1C0050: to=<alice@mx1.example.com>, orig_to=<root>, relay=local, delay=0.06, delays=0.01/0.04/0/0.01, dsn=2.0.0, status=sent (forwarded as 52C3D1C0061)",
        Kind.DELIVERY,
        {"to": "alice@mx1.example.com", "orig_to": "root", "relay": "local", "status": "sent"},
        "forwarded as 52C3D1C0061",
        "52C3D1C0061",
    ),
    (
        "Jan 15 12:35:02 mx1 postfix/qmgr[811]: 60AA21C0070: to=<x@dead.example>, relay=none, delay=3600, delays=3600/0.01/0/0, dsn=4.4.1, status=deferred (delivery temporarily suspended: connect to mx.dead.example[203.0.113.9]:25: Connection timed out)",
        Kind.DELIVERY,
        {"to": "x@dead.example", "relay": "none", "delay": "3600", "dsn": "4.4.1", "status": "deferred"},
        "delivery temporarily suspended: connect to mx.dead.example[203.0.113.9]:25: Connection timed out",
        None,
    ),
    (
        "Jan 15 12:35:03 mx1 postfix/error[23470]: 60AA21C0071: to=<y@example.org>, relay=none, delay=0.1, delays=0.05/0/0/0.05, dsn=5.0.0, status=bounced (User unknown)",
        Kind.DELIVERY,
        {"to": "y@example.org", "status": "bounced", "dsn": "5.0.0"},
        "User unknown",
        None,
    ),
    # 3.11+ tls= between delays and dsn; a status text holding `)`, `=` and `,`
    (
        "Jan 15 12:35:04 mx1 postfix/smtp[23471]: 60AA21C0072: to=<z@example.org>, relay=mx.example.org[198.51.100.8]:25, delay=0.4, delays=0.01/0/0.2/0.19, tls=may, dsn=5.7.1, status=bounced (host mx.example.org[198.51.100.8] said: 550 5.7.1 (policy=strict, id=7) rejected (in reply to end of DATA command))",
        Kind.DELIVERY,
        {"to": "z@example.org", "tls": "may", "dsn": "5.7.1", "status": "bounced"},
        "host mx.example.org[198.51.100.8] said: 550 5.7.1 (policy=strict, id=7) rejected (in reply to end of DATA command)",
        None,
    ),
    # an unknown future field between known ones falls back to the key=value scanner
    (
        "Jan 15 12:35:04 mx1 postfix/smtp[23471]: 60AA21C0073: to=<z@example.org>, relay=mx.example.org[198.51.100.8]:25, newfield=x, delay=0.4, delays=0.01/0/0.2/0.19, dsn=2.0.0, status=sent (250 2.0.0 Ok: 1234 bytes queued as 4TBq3k1XYZz9sQ)",
        Kind.DELIVERY,
        {"to": "z@example.org", "newfield": "x", "delay": "0.4", "status": "sent"},
        "250 2.0.0 Ok: 1234 bytes queued as 4TBq3k1XYZz9sQ",
        "4TBq3k1XYZz9sQ",
    ),
    # amavis wraps the reinjecting smtpd's reply
    (
        "Jan 15 00:00:03 filter1 postfix/smtp[28094]: 69BFC310CD65: to=<jennifer.nguyen@example.com>, relay=127.0.0.1[127.0.0.1]:10024, delay=0.54, delays=0.18/0/0.14/0.22, dsn=2.0.0, status=sent (250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as DDA153104D16)",
        Kind.DELIVERY,
        {"relay": "127.0.0.1[127.0.0.1]:10024", "status": "sent"},
        "250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as DDA153104D16",
        "DDA153104D16",
    ),
    # a remote Exim's own id is not a Postfix queue ID
    (
        "Jan 15 00:00:16 out1 postfix/smtp[18087]: AA0C131104FA: to=<b@datum-umbrella.io>, relay=mx1.datum-umbrella.io[77.39.186.194]:25, delay=2.63, delays=0.89/0/0.29/1.4, dsn=2.0.0, status=sent (250 OK id=1r1BF1x-E2CE40-21)",
        Kind.DELIVERY,
        {"status": "sent"},
        "250 OK id=1r1BF1x-E2CE40-21",
        None,
    ),
    (
        "Jan 15 12:34:56 mx1 postfix/smtpd[12345]: 4F2A81C0042: client=mail.example.org[192.0.2.10], sasl_method=PLAIN, sasl_username=alice",
        Kind.CLIENT,
        {"client": "mail.example.org[192.0.2.10]", "sasl_method": "PLAIN", "sasl_username": "alice"},
        "",
        None,
    ),
    (
        "Jan 15 12:34:56 filter1 postfix/smtpd[2]: 5A1B2C3D4E: client=filter1.example.test[127.0.0.22], orig_queue_id=4F2A81C0042, orig_client=mx1.example.test[127.0.0.21]",
        Kind.CLIENT,
        {"client": "filter1.example.test[127.0.0.22]", "orig_queue_id": "4F2A81C0042", "orig_client": "mx1.example.test[127.0.0.21]"},
        "",
        None,
    ),
    (
        "Jan 15 00:00:21 filter1 postfix/pickup[28198]: 3BD7031040FD: uid=0 from=<root>",
        Kind.PICKUP,
        {"uid": "0", "from": "root"},
        "",
        None,
    ),
    (
        "Jan 15 00:00:21 filter1 postfix/pickup[28198]: 3BD7031040FE: uid=107 from=<alice@example.com> orig_id=3BD7031040FD",
        Kind.PICKUP,
        {"uid": "107", "from": "alice@example.com", "orig_id": "3BD7031040FD"},
        "",
        None,
    ),
    (
        "Jan 15 00:00:25 out1 postfix/cleanup[18407]: 94B9A3100243: message-id=<20260115000025.381F6719A4@out1.example.com>",
        Kind.MESSAGE_ID,
        {"message-id": "<20260115000025.381F6719A4@out1.example.com>"},
        "",
        None,
    ),
    (
        "Jan 15 00:00:25 out1 postfix/cleanup[18407]: 94B9A3100243: resent-message-id=<r1@example.com>",
        Kind.RESENT_MESSAGE_ID,
        {"resent-message-id": "<r1@example.com>"},
        "",
        None,
    ),
    (
        "Jan 15 00:00:01 filter1 postfix/qmgr[1375]: 95B4D3101F5F: from=<bounces+963967-1877-user=example.com@gmx.de>, size=69487, nrcpt=1 (queue active)",
        Kind.QUEUED,
        {"from": "bounces+963967-1877-user=example.com@gmx.de", "size": "69487", "nrcpt": "1"},
        "queue active",
        None,
    ),
    (
        "Jan 15 00:00:01 mx1 postfix/qmgr[1375]: 95B4D3101F60: from=<>, size=2310, nrcpt=1 (queue active)",
        Kind.QUEUED,
        {"from": "", "size": "2310", "nrcpt": "1"},
        "queue active",
        None,
    ),
    (
        "Jan 20 00:00:01 mx1 postfix/qmgr[1375]: 95B4D3101F61: from=<a@example.com>, status=expired, returned to sender",
        Kind.EXPIRED,
        {"from": "a@example.com", "status": "expired"},
        "returned to sender",
        None,
    ),
    ("Jan 15 12:34:56 mx1 postfix/qmgr[811]: 4F2A81C0042: removed", Kind.REMOVED, {}, "", None),
    (
        "Jan 15 12:34:56 mx1 postfix/cleanup[811]: 4F2A81C0042: removed (discarded)",
        Kind.REMOVED,
        {"reason": "discarded"},
        "",
        None,
    ),
    (
        "Jan 15 00:00:24 mbox1 postfix/bounce[19009]: 9B4111C432ED: sender non-delivery notification: CEE771C464B8",
        Kind.NOTIFICATION,
        {"notification": "sender non-delivery notification"},
        "sender non-delivery notification",
        "CEE771C464B8",
    ),
    (
        "Jan 15 00:00:24 mbox1 postfix/bounce[19009]: 9B4111C432ED: postmaster delay notification: CEE771C464B9",
        Kind.NOTIFICATION,
        {"notification": "postmaster delay notification"},
        "postmaster delay notification",
        "CEE771C464B9",
    ),
    (
        "Jan 15 00:00:24 mbox1 postfix/bounce[19009]: 9B4111C432ED: sender delivery status notification: CEE771C464BA",
        Kind.NOTIFICATION,
        {},
        "sender delivery status notification",
        "CEE771C464BA",
    ),
    ("Jan 15 12:34:56 mx1 postfix/postsuper[9]: 4F2A81C0042: removed", Kind.POSTSUPER, {"action": "removed"}, "", None),
    ("Jan 15 12:34:56 mx1 postfix/postsuper[9]: 4F2A81C0042: requeued", Kind.POSTSUPER, {"action": "requeued"}, "", None),
    ("Jan 15 12:34:56 mx1 postfix/postsuper[9]: 4F2A81C0042: placed on hold", Kind.POSTSUPER, {"action": "placed on hold"}, "", None),
    ("Jan 15 12:34:56 mx1 postfix/postsuper[9]: 4F2A81C0042: released from hold", Kind.POSTSUPER, {"action": "released from hold"}, "", None),
    ("Jan 15 12:34:56 mx1 postfix/postsuper[9]: 4F2A81C0042: expired", Kind.POSTSUPER, {"action": "expired"}, "", None),
    # smtpd NOQUEUE reject, space-separated trailer
    (
        "Jan 15 00:00:06 mx1 postfix/smtpd[27155]: NOQUEUE: reject: RCPT from unknown[81.48.193.95]: 550 5.1.1 <ewilliams@example.org>: Recipient address rejected: User unknown in virtual mailbox table; from=<nancy.hernandez@outlook.com> to=<ewilliams@example.org> proto=ESMTP helo=<ylmf-pc>",
        Kind.REJECT,
        {"action": "reject", "stage": "RCPT", "client": "unknown[81.48.193.95]", "from": "nancy.hernandez@outlook.com", "to": "ewilliams@example.org", "proto": "ESMTP", "helo": "ylmf-pc"},
        "550 5.1.1 <ewilliams@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
        None,
    ),
    # postscreen: commas between fields, and a reply holding `;`
    (
        "Jan 15 00:00:01 mx1 postfix/postscreen[1485]: NOQUEUE: reject: RCPT from [176.217.114.200]:34669: 550 5.7.1 Service unavailable; client [176.217.114.200] blocked using bl.spamcop.net; from=<anna.gonzalez@icloud.com>, to=<jreed@example.com>, proto=ESMTP, helo=<176.217.114.200>",
        Kind.REJECT,
        {"stage": "RCPT", "client": "[176.217.114.200]:34669", "from": "anna.gonzalez@icloud.com", "to": "jreed@example.com", "proto": "ESMTP", "helo": "176.217.114.200"},
        "550 5.7.1 Service unavailable; client [176.217.114.200] blocked using bl.spamcop.net",
        None,
    ),
    (
        "Jan 15 00:00:01 mx1 postfix/postscreen[1485]: NOQUEUE: reject: CONNECT from [192.0.2.1]:4711: too many connections",
        Kind.REJECT,
        {"stage": "CONNECT", "client": "[192.0.2.1]:4711"},
        "too many connections",
        None,
    ),
    # a later RCPT of a transaction whose queue file exists
    (
        "Jan 15 12:34:56 mx1 postfix/smtpd[12345]: 4F2A81C0042: reject: RCPT from mail.example.org[192.0.2.10]: 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown; from=<a@example.org> to=<nobody@example.com> proto=ESMTP helo=<mail.example.org>",
        Kind.REJECT,
        {"stage": "RCPT", "to": "nobody@example.com", "from": "a@example.org"},
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown",
        None,
    ),
    # cleanup header_checks REJECT
    (
        "Jan 15 12:34:56 mx1 postfix/cleanup[812]: 4F2A81C0042: reject: header Subject: buy now from mail.example.org[192.0.2.10]; from=<a@x.example> to=<b@y.example> proto=ESMTP helo=<mail.example.org>: 5.7.1 spam not welcome",
        Kind.REJECT,
        {"stage": "header", "what": "Subject: buy now", "client": "mail.example.org[192.0.2.10]", "from": "a@x.example", "to": "b@y.example"},
        "5.7.1 spam not welcome",
        None,
    ),
    (
        "Jan 15 12:34:56 mx1 postfix/cleanup[812]: 4F2A81C0042: milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 Spam; from=<a@x.example> to=<b@y.example> proto=ESMTP helo=<h>",
        Kind.REJECT,
        {"action": "milter-reject", "stage": "END-OF-MESSAGE", "client": "localhost[127.0.0.1]"},
        "5.7.1 Spam",
        None,
    ),
    (
        "Jan 15 12:34:56 mx1 postfix/cleanup[812]: 4F2A81C0042: hold: header Subject: invoice from mail.example.org[192.0.2.10]; from=<a@x> to=<b@y> proto=ESMTP helo=<mail.example.org>: quarantined",
        Kind.ACTION,
        {"action": "hold", "stage": "header", "what": "Subject: invoice"},
        "quarantined",
        None,
    ),
    (
        "Jan 15 12:34:56 mx1 postfix/smtpd[1]: 4F2A81C0042: filter: RCPT from mail.example.org[192.0.2.10]: <x@example.com>: Recipient address triggers FILTER smtp:[127.0.0.1]:10024; from=<a@x> to=<x@example.com> proto=ESMTP helo=<h>",
        Kind.ACTION,
        {"action": "filter", "stage": "RCPT", "to": "x@example.com"},
        "<x@example.com>: Recipient address triggers FILTER smtp:[127.0.0.1]:10024",
        None,
    ),
    (
        "Jan 15 12:34:56 mx1 postfix/smtpd[12345]: NOQUEUE: milter-reject: RCPT from a.example[192.0.2.3]: 451 4.7.1 Service unavailable - try again later; from=<s@a.example> to=<r@b.example> proto=ESMTP helo=<a.example>",
        Kind.REJECT,
        {"action": "milter-reject", "stage": "RCPT", "from": "s@a.example"},
        "451 4.7.1 Service unavailable - try again later",
        None,
    ),
    (
        "Jan 15 12:34:56 mx1 postfix/smtpd[12345]: connect from mail.example.org[192.0.2.10]",
        Kind.CONNECT,
        {"client": "mail.example.org[192.0.2.10]"},
        "",
        None,
    ),
    (
        "Jan 15 12:34:56 mx1 postfix/smtpd[12345]: disconnect from mail.example.org[192.0.2.10] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7",
        Kind.DISCONNECT,
        {"client": "mail.example.org[192.0.2.10]"},
        "ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7",
        None,
    ),
    (
        "Jan 15 12:34:56 mx1 postfix/smtpd[12345]: proxy-accept: END-OF-MESSAGE: 250 2.0.0 Ok: queued as 4TBq3k1XYZz9sQ; from=<a@x> to=<b@y> proto=ESMTP helo=<h>",
        Kind.OTHER,
        {},
        None,
        "4TBq3k1XYZz9sQ",
    ),
    (
        "Jan 15 12:34:58 mx1 postfix/smtp[1]: 4F2A81C0042: connect to mx1.example.net[198.51.100.7]:25: Connection timed out",
        Kind.OTHER,
        {},
        "connect to mx1.example.net[198.51.100.7]:25: Connection timed out",
        None,
    ),
    (
        "Jan 15 00:00:00 mx1 postfix/smtpd[27046]: Anonymous TLS connection established from alt1.gmail-smtp-in.l.google.com[94.58.176.185]: TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)",
        Kind.OTHER,
        {},
        None,
        None,
    ),
]


@pytest.mark.parametrize(("line", "kind", "fields", "text", "child"), BODIES)
def test_body(
    line: str, kind: Kind, fields: dict[str, str], text: str | None, child: str | None
) -> None:
    r = _p(line)
    assert r.kind == kind
    for key, value in fields.items():
        assert r.fields.get(key) == value, key
    if text is not None:
        assert r.text == text
    assert r.child == child
    assert r.severity == ""


SEVERITIES = [
    ("Jan 05 12:34:57 mx1 postfix/smtpd[12345]: warning: hostname foo.example does not resolve to address 192.0.2.99", "warning", None),
    ("Jan 05 12:34:57 mx1 postfix/smtpd[1]: warning: unknown[203.0.113.5]: SASL LOGIN authentication failed: UGFzc3dvcmQ6, sasl_username=bob", "warning", None),
    ("Jan 05 12:34:57 mx1 postfix/cleanup[1]: warning: 4F2A81C0042: message rejected: hopcount exceeded", "warning", "4F2A81C0042"),
    ("Jan 05 12:34:57 mx1 postfix/master[1]: fatal: bind 0.0.0.0 port 25: Address already in use", "fatal", None),
    ("Jan 05 12:34:57 mx1 postfix/smtpd[1]: error: open database /etc/postfix/x.db: No such file", "error", None),
    ("Jan 05 12:34:57 mx1 postfix/smtpd[1]: panic: myfree: corrupt or unallocated memory block", "panic", None),
]


@pytest.mark.parametrize(("line", "severity", "queue_id"), SEVERITIES)
def test_severity(line: str, severity: str, queue_id: str | None) -> None:
    r = _p(line)
    assert r.kind == Kind.DIAGNOSTIC
    assert r.severity == severity
    assert r.queue_id == queue_id
    assert not r.text.startswith(severity)


def test_message_repeated_is_unwrapped() -> None:
    r = _p(
        "Jan 15 12:34:56 mx1 postfix/smtpd[11557]: message repeated 2 times: "
        "[ 535721E1E6C: client=unknown[192.0.2.7]]"
    )
    assert r.kind == Kind.CLIENT
    assert r.queue_id == "535721E1E6C"
    assert r.fields["client"] == "unknown[192.0.2.7]"
    w = _p(
        "Jan 15 12:34:56 mx1 postfix/smtpd[11557]: message repeated 3 times: "
        "[ warning: hostname x.example does not resolve to address 192.0.2.8]"
    )
    assert (w.kind, w.severity) == (Kind.DIAGNOSTIC, "warning")
    # `message repeated` around a line that is not Postfix-shaped stays as it was
    other = _p("Jan 15 12:34:56 mx1 postfix/smtpd[11557]: message repeated 2 times")
    assert (other.kind, other.queue_id, other.text) == (Kind.OTHER, None, "message repeated 2 times")


@pytest.mark.parametrize("action", list(RejectAction))
def test_every_reject_action_is_a_reject(action: RejectAction) -> None:
    r = _p(
        f"Jan 15 12:34:56 mx1 postfix/cleanup[9]: 4F2A81C0042: {action}: END-OF-MESSAGE from "
        "mail.example.org[192.0.2.10]: 5.7.1 no; from=<a@x.example> to=<b@y.example>"
    )
    assert r.kind is Kind.REJECT and r.fields["action"] == action.value


def test_lines_without_fields_share_the_read_only_empty_mapping() -> None:
    r = _p("Jan 15 12:34:56 mx1 postfix/qmgr[9]: 4F2A81C0042: removed")
    assert r.fields is NO_FIELDS


# --------------------------------------------------------------------------- time


def test_new_year_inside_one_file() -> None:
    ctx = TimeContext(UTC, datetime(2025, 1, 1, 0, 10, tzinfo=UTC))  # mtime after New Year
    old = _p("Dec 31 23:59:58 mx1 postfix/qmgr[1]: 4F2A81C0042: removed", ctx)
    new = _p("Jan  1 00:00:02 mx1 postfix/qmgr[1]: 4F2A81C0043: removed", ctx)
    assert old.time == datetime(2024, 12, 31, 23, 59, 58, tzinfo=UTC)
    assert new.time == datetime(2025, 1, 1, 0, 0, 2, tzinfo=UTC)
    assert new.time - old.time == timedelta(seconds=4)


def test_year_from_reference_with_one_day_slack() -> None:
    ctx = TimeContext(UTC, datetime(2025, 3, 10, 12, tzinfo=UTC))
    # a line stamped a little after the reference (clock skew, late mtime) stays in that year
    assert _p("Mar 11 08:00:00 mx1 postfix/qmgr[1]: 4F2A81C0042: removed", ctx).time.year == 2025
    assert _p("Mar 12 08:00:00 mx1 postfix/qmgr[1]: 4F2A81C0042: removed", ctx).time.year == 2024


def test_feb_29_goes_to_a_leap_year() -> None:
    ctx = TimeContext(UTC, datetime(2026, 6, 1, tzinfo=UTC))
    r = _p("Feb 29 10:00:00 mx1 postfix/qmgr[1]: 4F2A81C0042: removed", ctx)
    assert r.time == datetime(2024, 2, 29, 10, tzinfo=UTC)


def test_zone_applies_to_stamps_without_offset_only() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    ctx = TimeContext(berlin, datetime(2024, 7, 20, tzinfo=UTC))
    bsd = _p("Jul 15 12:00:00 mx1 postfix/qmgr[1]: 4F2A81C0042: removed", ctx)
    assert bsd.time.utcoffset() == timedelta(hours=2)  # CEST
    assert bsd.time == datetime(2024, 7, 15, 10, tzinfo=UTC)
    iso = _p("2024-07-15T12:00:00+00:00 mx1 postfix/qmgr[1]: 4F2A81C0042: removed", ctx)
    assert iso.time == datetime(2024, 7, 15, 12, tzinfo=UTC)


def test_mixed_formats_sort_into_one_timeline() -> None:
    lines = [
        b"Jan 15 12:00:03 mx1 postfix/qmgr[811]: 4F2A81C0042: removed\n",
        b"2024-01-15T12:00:01.500000+00:00 mx1 postfix/cleanup[9]: 4F2A81C0042: message-id=<a@b>\n",
        b"Jan 15 12:00:02.250000 mx1 postfix/smtp[5]: 4F2A81C0042: to=<r@x>, relay=x[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)\n",
        b"2024-01-15T13:00:00+0100 mx1 postfix/smtpd[7]: 4F2A81C0042: client=a[192.0.2.9]\n",
        b"Jan 15 12:00:01 mx1 postfix/qmgr[811]: 4F2A81C0042: from=<s@x>, size=1, nrcpt=1 (queue active)\n",
        b"2024-01-15T12:00:02Z mx1 postfix/smtp[5]: 4F2A81C0042: to=<q@x>, relay=x[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)\n",
    ]
    parser = LineParser(CTX)
    records = list(parser.parse(lines))
    assert parser.stats.parsed == len(lines)
    ordered = sorted(records, key=lambda r: r.time)
    assert [r.kind for r in ordered] == [
        Kind.CLIENT, Kind.QUEUED, Kind.MESSAGE_ID, Kind.DELIVERY, Kind.DELIVERY, Kind.REMOVED,
    ]
    assert ordered[0].time == datetime(2024, 1, 15, 12, tzinfo=UTC)


# --------------------------------------------------------------------------- LineParser


def test_line_parser_counts_damage_and_never_raises() -> None:
    lines = [
        b"Jan 15 12:34:56 mx1 postfix/qmgr[811]: 4F2A81C0042: removed\n",
        b"\n",
        b"   \r\n",
        b"Jan 15 12:34:56 mx1 postfix/qmgr[811]: 4F2A81C0043: from=<caf\xe9@example.com>, size=1, nrcpt=1 (queue active)\n",
        b"\x00\x00\x00\x00Jan 15 12:34:57 mx1 postfix/qmgr[811]: 4F2A81C0044: removed\n",
        b"Jan 15 12:34:57 mx1 postfix/smtpd[1]: connect from " + b"x" * 200_000 + b"\n",
        b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x03\x00>\x00\x01\n",
        b"\x89PNG\r\n",
        b"Jan 15 00:00:03 filter1 amavis[2027]: (2027-02) Passed CLEAN {RelayedInbound}\n",
        b"Jan 15 12:34:58 mx1 postfix/smtp[5]: 4F2A81C0045: to=<r@x>, relay=x[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queu",
    ]
    parser = LineParser(CTX, samples=1)
    records = list(parser.parse(lines))
    stats = parser.stats
    assert [r.queue_id for r in records] == [
        "4F2A81C0042", "4F2A81C0043", "4F2A81C0044", "4F2A81C0045",
    ]
    assert records[1].fields["from"] == "caf\ufffd@example.com"
    assert records[3].text == "250 2.0.0 Ok: queu"  # truncated last line, no newline
    assert stats.lines == 10
    assert stats.blank == 2
    assert stats.parsed == 4
    assert stats.bad == 5  # undecodable, NULs, 200 kB, two binary lines
    assert stats.unknown == 1
    assert stats.unknown_samples == (
        "Jan 15 00:00:03 filter1 amavis[2027]: (2027-02) Passed CLEAN {RelayedInbound}",
    )


def test_feed_matches_parse() -> None:
    lines = (LINES / "genlog-bsd.log").read_bytes().splitlines(keepends=True)
    a, b = LineParser(CTX, keep_all=True), LineParser(CTX, keep_all=True)
    fed = [r for r in map(a.feed, lines) if r is not None]
    assert fed == list(b.parse(lines))
    assert a.stats == b.stats


def test_lines_without_tracing_value_are_counted_not_returned() -> None:
    lines = [
        b"Jan 15 00:00:00 mx1 postfix/postscreen[1485]: CONNECT from [80.65.147.8]:40711 to [10.0.0.10]:25\n",
        b"Jan 15 00:00:00 mx1 postfix/smtpd[26983]: connect from unknown[45.178.152.193]\n",
        b"Jan 15 00:00:00 mx1 postfix/smtpd[26983]: warning: hostname x does not resolve to address 192.0.2.1\n",
        b"Jan 15 00:00:01 mx1 postfix/postscreen[1485]: NOQUEUE: reject: RCPT from [176.217.114.200]:34669: 550 5.7.1 Service unavailable; from=<a@b>, to=<c@d>, proto=ESMTP, helo=<x>\n",
        b"Jan 15 00:00:01 mx1 postfix/qmgr[1]: 4F2A81C0042: removed\n",
    ]
    lean = LineParser(CTX)
    assert [r.kind for r in lean.parse(lines)] == [Kind.REJECT, Kind.REMOVED]
    assert (lean.stats.parsed, lean.stats.unknown) == (5, 0)
    full = LineParser(CTX, keep_all=True)
    assert [r.kind for r in full.parse(lines)] == [
        Kind.OTHER, Kind.CONNECT, Kind.DIAGNOSTIC, Kind.REJECT, Kind.REMOVED,
    ]


# --------------------------------------------------------------------------- generated logs


@pytest.mark.parametrize("name", ["genlog-bsd.log", "genlog-rfc3339.log"])
def test_generated_fleet_lines(name: str) -> None:
    """Every Postfix line of the generator's fleet parses; only other programs are unknown."""
    lines = (LINES / name).read_bytes().splitlines(keepends=True)
    parser = LineParser(CTX, samples=1000, keep_all=True)
    records = list(parser.parse(lines))
    stats = parser.stats
    assert stats.bad == 0 and stats.blank == 0
    assert stats.parsed == len(records) == sum(1 for line in lines if b" postfix/" in line)
    for sample in stats.unknown_samples:
        assert any(f" {prog}[" in sample for prog in ("amavis", "opendkim", "dovecot")), sample
    with_id = [r for r in records if r.queue_id is not None]
    assert with_id and all(r.kind != Kind.OTHER or r.text.startswith("connect to") for r in with_id)
    if name.endswith("rfc3339.log"):
        assert any("z" in (r.queue_id or "") for r in records)  # long IDs are in the mix


@pytest.mark.parametrize("size", [1, 7, 100, 4096, 1 << 20])
def test_parse_blocks_matches_parse_wherever_blocks_are_cut(size: int) -> None:
    data = (LINES / "genlog-rfc3339.log").read_bytes() + DAMAGED
    a, b = LineParser(CTX, keep_all=True), LineParser(CTX, keep_all=True)
    by_line = list(a.parse(data.splitlines(keepends=True)))
    blocks = [data[i : i + size] for i in range(0, len(data), size)]
    assert list(b.parse_blocks(blocks)) == by_line
    assert a.stats == b.stats
    assert a.stats.bad == 5 and a.stats.blank == 2


DAMAGED = (
    b"\n   \r\n"
    b"Jan 15 12:34:56 mx1 postfix/qmgr[811]: 4F2A81C0043: from=<caf\xe9@x.example>, size=1, nrcpt=1 (queue active)\r\n"
    b"\x00\x00Jan 15 12:34:57 mx1 postfix/qmgr[811]: 4F2A81C0044: removed\n"
    + b"y" * 150_000
    + b"\n\x7fELF\x02\x01\x01\x00\x00\x00\n\x89PNG\r\n"
    b"Jan 15 12:34:58 mx1 postfix/smtp[5]: 4F2A81C0045: to=<r@x>, relay=x[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queu"
)


# --------------------------------------------------------------------------- real Postfix lab

LAB = Path(__file__).parent / "fixtures" / "lab"
LAB_LOGS = sorted((LAB / name).relative_to(LAB).as_posix() for name in LAB.glob("*/var/log/*"))
LAB_LINES = [
    (f"{path}:{n}", line)
    for path in LAB_LOGS
    for n, line in enumerate((LAB / path).read_text().splitlines(), 1)
]
# The kind each line must get, decided here from plain substrings, independently of the parser.
LAB_KINDS = [
    (": warning: ", Kind.DIAGNOSTIC),
    (", status=expired, returned to sender", Kind.EXPIRED),
    (" notification: ", Kind.NOTIFICATION),
    (": to=<", Kind.DELIVERY),
    (" (queue active)", Kind.QUEUED),
    (": client=", Kind.CLIENT),
    (": message-id=", Kind.MESSAGE_ID),
    (": removed", Kind.REMOVED),
    (": uid=", Kind.PICKUP),
    (": reject: ", Kind.REJECT),
    (": disconnect from ", Kind.DISCONNECT),
    (": connect from ", Kind.CONNECT),
]


def test_lab_logs_are_there() -> None:
    assert len(LAB_LOGS) == 4 and len(LAB_LINES) > 400


@pytest.mark.parametrize(("where", "line"), LAB_LINES, ids=[w for w, _ in LAB_LINES])
def test_lab_line(where: str, line: str) -> None:
    """Every line the real Postfix 3.7 lab chain wrote parses, with the expected kind."""
    mtimes = json.loads((LAB / "mtimes.json").read_text())
    ctx = TimeContext(UTC, datetime.fromtimestamp(mtimes[where.split(":")[0]], UTC))
    parser = LineParser(ctx, keep_all=True)
    (record,) = parser.parse([line.encode() + b"\n"])
    assert (parser.stats.unknown, parser.stats.bad) == (0, 0)
    expected = next((kind for text, kind in LAB_KINDS if text in line), Kind.OTHER)
    assert record.kind == expected
    assert record.time.year == 2026 and record.time.tzinfo is not None
    if expected in (Kind.DELIVERY, Kind.QUEUED, Kind.CLIENT, Kind.REMOVED, Kind.EXPIRED):
        assert record.queue_id is not None and record.queue_id in line
