"""query: --since/--until values and the selectors that pick groups and rows (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from collector.cli.options import parse_when
from collector.errors import UsageError
from collector.logs.select import (
    group_matches,
    group_selected,
    normalize_message_id,
    reject_matches,
    row_matches,
    rows_of_group,
    select_rows,
    tally,
)
from collector.models import (
    Attempt,
    HostLog,
    Query,
    QueueGroup,
    Recipient,
    Reject,
    Row,
    Status,
)

# A fixed "now" in a zone that is not UTC, so a value without an offset shows which zone it got.
PLUS2 = timezone(timedelta(hours=2))
NOW = datetime(2026, 11, 29, 17, 25, 0, tzinfo=PLUS2)


# --------------------------------------------------------------------------- parse_when


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28", datetime(2026, 11, 28, 0, 0, tzinfo=PLUS2)),
        ("2026-11-28T10:30", datetime(2026, 11, 28, 10, 30, tzinfo=PLUS2)),
        ("2026-11-28 10:30:15", datetime(2026, 11, 28, 10, 30, 15, tzinfo=PLUS2)),
        ("2026-11-28T10:30:15+00:00", datetime(2026, 11, 28, 10, 30, 15, tzinfo=UTC)),
        ("2026-11-28T10:30:15Z", datetime(2026, 11, 28, 10, 30, 15, tzinfo=UTC)),
        (
            "2026-11-28T10:30:15-05:00",
            datetime(2026, 11, 28, 10, 30, 15, tzinfo=timezone(timedelta(hours=-5))),
        ),
        ("  2026-11-28  ", datetime(2026, 11, 28, 0, 0, tzinfo=PLUS2)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("3d", NOW - timedelta(days=3)),
        ("1w", NOW - timedelta(weeks=1)),
        ("45s", NOW - timedelta(seconds=45)),
        ("2H", NOW - timedelta(hours=2)),
        ("today", datetime(2026, 11, 29, 0, 0, tzinfo=PLUS2)),
        ("Today", datetime(2026, 11, 29, 0, 0, tzinfo=PLUS2)),
        ("yesterday", datetime(2026, 11, 28, 0, 0, tzinfo=PLUS2)),
        ("now", NOW),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    got = parse_when(text, NOW)
    assert got == expected
    assert got.utcoffset() == expected.utcoffset()


def test_parse_when_yesterday_across_a_month() -> None:
    now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    assert parse_when("yesterday", now) == datetime(2026, 11, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    ["", "soon", "2h ago", "-2h", "2x", "h", "2026-13-01", "2026-11-31", "29/11/2026", "12:00pm"],
)
def test_parse_when_rejects_bad_values(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_when(text, NOW)
    assert "cannot read time" in str(info.value)


# --------------------------------------------------------------------------- hand-built groups

T0 = datetime(2026, 11, 29, 17, 24, 6, tzinfo=UTC)


def _attempt(status: str, seconds: int = 0, **kw: object) -> Attempt:
    return Attempt(time=T0 + timedelta(seconds=seconds), program="smtp", status=status, **kw)  # type: ignore[arg-type]


def _group(
    queue_id: str = "1462A168101",
    *,
    host: str = "mx1",
    sender: str | None = "alice@example.test",
    recipients: tuple[Recipient, ...] = (),
    client: str | None = "ws1.example.test[127.0.0.30]",
    orig_client: str | None = None,
    message_id: str | None = "<multi_split.20261129172326@lab.example.test>",
    rejects: tuple[Reject, ...] = (),
    discarded: bool = False,
    expired: bool = False,
    first: int = 0,
    last: int = 1,
) -> QueueGroup:
    return QueueGroup(
        host=host,
        instance="postfix",
        queue_id=queue_id,
        first_time=T0 + timedelta(seconds=first),
        last_time=T0 + timedelta(seconds=last),
        client=client,
        orig_client=orig_client,
        sender=sender,
        message_id=message_id,
        recipients=recipients,
        rejects=rejects,
        discarded=discarded,
        expired=expired,
    )


def _rcpt(address: str, *attempts: Attempt, orig: str | None = None) -> Recipient:
    return Recipient(address=address, orig_address=orig, attempts=attempts)


SPLIT = _group(
    recipients=(
        _rcpt("bob@example.test", _attempt("sent", 0, relay="filter1.example.test[127.0.0.22]:2525",
                                            dsn="2.0.0", delay=0.01)),
        _rcpt(
            "dave@example.net",
            _attempt("deferred", 0, dsn="4.4.1"),
            _attempt("bounced", 60, dsn="5.4.1", response="host said 550"),
        ),
    )
)
FORWARD = _group(
    "4jcvCB6wXpzC61K",
    host="mbox1",
    sender="sender@example.org",
    client=None,
    message_id="<alias_forward.20261129172326@lab.example.test>",
    recipients=(_rcpt("bob@example.test", _attempt("sent", 2), orig="fwd@mbox1.example.test"),),
    first=2,
    last=2,
)
REINJECTED = _group(
    "162DB168108",
    host="filter1",
    client="filter1.example.test[127.0.0.22]",
    orig_client="ws1.example.test[127.0.0.30]",
    recipients=(_rcpt("carol@example.test", _attempt("sent", 1)),),
)
REJECT_WITH_ID = Reject(
    time=T0,
    host="mx1",
    program="smtpd",
    queue_id="8C712168113",
    stage="RCPT",
    client="ext-client.example.org[127.0.0.50]",
    sender="sender@example.org",
    recipient="blocked@example.test",
    response="554 5.7.1 <blocked@example.test>: Recipient address rejected: "
    "Mailbox closed by policy",
)
PARTLY_REJECTED = _group(
    "8C712168113",
    sender="sender@example.org",
    client="ext-client.example.org[127.0.0.50]",
    message_id="<reject_with_queue_id.20261129172326@lab.example.test>",
    recipients=(_rcpt("alice@example.test", _attempt("sent", 0)),),
    rejects=(REJECT_WITH_ID,),
)
NOQUEUE = Reject(
    time=T0 + timedelta(seconds=3),
    host="mx1",
    program="smtpd",
    queue_id=None,
    stage="RCPT",
    client="unknown[127.0.0.66]",
    sender="spam@example.org",
    recipient="alice@example.test",
    response="554 5.7.1 <unknown[127.0.0.66]>: Client host rejected: Blocked by lab client policy",
)


@pytest.mark.parametrize(
    ("query", "group", "expected"),
    [
        (Query(), SPLIT, True),
        (Query(senders=("alice@example.test",)), SPLIT, True),
        (Query(senders=("ALICE@Example.TEST",)), SPLIT, True),
        (Query(senders=("bob@example.test",)), SPLIT, False),
        (Query(senders=("nobody@x", "alice@example.test")), SPLIT, True),  # OR within one
        (Query(message_ids=("<multi_split.20261129172326@lab.example.test>",)), SPLIT, True),
        (Query(message_ids=("multi_split.20261129172326@lab.example.test",)), SPLIT, True),
        (Query(message_ids=("<other@lab.example.test>",)), SPLIT, False),
        (Query(queue_ids=("1462A168101",)), SPLIT, True),
        (Query(queue_ids=("1462A16810",)), SPLIT, False),  # a prefix is not the ID
        (Query(clients=("ws1.example.test",)), SPLIT, True),
        (Query(clients=("127.0.0.30",)), SPLIT, True),
        (Query(clients=("WS1.example.TEST",)), SPLIT, True),
        (Query(clients=("ws1.example.test[127.0.0.30]",)), SPLIT, True),
        (Query(clients=("127.0.0.3",)), SPLIT, False),  # no substring match on an IP
        (Query(clients=("127.0.0.30",)), FORWARD, False),  # no client at all
        (Query(clients=("ws1.example.test",)), REINJECTED, True),  # orig_client counts
        (Query(clients=("filter1.example.test",)), REINJECTED, True),
        # AND across options
        (Query(senders=("alice@example.test",), clients=("127.0.0.50",)), SPLIT, False),
        (Query(senders=("alice@example.test",), queue_ids=("1462A168101",)), SPLIT, True),
        # trace terms: queue ID, message-id, sender, recipient, orig_to, rejected recipient
        (Query(terms=("1462A168101",)), SPLIT, True),
        (Query(terms=("<multi_split.20261129172326@lab.example.test>",)), SPLIT, True),
        (Query(terms=("Alice@Example.test",)), SPLIT, True),
        (Query(terms=("dave@example.net",)), SPLIT, True),
        (Query(terms=("fwd@mbox1.example.test",)), FORWARD, True),
        (Query(terms=("blocked@example.test",)), PARTLY_REJECTED, True),
        (Query(terms=("zed@example.test",)), SPLIT, False),
    ],
)
def test_group_matches(query: Query, group: QueueGroup, expected: bool) -> None:
    assert group_matches(group, query) is expected


@pytest.mark.parametrize(
    ("client", "wanted", "expected"),
    [
        ("mx.example.net[2001:db8::7]:25", "2001:db8::7", True),  # port and IPv6 address
        ("mx.example.net[2001:db8::7]:25", "mx.example.net", True),
        ("mx.example.net[2001:db8::7]:25", "2001:db8::", False),
        ("unknown[192.0.2.9]", "192.0.2.9", True),
        ("local", "local", True),  # a bare service name
    ],
)
def test_client_selector_reads_the_peer(client: str, wanted: str, expected: bool) -> None:
    assert group_matches(_group(client=client), Query(clients=(wanted,))) is expected


FWD = "fwd@mbox1.example.test"


def _row(**kw: object) -> Row:
    base: dict[str, object] = {
        "time": T0,
        "host": "mx1",
        "queue_id": "1462A168101",
        "sender": "alice@example.test",
        "recipient": "bob@example.test",
        "orig_recipient": None,
        "status": "sent",
        "dsn": "2.0.0",
        "relay": None,
        "delay": None,
        "message_id": None,
        "response": "",
        "client": None,
    }
    base.update(kw)
    return Row(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "row", "expected"),
    [
        (Query(recipients=("bob@example.test",)), _row(), True),
        (Query(recipients=("BOB@EXAMPLE.test",)), _row(), True),
        (Query(recipients=("carol@example.test",)), _row(), False),
        (Query(recipients=("bob@example",)), _row(), False),  # no substring match
        (Query(recipients=("fwd@mbox1.example.test",)), _row(orig_recipient=FWD), True),
        (Query(recipients=("Fwd@MBOX1.example.test",)), _row(orig_recipient=FWD), True),
        (Query(recipients=("bob@example.test",)), _row(recipient=None), False),
        (Query(statuses=("sent",)), _row(), True),
        (Query(statuses=("bounced", "deferred")), _row(), False),
        (Query(statuses=("bounced", "sent")), _row(), True),
        (Query(since=T0), _row(), True),  # bounds are inclusive
        (Query(until=T0), _row(), True),
        (Query(since=T0 + timedelta(seconds=1)), _row(), False),
        (Query(until=T0 - timedelta(seconds=1)), _row(), False),
        # the same instant in another zone
        (Query(since=datetime(2026, 11, 29, 19, 24, 6, tzinfo=PLUS2)), _row(), True),
        (Query(since=datetime(2026, 11, 29, 19, 24, 7, tzinfo=PLUS2)), _row(), False),
        (Query(senders=("nobody@x",)), _row(), True),  # group-level: not checked on rows
    ],
)
def test_row_matches(query: Query, row: Row, expected: bool) -> None:
    assert row_matches(row, query) is expected


def test_rows_of_group_one_per_recipient_with_last_attempt() -> None:
    rows = rows_of_group(SPLIT)
    assert [(r.recipient, r.status, r.dsn) for r in rows] == [
        ("bob@example.test", "sent", "2.0.0"),
        ("dave@example.net", "bounced", "5.4.1"),
    ]
    dave = rows[1]
    assert dave.time == T0 + timedelta(seconds=60)
    assert dave.response == "host said 550"
    assert dave.queue_id == "1462A168101" and dave.host == "mx1"
    assert dave.message_id == SPLIT.message_id and dave.client == SPLIT.client


def test_rows_of_group_reject_with_queue_id_is_a_rejected_row() -> None:
    rows = rows_of_group(PARTLY_REJECTED)
    assert [(r.recipient, r.status, r.queue_id, r.dsn) for r in rows] == [
        ("alice@example.test", "sent", "8C712168113", None),
        ("blocked@example.test", "rejected", "8C712168113", "5.7.1"),
    ]
    assert rows[1].message_id == PARTLY_REJECTED.message_id


@pytest.mark.parametrize(
    ("group", "status"),
    [
        (_group(discarded=True), "discarded"),
        (_group(expired=True), "expired"),
        (_group(), "unknown"),
    ],
)
def test_rows_of_group_without_recipients(group: QueueGroup, status: str) -> None:
    (row,) = rows_of_group(group)
    assert row.status == status and type(row.status) is Status
    assert row.recipient is None
    assert row.time == group.first_time


def test_noqueue_reject_is_a_row_with_status_rejected() -> None:
    log = HostLog("mx1", (), (NOQUEUE,))
    (row,) = select_rows([log], Query(recipients=("alice@example.test",)))
    assert row.status == "rejected" and row.status is Status.REJECTED
    assert row.queue_id is None
    assert row.sender == "spam@example.org"
    assert row.client == "unknown[127.0.0.66]"
    assert row.dsn == "5.7.1"
    assert row.message_id is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query(), True),
        (Query(statuses=("rejected",)), True),
        (Query(statuses=("sent",)), False),
        (Query(senders=("SPAM@example.org",)), True),
        (Query(senders=("alice@example.test",)), False),
        (Query(clients=("127.0.0.66",)), True),
        (Query(clients=("unknown",)), True),
        (Query(clients=("127.0.0.50",)), False),
        (Query(recipients=("alice@example.test",)), True),
        (Query(recipients=("bob@example.test",)), False),
        (Query(terms=("alice@example.test",)), True),
        (Query(terms=("spam@example.org",)), True),
        (Query(terms=("other@example.org",)), False),
        # a NOQUEUE reject has neither a message-id nor a queue ID
        (Query(message_ids=("<client_reject.20261129172326@lab.example.test>",)), False),
        (Query(queue_ids=("NOQUEUE",)), False),
        (Query(since=T0 + timedelta(seconds=4)), False),
        (Query(until=T0 + timedelta(seconds=3)), True),
    ],
)
def test_noqueue_reject_selection(query: Query, expected: bool) -> None:
    rows = select_rows([HostLog("mx1", (), (NOQUEUE,))], query)
    assert bool(rows) is expected


def test_reject_matches_checks_what_a_reject_carries() -> None:
    assert reject_matches(NOQUEUE, Query(senders=("spam@example.org",)))
    assert not reject_matches(NOQUEUE, Query(message_ids=("<x@y>",)))
    # recipient, status and time are row-level: left to row_matches
    assert reject_matches(NOQUEUE, Query(recipients=("bob@example.test",)))


def test_select_rows_recipient_and_status_filter_rows_not_groups() -> None:
    log = HostLog("mx1", (SPLIT,), ())
    rows = select_rows([log], Query(recipients=("dave@example.net",)))
    assert [r.recipient for r in rows] == ["dave@example.net"]
    rows = select_rows([log], Query(statuses=("sent",)))
    assert [r.recipient for r in rows] == ["bob@example.test"]
    rows = select_rows([log], Query(statuses=("rejected",)))
    assert rows == []


def test_select_rows_status_rejected_finds_both_kinds_of_reject() -> None:
    logs = [HostLog("mx1", (SPLIT, PARTLY_REJECTED), (NOQUEUE,))]
    rows = select_rows(logs, Query(statuses=("rejected",)))
    assert [(r.queue_id, r.recipient) for r in rows] == [
        ("8C712168113", "blocked@example.test"),
        (None, "alice@example.test"),
    ]


def test_select_rows_time_order_then_inventory_order() -> None:
    late = _group("AAAA1", host="mx1", recipients=(_rcpt("x@example.test", _attempt("sent", 5)),))
    early_filter = _group(
        "BBBB1", host="filter1", recipients=(_rcpt("x@example.test", _attempt("sent", 1)),)
    )
    same_second_mx = _group(
        "CCCC1", host="mx1", recipients=(_rcpt("x@example.test", _attempt("sent", 1)),)
    )
    logs = [HostLog("mx1", (late, same_second_mx), ()), HostLog("filter1", (early_filter,), ())]
    rows = select_rows(logs, Query(recipients=("x@example.test",)))
    # 17:24:07 on mx1 (first in the inventory) before filter1, then 17:24:11
    assert [(r.host, r.queue_id) for r in rows] == [
        ("mx1", "CCCC1"),
        ("filter1", "BBBB1"),
        ("mx1", "AAAA1"),
    ]


def test_select_rows_terms() -> None:
    logs = [HostLog("mbox1", (FORWARD,), ()), HostLog("mx1", (SPLIT,), (NOQUEUE,))]
    rows = select_rows(logs, Query(terms=("fwd@mbox1.example.test",)))
    assert [(r.host, r.recipient, r.orig_recipient) for r in rows] == [
        ("mbox1", "bob@example.test", "fwd@mbox1.example.test")
    ]
    rows = select_rows(logs, Query(terms=("alice@example.test",)))
    # the sender of SPLIT (two rows) and the NOQUEUE reject's recipient
    assert sorted((r.host, r.queue_id or "-", r.recipient) for r in rows) == [
        ("mx1", "-", "alice@example.test"),
        ("mx1", "1462A168101", "bob@example.test"),
        ("mx1", "1462A168101", "dave@example.net"),
    ]


def test_group_selected_needs_a_matching_row() -> None:
    assert group_selected(SPLIT, Query(recipients=("bob@example.test",)))
    assert not group_selected(SPLIT, Query(recipients=("carol@example.test",)))
    assert not group_selected(SPLIT, Query(senders=("carol@example.test",)))


def test_tally_counts_recipients_by_last_status() -> None:
    counts: dict[str, int] = {}
    tally(SPLIT, counts, Query())
    tally(PARTLY_REJECTED, counts, Query())
    tally(_group("D1", discarded=True), counts, Query())
    assert counts == {"messages": 3, "sent": 2, "bounced": 1, "rejected": 1, "discarded": 1}
    outside: dict[str, int] = {}
    tally(SPLIT, outside, Query(since=T0 + timedelta(hours=1)))
    tally(SPLIT, outside, Query(until=T0 - timedelta(hours=1)))
    assert outside == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@b>", "a@b"),
        ("a@b", "a@b"),
        ("  <a@b> ", "a@b"),
        ("<a@b", "<a@b"),
    ],
)
def test_normalize_message_id(value: str, expected: str) -> None:
    assert normalize_message_id(value) == expected


def test_query_empty() -> None:
    assert Query().empty
    assert Query(since=T0).empty  # a time window alone selects no fixed string
    assert not Query(statuses=("sent",)).empty
    assert not Query(terms=("x",)).empty
