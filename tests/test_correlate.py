"""Correlation of hand-built queue groups (values as Postfix 3.7 logs them) into traces."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from collector.models import (
    Attempt,
    BackwardHint,
    Child,
    GroupRef,
    Host,
    HostLog,
    Kind,
    QueueGroup,
    Recipient,
    Record,
    RefusalHint,
    Reject,
    Trace,
)
from collector.trace.correlate import (
    HostIndex,
    Leads,
    backward_hints,
    build_host_index,
    correlate,
    leads,
    link_groups,
    pending_refs,
    refused_by,
    select_traces,
)

T0 = datetime(2024, 1, 15, 12, 34, 56, tzinfo=UTC)
CLIENT = "mail.example.org[192.0.2.10]"
MSGID = "<20240115123456.4F2A81C0042@mail.example.org>"
SENDER = "alice@example.org"

HOSTS = (
    Host("mx1", address="127.0.0.21", aliases=("mx1.example.test",)),
    Host("mx2", address="127.0.0.22", aliases=("mx2.example.test",)),
    Host("mx3", address="127.0.0.23", aliases=("mx3.example.test",)),
)
INDEX = build_host_index(HOSTS)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def attempt(
    at: float,
    *,
    relay: str,
    response: str,
    status: str = "sent",
    program: str = "smtp",
    dsn: str = "2.0.0",
    delays: str | None = None,
    next_queue_id: str | None = None,
) -> Attempt:
    """One delivery-status line; a test says only what it is about."""
    return Attempt(
        time=t(at),
        program=program,
        status=status,
        relay=relay,
        delays=delays,
        dsn=dsn,
        response=response,
        next_queue_id=next_queue_id,
    )


def reject(
    at: float,
    *,
    host: str,
    client: str,
    recipient: str,
    response: str,
    queue_id: str | None = None,
    program: str = "smtpd",
    stage: str = "RCPT",
    sender: str = SENDER,
) -> Reject:
    """A refusal by smtpd (NOQUEUE unless a queue ID is given) or by cleanup."""
    return Reject(
        time=t(at),
        host=host,
        program=program,
        queue_id=queue_id,
        stage=stage,
        client=client,
        sender=sender,
        recipient=recipient,
        response=response,
    )


def sent_to(host: str, next_id: str | None, at: float, port: int = 2525) -> Attempt:
    addr = {"mx1": "127.0.0.21", "mx2": "127.0.0.22", "mx3": "127.0.0.23"}[host]
    return attempt(
        at,
        relay=f"{host}.example.test[{addr}]:{port}",
        response=f"250 2.0.0 Ok: queued as {next_id}" if next_id else "250 2.0.0 Ok",
        delays="0.05/0.01/0.06/0.08",
        next_queue_id=next_id,
    )


def mailbox(at: float) -> Attempt:
    return attempt(
        at,
        relay="local",
        response="delivered to mailbox",
        program="local",
        delays="0.01/0.04/0/0.01",
    )


def spamassassin(at: float) -> Attempt:
    """A pipe content filter that re-submits through sendmail: no ID links the copies."""
    return attempt(
        at, relay="spamassassin", response="delivered via spamassassin service", program="pipe"
    )


def rcpt(address: str, *attempts: Attempt, orig: str | None = None) -> Recipient:
    return Recipient(address, orig, attempts)


def group(host: str, qid: str, first: float, *recipients: Recipient, **kw: object) -> QueueGroup:
    values: dict[str, object] = {
        "host": host,
        "instance": "postfix",
        "queue_id": qid,
        "first_time": t(first),
        "last_time": t(first + 2),
        "origin": "smtp",
        "sender": SENDER,
        "size": 1234,
        "nrcpt": len(recipients),
        "message_id": MSGID,
        "recipients": recipients,
        "removed": True,
    }
    values.update(kw)
    return QueueGroup(**values)  # type: ignore[arg-type]


def logs_of(*groups: QueueGroup, rejects: tuple[Reject, ...] = ()) -> list[HostLog]:
    hosts = sorted({g.host for g in groups} | {r.host for r in rejects})
    return [
        HostLog(
            h, tuple(g for g in groups if g.host == h), tuple(r for r in rejects if r.host == h)
        )
        for h in hosts
    ]


def all_groups(traces: list[Trace]) -> Iterator[tuple[str, str, datetime]]:
    for trace in traces:
        for hop in trace.hops:
            yield (hop.host, hop.queue_id, hop.time)
        yield from all_groups(list(trace.notifications))


def assert_partition(logs: list[HostLog], traces: list[Trace]) -> None:
    """Every group of the input is in exactly one trace."""
    expected = sorted((g.host, g.queue_id, g.first_time) for log in logs for g in log.groups)
    expected += [(r.host, "NOQUEUE", r.time) for log in logs for r in log.rejects]
    assert sorted(all_groups(traces)) == sorted(expected)


def refs(*pairs: tuple[str, str]) -> tuple[GroupRef, ...]:
    return tuple(GroupRef(h, q) for h, q in pairs)


def three_hop() -> list[HostLog]:
    return logs_of(
        group(
            "mx1",
            "4F2A81C0042",
            0,
            rcpt("bob@example.net", sent_to("mx2", "8B1C23D4E5", 1)),
            client=CLIENT,
            client_ip="192.0.2.10",
        ),
        group(
            "mx2",
            "8B1C23D4E5",
            0.8,
            rcpt("bob@example.net", sent_to("mx3", "A9E8F7C6B5", 1.5)),
            client="mx1.example.test[127.0.0.21]",
            client_ip="127.0.0.21",
        ),
        group(
            "mx3",
            "A9E8F7C6B5",
            1.3,
            rcpt("bob@example.net", mailbox(1.6)),
            client="mx2.example.test[127.0.0.22]",
            client_ip="127.0.0.22",
        ),
    )


# --------------------------------------------------------------------------- host index


def test_host_index_resolves_names_addresses_aliases_and_learned_names() -> None:
    logs = [
        HostLog(
            "mx1",
            (
                group(
                    "mx1",
                    "4F2A81C0042",
                    0,
                    message_id="<4F2A81C0042@smtp1.corp.test>",
                    records=(
                        Record(
                            time=t(0),
                            host="smtp1",  # the envelope's name, not the inventory's
                            instance="postfix",
                            service="",
                            program="cleanup",
                            pid=1,
                            queue_id="4F2A81C0042",
                            kind=Kind.MESSAGE_ID,
                            fields={},
                        ),
                    ),
                ),
            ),
            (),
        ),
    ]
    index = build_host_index(HOSTS + (Host("db", address="127.0.0.21"),), logs)
    assert index.resolve("MX2.example.test.") == "mx2"
    assert index.resolve("127.0.0.23") == "mx3"
    assert index.resolve("smtp1") == "mx1"  # the host's name in its own log envelope
    assert index.resolve("smtp1.corp.test") == "mx1"  # from a Message-ID cleanup added
    assert index.resolve("127.0.0.21") is None  # two inventory hosts share it: ambiguous
    assert index.resolve("mx.example.net") is None


# --------------------------------------------------------------------------- chains


def test_three_hosts_one_trace_with_confirmed_links() -> None:
    logs = three_hop()
    traces = correlate(logs, INDEX)
    assert len(traces) == 1
    (trace,) = traces
    assert [(h.host, h.queue_id, h.via) for h in trace.hops] == [
        ("mx1", "4F2A81C0042", "entry"),
        ("mx2", "8B1C23D4E5", "smtp"),
        ("mx3", "A9E8F7C6B5", "smtp"),
    ]
    assert trace.hops[1].parent == GroupRef("mx1", "4F2A81C0042")
    assert trace.hops[1].evidence == (
        "queued-as",
        "client=mx1.example.test[127.0.0.21]",
        "message-id",
        "time-0.2s",
    )
    (out,) = trace.recipients
    assert (out.address, out.status, out.outcome, out.host) == (
        "bob@example.net",
        "sent",
        "delivered",
        "mx3",
    )
    assert out.path == refs(("mx1", "4F2A81C0042"), ("mx2", "8B1C23D4E5"), ("mx3", "A9E8F7C6B5"))
    assert (trace.message_id, trace.sender, trace.size) == (MSGID, SENDER, 1234)
    assert (trace.first_seen, trace.last_seen) == (t(0), t(3.3))
    assert trace.notes == ()
    assert {link.strength for link in link_groups(logs, INDEX)} == {"strong"}
    assert pending_refs(logs, INDEX) == set()
    assert backward_hints(logs, INDEX) == []


def test_each_hop_knows_its_parent_and_the_delivery_that_handed_it_on() -> None:
    logs = three_hop()
    mx1, mx2, mx3 = (log.groups[0] for log in logs)
    (trace,) = correlate(logs, INDEX)
    assert [h.parent_index for h in trace.hops] == [None, 0, 1]
    assert [h.handoff for h in trace.hops] == [
        None,
        mx1.recipients[0].last,
        mx2.recipients[0].last,
    ]
    (out,) = trace.recipients
    assert (out.hop_index, out.attempt) == (2, mx3.recipients[0].last)
    assert trace.anchor is None


def test_long_queue_ids_link_like_short_ones() -> None:
    logs = logs_of(
        group(
            "mx1",
            "3Pt2mN2VXxznjll",
            0,
            rcpt("bob@example.net", sent_to("mx2", "4TBq3k1XYZz9sQ", 1)),
            client=CLIENT,
        ),
        group(
            "mx2",
            "4TBq3k1XYZz9sQ",
            0.9,
            rcpt("bob@example.net", mailbox(1.2)),
            client="mx1.example.test[127.0.0.21]",
        ),
    )
    (trace,) = correlate(logs, INDEX)
    assert trace.recipients[0].path == refs(("mx1", "3Pt2mN2VXxznjll"), ("mx2", "4TBq3k1XYZz9sQ"))


def test_reinjection_by_loopback_queued_as_and_orig_queue_id() -> None:
    filt = attempt(
        1,
        relay="127.0.0.1[127.0.0.1]:10024",
        response="250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as 5D7E61C0099",
        next_queue_id="5D7E61C0099",
    )
    logs = logs_of(
        group("mx1", "4F2A81C0042", 0, rcpt("bob@example.net", filt), client=CLIENT),
        group(
            "mx1",
            "5D7E61C0099",
            0.9,
            rcpt("bob@example.net", sent_to("mx2", "8B1C23D4E5", 2)),
            client="localhost[127.0.0.1]",
            orig_queue_id="4F2A81C0042",
            orig_client=CLIENT,
        ),
        group(
            "mx2",
            "8B1C23D4E5",
            1.9,
            rcpt("bob@example.net", mailbox(2.2)),
            client="mx1.example.test[127.0.0.21]",
        ),
    )
    (trace,) = correlate(logs, INDEX)
    hop = trace.hops[1]
    assert (hop.host, hop.queue_id, hop.via) == ("mx1", "5D7E61C0099", "reinjection")
    assert "queued-as" in hop.evidence and "orig_queue_id" in hop.evidence
    (out,) = trace.recipients
    assert out.outcome == "delivered"
    assert out.path == refs(("mx1", "4F2A81C0042"), ("mx1", "5D7E61C0099"), ("mx2", "8B1C23D4E5"))


def test_reinjection_by_orig_queue_id_alone() -> None:
    # The filter's reply carried no queue ID; XFORWARD's orig_queue_id= still links them.
    filt = attempt(1, relay="127.0.0.1[127.0.0.1]:10024", response="250 2.0.0 Ok, id=12345-01")
    logs = logs_of(
        group("mx1", "4F2A81C0042", 0, rcpt("bob@example.net", filt), client=CLIENT),
        group(
            "mx1",
            "5D7E61C0099",
            0.9,
            rcpt("bob@example.net", mailbox(1.5)),
            client="localhost[127.0.0.1]",
            orig_queue_id="4F2A81C0042",
        ),
    )
    (trace,) = correlate(logs, INDEX)
    assert [h.via for h in trace.hops] == ["entry", "reinjection"]
    assert trace.hops[1].evidence == ("orig_queue_id", "message-id")
    (out,) = trace.recipients
    assert (out.outcome, out.path[-1]) == ("delivered", GroupRef("mx1", "5D7E61C0099"))


def test_loopback_queued_as_without_orig_queue_id() -> None:
    filt = attempt(
        1,
        relay="localhost[127.0.0.1]:10024",
        response="250 2.0.0 Ok: queued as 5D7E61C0099",
        next_queue_id="5D7E61C0099",
    )
    logs = logs_of(
        group("mx1", "4F2A81C0042", 0, rcpt("bob@example.net", filt), client=CLIENT),
        group(
            "mx1",
            "5D7E61C0099",
            0.8,
            rcpt("bob@example.net", mailbox(1.5)),
            client="localhost[127.0.0.1]",
        ),
    )
    (trace,) = correlate(logs, INDEX)
    assert trace.hops[1].via == "reinjection"
    assert trace.hops[1].evidence[0] == "queued-as"


def test_split_recipients_follow_their_own_next_hops() -> None:
    logs = logs_of(
        group(
            "mx1",
            "4F2A81C0042",
            0,
            rcpt("bob@example.net", sent_to("mx2", "8B1C23D4E5", 1)),
            rcpt("carol@example.com", sent_to("mx3", "A9E8F7C6B5", 1.1)),
            client=CLIENT,
        ),
        group(
            "mx2",
            "8B1C23D4E5",
            0.9,
            rcpt("bob@example.net", mailbox(1.3)),
            client="mx1.example.test[127.0.0.21]",
        ),
        group(
            "mx3",
            "A9E8F7C6B5",
            1.0,
            rcpt("carol@example.com", mailbox(1.4)),
            client="mx1.example.test[127.0.0.21]",
        ),
    )
    (trace,) = correlate(logs, INDEX)
    paths = {r.address: r.path for r in trace.recipients}
    assert paths == {
        "bob@example.net": refs(("mx1", "4F2A81C0042"), ("mx2", "8B1C23D4E5")),
        "carol@example.com": refs(("mx1", "4F2A81C0042"), ("mx3", "A9E8F7C6B5")),
    }
    assert {r.outcome for r in trace.recipients} == {"delivered"}


def test_bounce_carries_the_dsn_trace_back_through_the_chain() -> None:
    bounced = attempt(
        2,
        status="bounced",
        relay="mx3.example.test[127.0.0.23]:2525",
        dsn="5.1.1",
        response="host mx3.example.test[127.0.0.23] said: 550 5.1.1 <nobody@example.net>: "
        "Recipient address rejected: User unknown in local recipient table (in reply to RCPT TO "
        "command)",
    )
    rcpt_reject = reject(
        1.9,
        host="mx3",
        client="mx2.example.test[127.0.0.22]",
        recipient="nobody@example.net",
        response="550 5.1.1 <nobody@example.net>: Recipient address rejected: "
        "User unknown in local recipient table",
    )
    logs = logs_of(
        group(
            "mx1",
            "4F2A81C0042",
            0,
            rcpt("nobody@example.net", sent_to("mx2", "8B1C23D4E5", 1)),
            client=CLIENT,
        ),
        group(
            "mx2",
            "8B1C23D4E5",
            0.9,
            rcpt("nobody@example.net", bounced),
            client="mx1.example.test[127.0.0.21]",
            children=(
                Child(
                    "C0FFEE1234",
                    "notification",
                    time=t(2.1),
                    detail="sender non-delivery notification",
                ),
            ),
        ),
        group(
            "mx2",
            "C0FFEE1234",
            2.1,
            rcpt(SENDER, sent_to("mx1", "D00D5EED42", 2.4)),
            origin="local",
            sender="",
            size=3456,
            message_id="<20240115123458.C0FFEE1234@mx2.example.test>",
        ),
        group(
            "mx1",
            "D00D5EED42",
            2.3,
            rcpt(SENDER, mailbox(2.5)),
            sender="",
            client="mx2.example.test[127.0.0.22]",
            message_id="<20240115123458.C0FFEE1234@mx2.example.test>",
        ),
        rejects=(rcpt_reject,),
    )
    traces = correlate(logs, INDEX)
    assert_partition(logs, traces)
    main = next(tr for tr in traces if tr.hops[0].queue_id == "4F2A81C0042")
    (out,) = main.recipients
    assert (out.status, out.outcome, out.dsn, out.host) == ("bounced", "bounced", "5.1.1", "mx2")
    (dsn,) = main.notifications
    assert [(h.host, h.queue_id, h.via) for h in dsn.hops] == [
        ("mx2", "C0FFEE1234", "notification"),
        ("mx1", "D00D5EED42", "smtp"),
    ]
    assert dsn.hops[0].parent == GroupRef("mx2", "8B1C23D4E5")
    assert dsn.hops[0].evidence[0] == "sender non-delivery notification"
    assert (dsn.sender, dsn.recipients[0].outcome) == ("", "delivered")
    assert dsn.recipients[0].path == refs(("mx2", "C0FFEE1234"), ("mx1", "D00D5EED42"))
    # mx3's NOQUEUE reject of mx2's RCPT is part of this trace, not a trace of its own.
    assert len(traces) == 1
    refusal = main.hops[-1]
    assert (refusal.host, refusal.queue_id, refusal.via, refusal.parent) == (
        "mx3",
        "NOQUEUE",
        "refused",
        GroupRef("mx2", "8B1C23D4E5"),
    )
    assert refusal.evidence == ("refused", "client=mx2.example.test[127.0.0.22]", "time-0.1s")
    assert out.path == refs(("mx1", "4F2A81C0042"), ("mx2", "8B1C23D4E5"), ("mx3", "NOQUEUE"))
    # The bounce is logged by mx2 (hop 1), which also sent the notification.
    assert (out.hop_index, out.attempt) == (1, bounced)
    assert dsn.anchor == 1
    assert [(h.parent_index, h.handoff) for h in dsn.hops] == [
        (None, None),  # its parent is in the enclosing trace
        (0, sent_to("mx1", "D00D5EED42", 2.4)),
    ]
    assert leads(logs, INDEX).refusals == (RefusalHint("mx3", "nobody@example.net", t(2)),)
    assert refused_by(INDEX, "mx2", bounced) == "mx3"
    assert refused_by(INDEX, "mx2", replace(bounced, status="sent")) is None
    assert refused_by(INDEX, "mx2", replace(bounced, response="5.1.1 no such user")) is None


def test_expired_message_and_its_expiring_dsn() -> None:
    def dead(at: float, status: str) -> Attempt:
        return attempt(
            at,
            status=status,
            program="qmgr" if status == "deferred" else "smtp",
            relay="none",
            dsn="4.4.1",
            response="delivery temporarily suspended: connect to "
            "mx.dead.example[203.0.113.9]:25: Connection timed out",
        )

    logs = logs_of(
        group(
            "mx1",
            "60AA21C0070",
            0,
            rcpt("x@dead.example", dead(60, "deferred"), dead(5400, "bounced")),
            expired=True,
            client=CLIENT,
            children=(
                Child(
                    "60AA21C0071",
                    "notification",
                    time=t(5400),
                    detail="sender non-delivery notification",
                ),
            ),
        ),
        group(
            "mx1",
            "60AA21C0071",
            5400,
            rcpt(SENDER, dead(5460, "deferred"), dead(10800, "bounced")),
            origin="local",
            sender="",
            expired=True,
            message_id=None,
        ),
    )
    (trace,) = correlate(logs, INDEX)
    assert (trace.recipients[0].status, trace.recipients[0].outcome) == ("bounced", "expired")
    (dsn,) = trace.notifications
    assert dsn.recipients[0].outcome == "expired"


def test_still_deferred_is_queued() -> None:
    deferred = attempt(
        30,
        status="deferred",
        relay="mx.example.net[198.51.100.7]:25",
        dsn="4.7.1",
        response="host mx.example.net[198.51.100.7] said: 450 4.7.1 Try again "
        "later (in reply to RCPT TO command)",
    )
    logs = logs_of(
        group(
            "mx1", "4F2A81C0042", 0, rcpt("bob@example.net", deferred), removed=False, client=CLIENT
        )
    )
    (trace,) = correlate(logs, INDEX)
    assert (trace.recipients[0].status, trace.recipients[0].outcome) == ("deferred", "queued")
    assert leads(logs, INDEX).refusals == ()  # refused by a server outside the inventory


def test_forwarded_alias_and_relay_out() -> None:
    fwd = attempt(
        1,
        program="local",
        relay="local",
        response="forwarded as 52C3D1C0061",
        next_queue_id="52C3D1C0061",
    )
    out = attempt(
        2,
        relay="mx.example.net[198.51.100.7]:25",
        response="250 2.0.0 Ok: queued as 4TBq3k1XYZz9sQ",
        next_queue_id="4TBq3k1XYZz9sQ",
    )
    logs = logs_of(
        group(
            "mx1",
            "51B0C1C0050",
            0,
            rcpt("admin@mx1.example.test", fwd, orig="root"),
            origin="pickup",
            uid=0,
            client=None,
            sender="root@mx1.example.test",
        ),
        group(
            "mx1",
            "52C3D1C0061",
            0.9,
            rcpt("ops@example.net", out, orig="admin@mx1.example.test"),
            origin="local",
            client=None,
            sender="root@mx1.example.test",
        ),
    )
    (trace,) = correlate(logs, INDEX)
    assert [h.via for h in trace.hops] == ["pickup", "forward"]
    (res,) = trace.recipients
    assert (res.address, res.orig_address, res.outcome) == (
        "ops@example.net",
        "admin@mx1.example.test",
        "relayed-out",
    )
    assert res.path == refs(("mx1", "51B0C1C0050"), ("mx1", "52C3D1C0061"))
    assert pending_refs(logs, INDEX) == set()  # a server outside the inventory is not followed


def test_requeue_links_pickup_orig_id() -> None:
    deferred = attempt(
        10,
        status="deferred",
        relay="mx.example.net[198.51.100.7]:25",
        dsn="4.4.1",
        response="connect to mx.example.net[198.51.100.7]:25: Connection refused",
    )
    logs = logs_of(
        group("mx1", "4F2A81C0042", 0, rcpt("bob@example.net", deferred), client=CLIENT),
        group(
            "mx1",
            "7A1B2C3D4E",
            3600,
            rcpt("bob@example.net", mailbox(3601)),
            origin="pickup",
            uid=0,
            client=None,
            requeued_from="4F2A81C0042",
        ),
    )
    (trace,) = correlate(logs, INDEX)
    assert [(h.via, h.evidence) for h in trace.hops] == [("entry", ()), ("requeue", ("orig_id",))]
    assert trace.recipients[0].path[-1] == GroupRef("mx1", "7A1B2C3D4E")


# --------------------------------------------------------------------------- rejects, discards


def test_noqueue_reject_is_a_one_hop_trace() -> None:
    rej = reject(
        0,
        host="mx1",
        client="unknown[203.0.113.5]",
        sender="spam@example.biz",
        recipient="x@example.com",
        response="554 5.7.1 <x@example.com>: Relay access denied",
    )
    logs = logs_of(rejects=(rej,))
    (trace,) = correlate(logs, INDEX)
    assert [(h.host, h.queue_id, h.via, h.client) for h in trace.hops] == [
        ("mx1", "NOQUEUE", "entry", "unknown[203.0.113.5]"),
    ]
    (out,) = trace.recipients
    assert (out.address, out.status, out.outcome, out.dsn) == (
        "x@example.com",
        "rejected",
        "rejected",
        "5.7.1",
    )


def test_rcpt_reject_with_queue_id_sits_next_to_the_accepted_recipient() -> None:
    rej = reject(
        0.5,
        host="mx1",
        queue_id="4F2A81C0042",
        client=CLIENT,
        recipient="blocked@mx1.example.test",
        response="550 5.7.1 <blocked@mx1.example.test>: Recipient address rejected: Access denied",
    )
    logs = logs_of(
        group(
            "mx1",
            "4F2A81C0042",
            0,
            rcpt("bob@mx1.example.test", mailbox(1)),
            client=CLIENT,
            rejects=(rej,),
        )
    )
    (trace,) = correlate(logs, INDEX)
    assert {(r.address, r.outcome) for r in trace.recipients} == {
        ("bob@mx1.example.test", "delivered"),
        ("blocked@mx1.example.test", "rejected"),
    }
    assert {(r.address, r.hop_index, r.attempt is None) for r in trace.recipients} == {
        ("bob@mx1.example.test", 0, False),
        ("blocked@mx1.example.test", 0, True),  # a reject has no delivery attempt
    }


def test_cleanup_reject() -> None:
    rej = reject(
        0.4,
        host="mx1",
        queue_id="4F2A81C0042",
        program="cleanup",
        stage="header",
        client=CLIENT,
        recipient="bob@example.net",
        response="5.7.1 forbidden subject",
    )
    logs = logs_of(group("mx1", "4F2A81C0042", 0, client=CLIENT, message_id=None, rejects=(rej,)))
    (trace,) = correlate(logs, INDEX)
    (out,) = trace.recipients
    assert (out.address, out.status, out.outcome, out.dsn) == (
        "bob@example.net",
        "rejected",
        "rejected",
        "5.7.1",
    )


def test_discard_transport() -> None:
    gone = attempt(1, program="discard", relay="none", response="silently")
    logs = logs_of(group("mx1", "4F2A81C0042", 0, rcpt("bob@example.net", gone), client=CLIENT))
    assert correlate(logs, INDEX)[0].recipients[0].outcome == "discarded"


# --------------------------------------------------------------------------- identity and time


def test_same_short_id_on_two_hosts_is_two_messages() -> None:
    out = attempt(
        1, relay="mx.example.net[198.51.100.7]:25", response="250 2.0.0 Ok: queued as 1A2B3C4D5E"
    )
    logs = logs_of(
        group("mx1", "C3CD21F3E90", 0, rcpt("bob@example.net", out), client=CLIENT),
        group(
            "mx2",
            "C3CD21F3E90",
            0.5,
            rcpt("dave@mx2.example.test", mailbox(1)),
            client="other.example.com[198.51.100.99]",
            message_id="<other@example.com>",
        ),
    )
    traces = correlate(logs, INDEX)
    assert [len(tr.hops) for tr in traces] == [1, 1]
    assert link_groups(logs, INDEX) == []


def test_reused_id_picks_the_life_by_time() -> None:
    logs = logs_of(
        group(
            "mx1",
            "4F2A81C0042",
            0,
            rcpt("bob@example.net", sent_to("mx2", "8B1C23D4E5", 1)),
            client=CLIENT,
        ),
        # The same short ID an hour earlier, for another message, already removed.
        group(
            "mx2",
            "8B1C23D4E5",
            -3600,
            rcpt("old@mx2.example.test", mailbox(-3599)),
            client="mx1.example.test[127.0.0.21]",
            message_id="<old@example.org>",
        ),
        group(
            "mx2",
            "8B1C23D4E5",
            0.9,
            rcpt("bob@example.net", mailbox(1.2)),
            client="mx1.example.test[127.0.0.21]",
        ),
    )
    traces = correlate(logs, INDEX)
    assert_partition(logs, traces)
    old, new = traces
    assert [h.time for h in old.hops] == [t(-3600)]
    assert [h.time for h in new.hops] == [t(0), t(0.9)]
    (link,) = link_groups(logs, INDEX)
    assert link.child_time == t(0.9)


def test_reused_id_with_a_different_message_id_is_refused() -> None:
    logs = logs_of(
        group(
            "mx1",
            "4F2A81C0042",
            0,
            rcpt("bob@example.net", sent_to("mx2", "8B1C23D4E5", 1)),
            client=CLIENT,
        ),
        group(
            "mx2",
            "8B1C23D4E5",
            0.9,
            rcpt("eve@mx2.example.test", mailbox(1.2)),
            client="outside.example.com[198.51.100.50]",
            message_id="<other@example.com>",
        ),
    )
    assert link_groups(logs, INDEX) == []
    assert pending_refs(logs, INDEX) == {GroupRef("mx2", "8B1C23D4E5")}


def skewed(offset: float) -> list[HostLog]:
    return logs_of(
        group(
            "mx1",
            "4F2A81C0042",
            0,
            rcpt("bob@example.net", sent_to("mx2", "8B1C23D4E5", 1)),
            client=CLIENT,
        ),
        group(
            "mx2",
            "8B1C23D4E5",
            0.9 + offset,
            rcpt("bob@example.net", mailbox(1.2 + offset)),
            client="mx1.example.test[127.0.0.21]",
        ),
    )


def test_clock_skew_within_max_skew_links() -> None:
    logs = skewed(-180)  # mx2's clock is three minutes behind
    (trace,) = correlate(logs, INDEX)
    assert trace.hops[1].evidence[-1] == "time-180.1s"
    assert trace.recipients[0].outcome == "delivered"


def test_clock_skew_beyond_max_skew_does_not_link() -> None:
    logs = skewed(420)
    traces = correlate(logs, INDEX)
    assert [len(tr.hops) for tr in traces] == [1, 1]
    first = traces[0]
    assert first.recipients[0].outcome == "lost"
    assert first.notes == (
        (
            "lost at mx2: queue ID 8B1C23D4E5 is logged only 6m59s away from the hand-off by "
            "mx1/4F2A81C0042 (beyond max skew 5m00s)"
        ),
    )
    assert pending_refs(logs, INDEX) == {GroupRef("mx2", "8B1C23D4E5")}
    assert len(correlate(logs, INDEX, max_skew=timedelta(minutes=10))) == 1


def test_chain_across_new_year_in_two_time_zones() -> None:
    cet = timezone(timedelta(hours=1))
    a = group(
        "mx1",
        "4F2A81C0042",
        0,
        rcpt("bob@example.net", sent_to("mx2", "8B1C23D4E5", 0)),
        client=CLIENT,
    )
    a_time = datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)
    att = a.recipients[0].attempts[0]
    a = replace(
        a,
        first_time=a_time - timedelta(seconds=1),
        last_time=a_time,
        recipients=(rcpt("bob@example.net", replace(att, time=a_time)),),
    )
    b_time = datetime(2024, 1, 1, 1, 0, 0, tzinfo=cet)  # 00:00:00 UTC: 1 s after the hand-off
    b = group(
        "mx2",
        "8B1C23D4E5",
        0,
        rcpt("bob@example.net", replace(mailbox(0), time=b_time)),
        client="mx1.example.test[127.0.0.21]",
    )
    b = replace(b, first_time=b_time, last_time=b_time)
    (trace,) = correlate(logs_of(a, b), INDEX)
    assert trace.hops[1].evidence[-1] == "time+1.0s"
    assert trace.recipients[0].outcome == "delivered"


# --------------------------------------------------------------------------- where trails end


def test_fleet_reply_without_queue_id_stops_with_unknown() -> None:
    gmail = attempt(
        1,
        relay="gmail-smtp-in.l.google.com[142.250.102.27]:25",
        response="250 2.0.0 OK  1705322098 a1b2c3d4e5f6-gsmtp",
    )
    logs = logs_of(
        group(
            "mx1",
            "4F2A81C0042",
            0,
            rcpt("bob@example.net", sent_to("mx2", None, 1)),
            rcpt("carol@gmail.com", gmail),
            client=CLIENT,
        ),
    )
    (trace,) = correlate(logs, INDEX)
    outcomes = {r.address: r.outcome for r in trace.recipients}
    assert outcomes == {"bob@example.net": "unknown", "carol@gmail.com": "relayed-out"}
    assert trace.notes == (
        "unknown at mx2: the reply to mx1/4F2A81C0042 carries no queue ID (250 2.0.0 Ok)",
    )


def test_missing_middle_host_is_lost_with_the_failure_noted() -> None:
    logs = logs_of(
        group(
            "mx1",
            "4F2A81C0042",
            0,
            rcpt("bob@example.net", sent_to("mx2", "8B1C23D4E5", 1)),
            client=CLIENT,
        ),
        group(
            "mx3",
            "A9E8F7C6B5",
            1.3,
            rcpt("bob@example.net", mailbox(1.6)),
            client="mx2.example.test[127.0.0.22]",
        ),
    )
    traces = correlate(logs, INDEX, failed_hosts={"mx2": "connect: Connection refused"})
    first, last = traces
    assert first.recipients[0].outcome == "lost"
    assert first.notes == (
        "lost at mx2: host failed: connect: Connection refused (queue ID 8B1C23D4E5)",
    )
    assert last.hops[0].via == "entry"
    assert pending_refs(logs, INDEX) == {GroupRef("mx2", "8B1C23D4E5")}
    assert backward_hints(logs, INDEX) == [
        BackwardHint("mx2", MSGID, t(1.3), GroupRef("mx3", "A9E8F7C6B5")),
    ]
    assert leads(logs, INDEX) == Leads(
        pending=frozenset({GroupRef("mx2", "8B1C23D4E5")}),
        backward=(BackwardHint("mx2", MSGID, t(1.3), GroupRef("mx3", "A9E8F7C6B5")),),
        refusals=(),
    )
    plain = correlate(logs, INDEX)[0]
    assert plain.notes == ("lost at mx2: no logs from this host (queue ID 8B1C23D4E5)",)


def test_message_id_fallback_is_weak() -> None:
    logs = logs_of(
        group("mx1", "4F2A81C0042", 0, rcpt("bob@example.net", spamassassin(1)), client=CLIENT),
        group(
            "mx1",
            "5D7E61C0099",
            1.5,
            rcpt("bob@example.net", mailbox(2)),
            origin="pickup",
            uid=110,
            client=None,
        ),
    )
    (link,) = link_groups(logs, INDEX)
    assert (link.via, link.strength, link.evidence) == (
        "message-id",
        "weak",
        ("message-id-match", "time+0.5s"),
    )
    (trace,) = correlate(logs, INDEX)
    (out,) = trace.recipients
    assert out.path == refs(("mx1", "4F2A81C0042"), ("mx1", "5D7E61C0099"))


def test_message_id_fallback_needs_the_sender_and_the_window() -> None:
    logs = logs_of(
        group("mx1", "4F2A81C0042", 0, rcpt("bob@example.net", spamassassin(1)), client=CLIENT),
        group(
            "mx1",
            "5D7E61C0099",
            1.5,
            rcpt("bob@example.net", mailbox(2)),
            origin="pickup",
            client=None,
            sender="mallory@example.org",
        ),
        group(
            "mx1",
            "6E8F72D0AAA",
            900,
            rcpt("bob@example.net", mailbox(901)),
            origin="pickup",
            client=None,
        ),
    )
    assert link_groups(logs, INDEX) == []
    assert len(correlate(logs, INDEX)) == 3


# --------------------------------------------------------------------------- API behaviour


def test_order_is_deterministic_and_every_group_in_one_trace() -> None:
    logs = three_hop() + logs_of(
        group(
            "mx1",
            "C3CD21F3E90",
            -5,
            rcpt("zed@mx1.example.test", mailbox(-4)),
            client=CLIENT,
            message_id="<z@example.org>",
        ),
    )
    traces = correlate(logs, INDEX)
    assert correlate(list(reversed(logs)), INDEX) == traces
    assert [tr.hops[0].queue_id for tr in traces] == ["C3CD21F3E90", "4F2A81C0042"]
    assert_partition(logs, traces)


def test_select_traces_keeps_whole_traces() -> None:
    logs = three_hop() + logs_of(
        group(
            "mx1",
            "C3CD21F3E90",
            -5,
            rcpt("zed@mx1.example.test", mailbox(-4)),
            client=CLIENT,
            message_id="<z@example.org>",
        ),
    )
    traces = correlate(logs, INDEX)
    (kept,) = select_traces(traces, lambda g: g.host == "mx3")
    assert len(kept.hops) == 3
    assert select_traces(traces, lambda g: False) == []


def test_index_without_inventory_aliases_learns_nothing_it_cannot_prove() -> None:
    bare = build_host_index([Host("mx1"), Host("mx2")])
    logs = logs_of(
        group(
            "mx1",
            "4F2A81C0042",
            0,
            rcpt("bob@example.net", sent_to("mx2", "8B1C23D4E5", 1)),
            client=CLIENT,
        ),
    )
    # mx2.example.test[127.0.0.22] is not known as mx2: the mail left the fleet as far as we know.
    (trace,) = correlate(logs, bare)
    assert trace.recipients[0].outcome == "relayed-out"
    assert isinstance(bare, HostIndex)


def test_cleanup_reject_at_the_next_hop_joins_the_senders_bounce() -> None:
    said = attempt(
        1,
        status="bounced",
        relay="mx2.example.test[127.0.0.22]:2525",
        dsn="5.7.1",
        response="host mx2.example.test[127.0.0.22] said: 550 5.7.1 forbidden subject "
        "(in reply to end of DATA command)",
    )
    rej = reject(
        0.9,
        host="mx2",
        queue_id="8B1C23D4E5",
        program="cleanup",
        stage="header",
        client="mx1.example.test[127.0.0.21]",
        recipient="bob@example.net",
        response="5.7.1 forbidden subject",
    )
    logs = logs_of(
        group("mx1", "4F2A81C0042", 0, rcpt("bob@example.net", said), client=CLIENT),
        group(
            "mx2",
            "8B1C23D4E5",
            0.8,
            client="mx1.example.test[127.0.0.21]",
            message_id=None,
            rejects=(rej,),
        ),
    )
    (trace,) = correlate(logs, INDEX)
    (out,) = trace.recipients
    assert (out.outcome, out.host) == ("bounced", "mx1")
    assert out.path == refs(("mx1", "4F2A81C0042"), ("mx2", "8B1C23D4E5"))
