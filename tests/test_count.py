"""Counter: the lives of Assembler, counted without their lines (what ``summary`` reads).

Every count must be the one assembling the whole group would give: same lives, handed back
at the same moments (the JSON summary's key order follows them), same final statuses.
"""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.logs.assemble import Assembler, Counter
from collector.logs.parse import LineParser, TimeContext
from collector.logs.select import message_count, tally, tally_count
from collector.models import MessageCount, Query, Record, Status

FIXTURES = Path(__file__).parent / "fixtures"
# Every log the Postfix lab and the generator wrote (real lines, every envelope, a log host's
# combined files, hostile senders), one host's file at a time.
LOGS = sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.suffix in ("", ".log")
              and p.parent.name in ("log", "lines", "filter1", "mx1", "mbox1", "out1"))
CTX = TimeContext(UTC, datetime(2026, 12, 31, tzinfo=UTC))


def records_of(path: Path) -> list[Record]:
    return list(LineParser(CTX).parse_blocks([path.read_bytes()]))


def both(records: list[Record]) -> tuple[list[MessageCount], list[MessageCount]]:
    """What Assembler (then message_count) and Counter hand back, in the order they do."""
    asm, counter = Assembler("h"), Counter("h")
    built: list[MessageCount] = []
    counted: list[MessageCount] = []
    for r in records:
        built += [message_count(g) for g in asm.add(r)]
        counted += counter.add(r)
    built += [message_count(g) for g in asm._drain()[0]]
    counted += counter.finish()[0]
    return built, counted


def test_the_fixtures_are_found() -> None:
    assert len(LOGS) >= 20
    assert sum(len(records_of(p)) for p in LOGS) > 2000


