"""Lines real servers write that the lab's own Postfix set-up does not: before-queue proxy
refusals, VRFY refusals without a sender, Zimbra's empty syslog_name.

Each line is in Postfix's own format (smtpd.c's proxy-accept/proxy-reject and log_whatsup(),
postfix-script through postlog); the tests follow it from parse through assemble to the rows
search and summary select.
"""

from __future__ import annotations

from datetime import UTC, datetime

from collector.logs.assemble import assemble
from collector.logs.parse import LineParser, TimeContext, parse_line
from collector.logs.select import reject_selected, rows_of_group, select_rows, tally
from collector.models import HostLog, Kind, Query, Status

CTX = TimeContext(UTC, datetime(2026, 1, 20, tzinfo=UTC))


def _log(*lines: str, host: str = "mx1") -> HostLog:
    parser = LineParser(CTX)
    records = list(parser.parse(line.encode() + b"\n" for line in lines))
    assert parser.stats.unknown == 0, parser.stats.unknown_samples
    return assemble(host, records)


# ------------------------------------------------------------- before-queue proxy refusals

# smtpd with smtpd_proxy_filter: the filter refused the message at the end of DATA. smtpd
# logs it without a queue ID (it never opened a queue file).
PROXY_REJECT = (
    "Jan 15 10:00:00 mx1 postfix/smtpd[2001]: proxy-reject: END-OF-MESSAGE: "
    "554 5.7.1 Rejected: spam detected (score 12.3); "
    "from=<spam@bad.example> to=<alice@example.com> proto=ESMTP helo=<mail.bad.example>"
)
PROXY_REJECT_ID = (
    "Jan 15 10:00:01 mx1 postfix/smtpd[2002]: 4F2A81C0042: proxy-reject: END-OF-MESSAGE: "
    "554 5.7.1 Rejected: virus found; "
    "from=<v@bad.example> to=<bob@example.com> proto=ESMTP helo=<pc7>"
)
PROXY_REJECT_NOQUEUE = (
    "Jan 15 10:00:02 mx1 postfix/smtpd[2003]: NOQUEUE: proxy-reject: END-OF-MESSAGE: "
    "451 4.3.0 Error: queue file write error; "
    "from=<n@exemple.org> to=<d@exemple.fr> proto=ESMTP helo=<h>"
)
PROXY_ACCEPT = (
    "Jan 15 10:00:03 mx1 postfix/smtpd[2004]: proxy-accept: END-OF-MESSAGE: "
    "250 2.0.0 Ok: queued as 4TBq3k1XYZz9sQ; "
    "from=<a@x.example> to=<b@example.com> proto=ESMTP helo=<h>"
)


def test_proxy_reject_is_a_reject_like_smtpds() -> None:
    r = parse_line(PROXY_REJECT, CTX)
    assert r is not None and r.kind is Kind.REJECT
    assert r.queue_id is None
    assert r.fields["action"] == "proxy-reject"
    assert r.fields["stage"] == "END-OF-MESSAGE"
    assert r.fields["from"] == "spam@bad.example"
    assert r.fields["to"] == "alice@example.com"
    assert r.fields["helo"] == "mail.bad.example"
    assert r.text == "554 5.7.1 Rejected: spam detected (score 12.3)"


def test_proxy_reject_row_found_by_from_and_to_and_counted() -> None:
    log = _log(PROXY_REJECT)
    (rej,) = log.rejects
    assert rej.sender == "spam@bad.example" and rej.recipient == "alice@example.com"
    assert rej.stage == "END-OF-MESSAGE"
    assert rej.response == "554 5.7.1 Rejected: spam detected (score 12.3)"
    for query in (
        Query(senders=("spam@bad.example",)),
        Query(recipients=("ALICE@example.com",)),
        Query(statuses=("rejected",)),
    ):
        (row,) = select_rows([log], query)
        assert row.status is Status.REJECTED
        assert row.dsn == "5.7.1"
        assert row.response == rej.response
        assert reject_selected(rej, query)
    assert select_rows([log], Query(recipients=("bob@example.com",))) == []


