"""A host's search reads every line that belongs to the answer, and each line once.

Real-format Postfix lines on a local-transport host: the two passes must never take a
message's life as read when part of it lies outside the windows pass 2 read, and identical
lines are as many events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.logs import commands
from collector.logs.select import select_rows
from collector.models import Host, Query, TransportKind
from collector.search.host import HostSearcher, SearchContext, search_host
from collector.transport.local import LocalSession

NOW = datetime(2026, 1, 16, tzinfo=UTC)


def message(qid: str, t: str, sender: str, rcpt: str, *, removed: bool = True) -> list[str]:
    lines = [
        f"Jan 15 {t} mx1 postfix/smtpd[100]: {qid}: client=c.example[192.0.2.1]",
        f"Jan 15 {t} mx1 postfix/cleanup[101]: {qid}: message-id=<{qid}@c.example>",
        f"Jan 15 {t} mx1 postfix/qmgr[102]: {qid}: from=<{sender}>, size=900, nrcpt=1 "
        "(queue active)",
        f"Jan 15 {t} mx1 postfix/smtp[103]: {qid}: to=<{rcpt}>, relay=mx.example.net"
        f"[198.51.100.1]:25, delay=0.2, delays=0.1/0/0/0.1, dsn=2.0.0, status=sent (250 ok)",
    ]
    if removed:
        lines.append(f"Jan 15 {t} mx1 postfix/qmgr[102]: {qid}: removed")
    return lines


def filler(prefix: str, hour: int, count: int) -> list[str]:
    out: list[str] = []
    for n in range(count):
        out += message(f"{prefix}{n:06X}", f"{hour:02d}:{n // 60 % 60:02d}:{n % 60:02d}",
                       f"user{n}@example.com", f"dest{n}@example.net")
    return out


def host_with(tmp_path: Path, lines: list[str]) -> Host:
    log = tmp_path / "mx1" / "var" / "log"
    log.mkdir(parents=True)
    (log / "maillog").write_text("\n".join(lines) + "\n")
    return Host("mx1", transport=TransportKind.LOCAL, root=str(tmp_path / "mx1"),
                logs=("/var/log/maillog",), timezone="UTC")


def rows(host: Host, query: Query) -> list[tuple[str | None, str | None, str]]:
    result = search_host(LocalSession(host), query, UTC, NOW)
    return [(r.queue_id, r.recipient, str(r.status)) for r in select_rows([result.log], query)]


def test_a_life_split_over_two_windows_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # AAA111 from a rare sender is deferred for a@ at 10:00, delivered to a@ at 10:30 (far
    # from any hit), and delivered to b@ and removed at 11:00, right next to the sender's
    # next message BBB222. Its first line and its `removed` both lie in windows: but in two
    # windows, with a@'s delivery in the gap between them.
    monkeypatch.setattr(commands, "WINDOW_BEFORE", 600)
    monkeypatch.setattr(commands, "WINDOW_AFTER", 1200)
    monkeypatch.setattr(commands, "WINDOW_COST_BYTES", 0)  # a small log
    rare = "rare@example.org"
    start = message("AAA111", "10:00:00", rare, "a@example.net", removed=False)[:3]
    deferred = ("Jan 15 10:00:01 mx1 postfix/smtp[103]: AAA111: to=<a@example.net>, relay=mx."
                "example.net[198.51.100.1]:25, delay=1, delays=0/0/0/1, dsn=4.0.0, "
                "status=deferred (host mx.example.net said: 451 4.0.0 try later)")
    sent_a = deferred.replace("10:00:01", "10:30:00").replace("dsn=4.0.0", "dsn=2.0.0").replace(
        "status=deferred (host mx.example.net said: 451 4.0.0 try later)", "status=sent (250 ok)")
    sent_b = sent_a.replace("10:30:00", "11:00:01").replace("a@example.net", "b@example.net")
    lines = [
        *filler("C", 9, 60), *start, deferred, *filler("D", 10, 60), sent_a,
        *filler("E", 10, 60), *message("BBB222", "11:00:00", rare, "c@example.net"),
        sent_b, "Jan 15 11:00:01 mx1 postfix/qmgr[102]: AAA111: removed", *filler("F", 11, 60),
    ]
    host = host_with(tmp_path, lines)
    query = Query(senders=(rare,))
    searcher = HostSearcher(LocalSession(host), SearchContext(UTC, NOW))
    searcher.search(query)
    kinds = [c.kind for c in searcher.ran]
    assert commands.CommandKind.WINDOW_IDS in kinds  # the windows were read...
    assert commands.CommandKind.IDS in kinds  # ...and AAA111 was then read whole
    # one row per recipient, with its final status: a@ was delivered in the end
    assert sorted(rows(host, query)) == [
        ("AAA111", "a@example.net", "sent"),
        ("AAA111", "b@example.net", "sent"),
        ("BBB222", "c@example.net", "sent"),
    ]


REJECT = ("Jan 15 10:00:{s} mx1 postfix/smtpd[200]: NOQUEUE: reject: RCPT from c.example"
          "[192.0.2.1]: 554 5.7.1 <x@example.net>: Relay access denied; from=<spam@example.org> "
          "to=<x@example.net> proto=ESMTP helo=<c.example>")


def test_identical_lines_are_as_many_events(tmp_path: Path) -> None:
    # A client repeats the same refused RCPT three times in one second: three events.
    lines = [*filler("C", 9, 5), REJECT.format(s="05"), REJECT.format(s="05"),
             REJECT.format(s="05"), REJECT.format(s="06"), *filler("D", 10, 5)]
    host = host_with(tmp_path, lines)
    assert len(rows(host, Query(senders=("spam@example.org",)))) == 4
    assert len(rows(host, Query(recipients=("x@example.net",)))) == 4
    # a time window alone reads every line in one pass: the same count
    everything = Query(since=datetime(2026, 1, 15, tzinfo=UTC))
    assert sum(1 for r in rows(host, everything) if r[2] == "rejected") == 4


def test_two_searches_of_one_host_count_each_line_once(tmp_path: Path) -> None:
    # A trace asks one host twice; both searches print the same reject lines.
    lines = [*filler("C", 9, 5), REJECT.format(s="05"), REJECT.format(s="05"),
             *message("AAA111", "10:00:07", "spam@example.org", "x@example.net")]
    host = host_with(tmp_path, lines)
    searcher = HostSearcher(LocalSession(host), SearchContext(UTC, NOW))
    searcher.search(Query(senders=("spam@example.org",)))
    searcher.search(Query(recipients=("x@example.net",)))
    log = searcher.log()
    assert len(log.rejects) == 2
    (group,) = [g for g in log.groups if g.queue_id == "AAA111"]
    assert [r.address for r in group.recipients] == ["x@example.net"]
    assert len(group.recipients[0].attempts) == 1


class RotatingSession(LocalSession):
    """A real local host whose logrotate runs (dateext, create) right when a read starts:
    the file discovery saw moves to maillog-20260115 and a new, short maillog takes its name."""

    def __init__(self, host: Host, times: int) -> None:
        super().__init__(host)
        self.times = times
        self.rotated = 0

    def stream_chunks(self, argv, **kwargs):  # type: ignore[no-untyped-def, override]
        log = Path(self.root) / "var" / "log"
        if self.times and any("maillog" in str(a) for a in argv):
            self.times -= 1
            stamp = f"202601{15 + self.rotated:02d}"
            (log / "maillog").rename(log / f"maillog-{stamp}")
            self.rotated += 1  # each new log shorter than the one it replaces
            (log / "maillog").write_text("\n".join(filler("N", 12, 20 - self.rotated)) + "\n")
        return super().stream_chunks(argv, **kwargs)


def rotation_host(tmp_path: Path) -> Host:
    host = host_with(tmp_path, [*filler("C", 9, 20),
                                *message("AAA111", "10:00:00", "rare@example.org", "a@x.net"),
                                *filler("D", 10, 20)])
    return Host(host.name, transport=TransportKind.LOCAL, root=host.root, timezone="UTC",
                logs=("/var/log/maillog*",))


def test_a_log_rotated_during_the_search_is_read_again(tmp_path: Path) -> None:
    host = rotation_host(tmp_path)
    query = Query(senders=("rare@example.org",))
    result = search_host(RotatingSession(host, times=1), query, UTC, NOW)
    assert [(r.queue_id, r.recipient) for r in select_rows([result.log], query)] == [
        ("AAA111", "a@x.net")
    ]
    assert result.unread == ()


def test_a_log_rotated_at_every_read_is_a_partial_answer(tmp_path: Path) -> None:
    host = rotation_host(tmp_path)
    query = Query(senders=("rare@example.org",))
    result = search_host(RotatingSession(host, times=10), query, UTC, NOW)
    assert [u.problem for u in result.unread] == ["rotated"]
    assert "was rotated while being read: its lines may be missing" in str(result.unread[0])


def endless_host(tmp_path: Path, lines: int, *, rcpts: int = 1) -> Host:
    # a message deferred `lines` times, each retry for one of `rcpts` recipients
    deferral = ("Jan 15 10:00:01 mx1 postfix/smtp[103]: AAA111: to=<a{n}@example.net>, "
                "relay=none, delay=1, delays=0/0/0/1, dsn=4.4.1, status=deferred (connect to "
                "x[192.0.2.7]:25: Connection timed out)")
    return host_with(tmp_path, [*message("AAA111", "10:00:00", "s@example.org", "a@example.net",
                                         removed=False)[:3],
                                *[deferral.format(n=n % rcpts) for n in range(lines)]])


@pytest.mark.parametrize("how", ["search", "summary"])
def test_one_host_never_holds_more_lines_than_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # A host that sends endless lines of one queue ID (a hostile server, a runaway log):
    # collector keeps its budget, and the answer says it is partial. summary keeps no line,
    # only each recipient's last status: endless new recipients are what fill its budget.
    from collector.search import host as searching
    from collector.search.summary import summarize_host

    monkeypatch.setattr(searching, "MAX_OPEN_RECORDS", 500)
    monkeypatch.setattr(searching, "MAX_HELD_RECORDS", 800)
    if how == "search":
        host = endless_host(tmp_path, 3000)
        result = search_host(LocalSession(host), Query(recipients=("a0@example.net",)), UTC, NOW)
    else:
        host = endless_host(tmp_path, 3000, rcpts=3000)
        result = summarize_host(LocalSession(host), Query(), UTC, NOW).search
    assert [u.problem for u in result.unread] == ["too-large"]
    assert "more lines than collector keeps for one host or one message" in str(result.unread[0])


def test_summary_counts_a_message_retried_without_end_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A message still queued at the end of the log after thousands of retries: summary keeps
    # its recipients' last statuses, not its lines, so its budget is not touched and the
    # answer is complete (it was partial when every retry was held).
    from collector.search import host as searching
    from collector.search.summary import summarize_host

    monkeypatch.setattr(searching, "MAX_OPEN_RECORDS", 500)
    summary = summarize_host(LocalSession(endless_host(tmp_path, 3000, rcpts=2)), Query(), UTC,
                             NOW)
    assert summary.unread == ()
    assert summary.search.log.stats.lines == 3003
    assert summary.counts == {"messages": 1, "deferred": 2}


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("windows", [False, True])
def test_a_line_read_whole_is_not_held_again_for_the_id_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: bool, drop: bool
) -> None:
    """AAA111's deferral quotes the remote reply `busy: BBB222: later` (text a server
    chooses); BBB222 is a hit whose life is not complete, so it is read in the whole file and
    that line comes back with it. AAA111 was read whole already (in its window, or with
    BBB222): the line is one event, held once, and AAA111's row stays `sent`."""
    monkeypatch.setattr(commands, "WINDOW_COST_BYTES", 0)
    monkeypatch.setattr(commands, "WINDOW_BLOCK", 512)
    monkeypatch.setattr(commands, "WINDOW_BEFORE", 2000)
    monkeypatch.setattr(commands, "WINDOW_AFTER", 2000)
    monkeypatch.setattr("collector.search.host.windows_worth_it", lambda w, s: windows)
    rare = "rare@example.net"
    first = message("AAA111", "09:30:00", "s@c.example", rare)[:4]
    first[3] = first[3].replace("status=sent (250 ok)",
                                "status=deferred (450 4.0.0 busy: BBB222: later)")
    later = message("BBB222", "11:30:00", "s@c.example", rare, removed=False)
    later[3] = later[3].replace("status=sent (250 ok)", "status=deferred (450 try later)")
    lines = [
        *filler("C", 8, 30), *first,
        "Jan 15 09:30:00 mx1 postfix/smtp[103]: AAA111: to=<rare@example.net>, relay=mx2."
        "example.net[198.51.100.2]:25, delay=0.3, delays=0.1/0/0/0.1, dsn=2.0.0, status=sent "
        "(250 ok)",
        "Jan 15 09:30:00 mx1 postfix/qmgr[102]: AAA111: removed",
        *filler("D", 10, 30), *later, *filler("E", 12, 30),
    ]
    host = host_with(tmp_path, lines)
    query = Query(recipients=(rare,))
    searcher = HostSearcher(LocalSession(host), SearchContext(UTC, NOW))
    searcher.search(query, drop_deliveries=drop)
    kinds = [c.kind for c in searcher.ran]
    assert (commands.CommandKind.WINDOW_IDS in kinds) is windows
    (group,) = [g for g in searcher.log().groups if g.queue_id == "AAA111"]
    assert len(group.records) == 6  # every line once
    got = {(r.queue_id, str(r.status)) for r in select_rows([searcher.log()], query)}
    assert got == {("AAA111", "sent"), ("BBB222", "deferred")}