@pytest.mark.parametrize("path", LOGS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_counter_counts_what_assembling_gives(path: Path) -> None:
    built, counted = both(records_of(path))
    assert counted == built
    a: dict[str, int] = {}
    b: dict[str, int] = {}
    for m in built:
        tally_count(m, a, Query())
    for m in counted:
        tally_count(m, b, Query())
    assert list(a.items()) == list(b.items())


def lines(text: str) -> list[Record]:
    return list(LineParser(CTX).parse_blocks([text.strip().replace("\n    ", "\n").encode()]))


EXPIRED = """
    Jan 15 10:00:00 mx1 postfix/pickup[1]: 4B1C1A0: uid=0 from=<root>
    Jan 15 10:00:00 mx1 postfix/qmgr[2]: 4B1C1A0: from=<root@mx1>, size=300, nrcpt=3 (queue active)
    Jan 15 10:00:01 mx1 postfix/smtp[3]: 4B1C1A0: to=<a@x.example>, relay=none, delay=1, delays=0/0/1/0, dsn=4.4.1, status=deferred (connect timed out)
    Jan 15 10:00:01 mx1 postfix/smtp[3]: 4B1C1A0: to=<b@x.example>, relay=none, delay=1, delays=0/0/1/0, dsn=4.4.1, status=deferred (connect timed out)
    Jan 15 10:00:02 mx1 postfix/smtp[3]: 4B1C1A0: to=<c@x.example>, orig_to=<c@y.example>, relay=x[192.0.2.1]:25, delay=2, delays=0/0/1/1, dsn=2.0.0, status=sent (250 ok)
    Jan 20 10:00:00 mx1 postfix/smtp[3]: 4B1C1A0: to=<b@x.example>, relay=x[192.0.2.1]:25, delay=5, delays=0/0/1/4, dsn=5.1.1, status=bounced (550 no such user)
    Jan 20 10:00:03 mx1 postfix/qmgr[2]: 4B1C1A0: from=<root@mx1>, status=expired, returned to sender
    Jan 20 10:00:04 mx1 postfix/smtp[3]: 4B1C1A0: to=<a@x.example>, relay=none, delay=1, delays=0/0/1/0, dsn=4.4.1, status=deferred (connect timed out)
    Jan 20 10:00:05 mx1 postfix/cleanup[4]: 4B1C1A0: milter-discard: END-OF-MESSAGE from localhost[127.0.0.1]: milter triggers DISCARD action; from=<root@mx1> to=<a@x.example> proto=ESMTP helo=<mx1>
    Jan 20 10:00:05 mx1 postfix/cleanup[4]: 4B1C1A0: milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 no; from=<root@mx1> to=<a@x.example> proto=ESMTP helo=<mx1>
    Jan 20 10:00:06 mx1 postfix/qmgr[2]: 4B1C1A0: removed
"""


def test_an_expiry_turns_the_recipients_deferred_before_it_into_expired() -> None:
    # qmgr's `status=expired` line: a recipient whose last attempt before it was deferred
    # expired; one deferred again after it (log order, not causal) stays deferred; a bounced
    # one stays bounced. Discards and cleanup refusals with the ID count with the message.
    built, counted = both(lines(EXPIRED))
    assert counted == built
    (count,) = counted
    assert count.statuses == (Status.DEFERRED, Status.BOUNCED, Status.SENT)
    assert (count.rejects, count.discarded) == (1, True)
    built, counted = both(lines(EXPIRED.replace("Jan 20 10:00:04", "Jan 20 10:00:02")))
    assert counted == built
    assert counted[0].statuses == (Status.EXPIRED, Status.BOUNCED, Status.SENT)


def test_a_second_start_is_a_second_message_and_a_finished_one_takes_late_lines() -> None:
    text = EXPIRED + """
    Jan 20 10:00:20 mx1 postfix/bounce[5]: 4B1C1A0: sender non-delivery notification: 4C2D2B0
    Jan 20 10:01:00 mx1 postfix/smtpd[6]: 4B1C1A0: client=c.example[192.0.2.9]
    Jan 20 10:01:01 mx1 postfix/smtp[3]: 4B1C1A0: to=<d@x.example>, relay=x[192.0.2.1]:25, delay=1, delays=0/0/1/0, dsn=2.0.0, status=sent (250 ok)
    Jan 20 10:01:02 mx1 postfix/smtpd[6]: 4B1C1A0: client=c.example[192.0.2.10]
    """
    built, counted = both(lines(text))
    assert counted == built
    assert [c.statuses for c in counted] == [
        (Status.DEFERRED, Status.BOUNCED, Status.SENT), (Status.SENT,), ()
    ]
    assert counted[0].last_time == datetime(2026, 1, 20, 10, 0, 20, tzinfo=UTC)


def test_tally_of_a_group_is_tally_of_its_count() -> None:
    asm = Assembler("h")
    groups = [g for r in lines(EXPIRED) for g in asm.add(r)] + list(asm.finish().groups)
    via_group: dict[str, int] = {}
    via_count: dict[str, int] = {}
    for g in groups:
        tally(g, via_group, Query())
        tally_count(message_count(g), via_count, Query())
    assert via_group == via_count == {"messages": 1, "deferred": 1, "bounced": 1, "sent": 1,
                                      "rejected": 1, "discarded": 1}


def test_counter_holds_recipients_not_lines() -> None:
    retry = ("Jan 15 10:00:{s:02d} mx1 postfix/smtp[3]: 4B1C1A0: to=<a@x.example>, relay=none, "
             "delay=1, delays=0/0/1/0, dsn=4.4.1, status=deferred (connect timed out)")
    text = EXPIRED.split("\n    Jan 15 10:00:01")[0] + "\n" + "\n".join(
        retry.format(s=s % 60) for s in range(1000))
    asm, counter = Assembler("h"), Counter("h")
    for r in lines(text):
        asm.add(r)
        counter.add(r)
    assert asm.held() == 1002
    assert counter.held() == 2  # the life and its one recipient


def test_counting_makes_no_garbage_cycles() -> None:
    # Lives are freed by reference counting as soon as they are counted: a reference cycle
    # (a bound method kept on the instance) left them to the cyclic collector, hundreds of MB
    # of garbage on a big log between its runs.
    records = [r for p in LOGS for r in records_of(p)]
    gc.collect()
    gc.disable()
    try:
        counter = Counter("h")
        for r in records:
            counter.add(r)
        counter.finish()
        del counter
        assert gc.collect() == 0
    finally:
        gc.enable()