def test_proxy_reject_with_a_queue_id_is_the_groups_reject() -> None:
    log = _log(PROXY_REJECT_ID)
    (group,) = log.groups
    assert group.queue_id == "4F2A81C0042"
    (rej,) = group.rejects
    assert (rej.sender, rej.recipient) == ("v@bad.example", "bob@example.com")
    (row,) = rows_of_group(group)
    assert row.status is Status.REJECTED and row.response == "554 5.7.1 Rejected: virus found"
    counts: dict[str, int] = {}
    tally(group, counts, Query())
    assert counts[Status.REJECTED] == 1
    (found,) = select_rows([log], Query(recipients=("bob@example.com",)))
    assert found.queue_id == "4F2A81C0042"


def test_proxy_reject_after_noqueue() -> None:
    (rej,) = _log(PROXY_REJECT_NOQUEUE).rejects
    assert rej.queue_id is None
    assert (rej.sender, rej.recipient) == ("n@exemple.org", "d@exemple.fr")
    assert rej.response == "451 4.3.0 Error: queue file write error"


def test_proxy_reject_with_an_empty_reply() -> None:
    line = (
        "Jan 15 10:00:04 mx1 postfix/smtpd[2005]: proxy-reject: END-OF-MESSAGE: ; "
        "from=<user1@test.example.com> to=<user2@example2.com> proto=ESMTP helo=<[192.168.0.16]>"
    )
    (rej,) = _log(line).rejects
    assert (rej.sender, rej.recipient, rej.response) == (
        "user1@test.example.com", "user2@example2.com", "",
    )


def test_proxy_accept_is_understood_but_not_a_reject() -> None:
    r = parse_line(PROXY_ACCEPT, CTX)
    assert r is not None and r.kind is not Kind.REJECT
    assert r.child == "4TBq3k1XYZz9sQ"
    log = _log(PROXY_ACCEPT)
    assert log.rejects == () and log.groups == ()
    assert select_rows([log], Query(statuses=("rejected",))) == []


# ------------------------------------------------------------- refusals without from=


# VRFY before any MAIL FROM: log_whatsup() has no sender, so the trailer starts at to=.
VRFY_REJECT = (
    "Jan 15 10:01:00 mx1 postfix/smtpd[2101]: NOQUEUE: reject: VRFY from "
    "scanner.example[192.0.2.4]: 550 5.1.1 <x@example.com>: Recipient address rejected: "
    "User unknown in local recipient table; to=<x@example.com> proto=SMTP helo=<me>"
)


def test_vrfy_reject_keeps_its_recipient() -> None:
    log = _log(VRFY_REJECT)
    (rej,) = log.rejects
    assert rej.stage == "VRFY" and rej.sender is None
    assert rej.recipient == "x@example.com"
    assert rej.client == "scanner.example[192.0.2.4]"
    (row,) = select_rows([log], Query(recipients=("x@example.com",)))
    assert row.status is Status.REJECTED and row.recipient == "x@example.com"
    assert row.dsn == "5.1.1"
    assert select_rows([log], Query(senders=("x@example.com",))) == []


# ------------------------------------------------------------- empty syslog_name (Zimbra)


def test_empty_syslog_name_is_a_postfix_line() -> None:
    line = "Jan 15 10:00:00 sm02 /postfix-script[115413]: starting the Postfix mail system"
    r = parse_line(line, CTX)
    assert r is not None
    assert (r.host, r.instance, r.program, r.pid) == ("sm02", "", "postfix-script", 115413)
    parser = LineParser(CTX)
    assert list(parser.parse([line.encode()])) == []
    assert parser.stats.parsed == 1 and parser.stats.unknown == 0


def test_empty_syslog_name_needs_a_postfix_program() -> None:
    for line in (
        "Jan 15 10:00:00 sm02 /usr/sbin/cron[1]: (root) CMD (true)",
        "Jan 15 10:00:00 sm02 /cron[1]: (root) CMD (true)",
        "Jan 15 10:00:00 sm02 /[1]: x",
    ):
        assert parse_line(line, CTX) is None, line
