"""LiveTracer, pure: the lab's real lines fed in the order they were logged, the clock moving
with them. follow's lines come per recipient as soon as its fate is final (early), each once;
whole messages (ndjson, wait) as before."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from follow_support import EXPECTED, aliases, lab_lines

from collector.logs.assemble import Assembler
from collector.logs.parse import LineParser, TimeContext
from collector.models import Host, RecipientOutcome, Record, Trace
from collector.render.trace import live_line, live_lines
from collector.trace.correlate import build_host_index, correlate
from collector.trace.live import FINAL, Fates, LiveSettings, LiveTracer

HOSTS = [Host(name, aliases=tuple(a)) for name, a in aliases().items()]
MULTI = next(s for s in EXPECTED["scenarios"] if s["name"] == "multi_split")


def _run(settings: LiveSettings, lines: list[tuple[str, bytes]] | None = None,
         lag: Mapping[str, float] | None = None) -> list[tuple[datetime, Fates]]:
    """Feed every lab line (the wall clock is the line's time, plus the ``lag`` of its host's
    stream: its lines arrive that many seconds late), look at the time after each line and
    for ten minutes after the last; what came out, with the (wall) time it came."""
    tracer = LiveTracer(HOSTS, settings=settings)
    parser = LineParser(TimeContext(tz=UTC, reference=datetime(2026, 12, 1, tzinfo=UTC)))
    arrivals: list[tuple[datetime, int, str, Record]] = []
    last = datetime(2000, 1, 1, tzinfo=UTC)
    for host, line in lab_lines() if lines is None else lines:
        for rec in parser.feed_all(line):
            last = max(last, rec.time)
            late = timedelta(seconds=(lag or {}).get(host, 0.0))
            arrivals.append((last + late, len(arrivals), host, rec))
    arrivals.sort(key=lambda a: (a[0], a[1]))  # each stream keeps its own order
    out: list[tuple[datetime, Fates]] = []
    for wall, _, host, rec in arrivals:
        tracer.add(host, rec, wall.timestamp())
        out += [(wall, f) for f in tracer.fates(wall.timestamp())]
    for s in range(1, 600):
        now = arrivals[-1][0] + timedelta(seconds=s)
        out += [(now, f) for f in tracer.fates(now.timestamp())]
    return out


def _paths(fates: list[tuple[datetime, Fates]], complete: bool | None = None
           ) -> Counter[tuple[str, str, str, str]]:
    """Each row given: (host, queue ID, address, the hosts of its path)."""
    return Counter(_path_key(r) for _, f in fates if complete is None or f.complete is complete
                   for _, r in f.rows)


def _path_key(r: RecipientOutcome) -> tuple[str, str, str, str]:
    return (r.host, r.queue_id, r.address, ">".join(p.host for p in r.path))


def _lines(fates: list[tuple[datetime, Fates]]) -> list[str]:
    return [live_line(t, r) for _, f in fates for t, r in f.rows]


def test_each_recipient_is_given_once_when_its_fate_is_final() -> None:
    early = _run(LiveSettings(early=True))
    whole = _run(LiveSettings())
    # the same lines as whole messages give, each exactly once
    assert Counter(_lines(early)) == Counter(x for _, f in whole for x in live_lines(f.trace))
    assert len(_lines(early)) == len(set(_lines(early)))
    # ... and as many messages complete, in the same order
    assert [f.trace.hops[0].queue_id for _, f in early if f.complete] == \
        [f.trace.hops[0].queue_id for _, f in whole]
    # a row given before its message completes is final
    given = [r for _, f in early if not f.complete for _, r in f.rows]
    assert given and all(r.outcome in FINAL for r in given)


def test_delivered_recipients_come_before_their_siblings_expire() -> None:
    early = _run(LiveSettings(early=True))
    mine = [(when, f) for when, f in early if f.trace.message_id == MULTI["message_id"]]
    delivered = {f["recipient"] for f in MULTI["fates"] if f["fate"] == "delivered"}
    expired = {f["recipient"] for f in MULTI["fates"] if f["fate"] == "expired"}
    (first_when, first), *_ = mine
    assert not first.complete
    assert {r.address for _, r in first.rows} == delivered
    assert all(r.path[-1].host == "mbox1" for _, r in first.rows)
    when = {r.address: w for w, f in mine for t, r in f.rows if t is f.trace}
    assert sorted(when) == sorted(delivered | expired)
    assert len([r for _, f in mine for t, r in f.rows if t is f.trace]) == len(when)  # once
    # delivered at 17:32:4x; the expiry is logged more than a minute later, and given then
    assert min(when[a] for a in expired) - max(when[a] for a in delivered) > timedelta(
        seconds=30)
    (done_when, done), = [(w, f) for w, f in mine if f.complete]
    assert done is mine[-1][1]  # the message completes last (its notifications came back)
    # without early, bob's line waits for the whole message
    whole = _run(LiveSettings())
    (whole_when, _), = [(w, f) for w, f in whole if f.trace.message_id == MULTI["message_id"]]
    assert whole_when == done_when > when["bob@example.test"]


def test_a_recipient_of_a_queue_file_still_open_is_given_from_its_lines_so_far() -> None:
    """multi_split with dave relayed out by out1 while erin stays deferred there (the lab's
    lines: out1's queue file stays open, its later lines left out, dave's first deferral
    made the sent line of an outside server): dave's line comes from a peek at the open
    queue file, erin's when it is forgotten (--max-open)."""
    qid = b"D3850168042"
    lines: list[tuple[str, bytes]] = []
    for host, line in lab_lines():
        if qid in line:
            if b"17:32:44" not in line:
                continue  # out1 keeps it in its queue
            if b"to=<dave@" in line:
                line = line.replace(b"relay=none", b"relay=mx.example.net[192.0.2.1]:25")
                line = line.replace(b"dsn=4.4.1, status=deferred (connect to 127.0.0.9"
                                    b"[127.0.0.9]:2599: Connection refused)",
                                    b"dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4F1A)")
                assert b"status=sent" in line
        lines.append((host, line))
    settings = LiveSettings(early=True, max_open=timedelta(minutes=5))
    got = [(w, f) for w, f in _run(settings, lines)
           if f.trace.message_id == MULTI["message_id"]]
    when = {r.address: (w, r, f.complete) for w, f in got for t, r in f.rows if t is f.trace}
    assert sorted(when) == sorted(f["recipient"] for f in MULTI["fates"])
    sent_at = datetime(2026, 11, 29, 17, 32, 44, tzinfo=UTC)
    w, dave, complete = when["dave@example.net"]
    assert (str(dave.outcome), complete) == ("relayed-out", False)
    assert [p.host for p in dave.path][-1] == "out1" and [p.host for p in dave.path][0] == "mx1"
    assert w - sent_at < timedelta(seconds=30)  # not when the queue file is forgotten
    w, erin, complete = when["erin@example.net"]
    assert (str(erin.outcome), complete) == ("queued", True)
    assert w - sent_at >= timedelta(minutes=5)


def test_max_open_counts_from_the_first_line_and_forgets_the_retries() -> None:
    """out1 retries multi_split's deferred recipients every 10-20 s (the lab's lines): with
    --max-open 20s the queue file is shown as queued 20 s after its first line, though its
    retries go on, and the retries and its expiry after that make no second message."""
    got = _run(LiveSettings(early=True, max_open=timedelta(seconds=20)))
    out1 = [(w, f) for w, f in got
            if any(h.host == "out1" and h.queue_id == "D3850168042" for h in f.trace.hops)]
    assert len([f for _, f in out1 if f.complete]) == 1
    rows = [(w, r) for w, f in out1 for t, r in f.rows if r.host == "out1"]
    assert sorted(r.address for _, r in rows) == ["dave@example.net", "erin@example.net"]
    assert {str(r.outcome) for _, r in rows} == {"queued"}
    first = min(rec.time for _, f in out1 for h in f.trace.hops if h.host == "out1"
                for rec in h.group.records)
    # (the run looks at the time at each line: the first after 17:33:04 is at 17:33:18)
    assert all(w - first <= timedelta(seconds=34) for w, _ in rows)
    # without the bound from the first line it would have waited for the retries to end
    assert max(rec.time for rec in out1[-1][1].trace.hops[-1].group.records) < first + \
        timedelta(seconds=34)


def test_a_refusal_on_a_host_whose_stream_lags_still_joins_its_path() -> None:
    """filter1's and mbox1's lines arrive 8 s late (another SSH stream, a busy host): a bounce
    that filter1 or mbox1 refused is still given with the refusing hop at the end of its path
    (mx1>filter1 for cleanup_reject, ...>mbox1 for an unknown user), early lines and whole
    messages alike, as when every stream is on time; no refusal is shown on its own. Before,
    mx1's bounce was given before filter1's reject came, its path stopping at mx1, and a
    NOQUEUE reject of a fleet host's delivery was a trace of its own."""
    for early in (True, False):
        settings = LiveSettings(early=early)
        on_time = _run(settings)
        lagged = _run(settings, lag={"filter1": 8.0, "mbox1": 8.0})
        assert _paths(lagged) == _paths(on_time), early
        paths = _paths(lagged)
        assert ("mx1", "0FF8B1681EE", "bob@example.test", "mx1>filter1") in paths
        unknown = [k for k in paths if k[2].startswith(("nosuchuser@", "ghost@"))]
        assert len(unknown) == 2 and {k[3].rsplit(">", 1)[-1] for k in unknown} == {"mbox1"}
        alone = [f.trace for _, f in lagged if f.trace.hops[0].queue_id == "NOQUEUE"
                 and f.trace.hops[0].host != "mx1"]
        assert not alone, [t.hops[0] for t in alone]


def _refused_at_rcpt(reply: str, *, sibling: bool) -> list[tuple[str, bytes]]:
    """The lab's unknown_user hop filter1 -> mbox1 (its real lines), mbox1's reply made
    ``reply``: 450 (filter1 defers, retries five minutes later, mbox1 delivers) or the real
    550 (filter1 bounces); with ``sibling`` the queue file also holds a recipient deferred
    elsewhere, delivered ten minutes later (the file stays open after the bounce)."""
    lab = dict.fromkeys(line for _, line in lab_lines())
    qid, rej = b"F3A0B168231", b"NOQUEUE: reject: RCPT from filter1.example.test"
    mine = [line for line in lab if qid + b":" in line and b"notification" not in line
            and b"removed" not in line] + [next(line for line in lab if rej in line)]
    if reply.startswith("4"):
        mine = [line.replace(b"550 5.1.1", b"450 4.2.0").replace(b"dsn=5.1.1", b"dsn=4.2.0")
                .replace(b"status=bounced", b"status=deferred") for line in mine]
    stamp = b"Nov 29 17:32:45 filter1 postfix/"
    out = [("mbox1" if rej in line else "filter1", line) for line in mine]
    out.sort(key=lambda hl: hl[0] == "filter1" and b"to=<" in hl[1])  # the reject first
    if sibling:
        out.append(("filter1", stamp + b"smtp[23792]: F3A0B168231: to=<far@example.net>, "
                    b"relay=none, delay=0.5, delays=0.01/0/0.5/0, dsn=4.4.1, status=deferred "
                    b"(connect to 127.0.0.9[127.0.0.9]:2599: Connection refused)"))
    minute = b"42" if sibling else b"37"
    later = b"Nov 29 17:" + minute + b":46 filter1 postfix/"
    there = b"2026-11-29T17:" + minute + b":46.%d00000+00:00 mbox1 postfix/"
    if reply.startswith("4"):
        out += [
            ("filter1", later + b"relay/smtp[23791]: F3A0B168231: to=<nosuchuser@example.test>, "
             b"relay=mbox1.example.test[127.0.0.23]:2525, delay=300, delays=300/0/0/0.01, "
             b"dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4jcvP85l5CzC646)"),
            ("mbox1", there % 1 + b"virtual[23802]: "
             b"4jcvP85l5CzC646: to=<nosuchuser@example.test>, relay=virtual, delay=0.1, "
             b"delays=0.1/0/0/0, dsn=2.0.0, status=sent (delivered to maildir)"),
            ("mbox1", there % 2 + b"qmgr[23801]: "
             b"4jcvP85l5CzC646: removed"),
        ]
    if sibling:
        out.append(("filter1", later + b"smtp[23792]: F3A0B168231: to=<far@example.net>, "
                    b"relay=far.example.net[192.0.2.7]:25, delay=600, delays=600/0/0.5/0, "
                    b"dsn=2.0.0, status=sent (250 2.0.0 Ok)"))
    return out + [("filter1", later + b"qmgr[23650]: F3A0B168231: removed")]


def _batch_paths(lines: list[tuple[str, bytes]]) -> Counter[tuple[str, str, str, str]]:
    """What ``trace`` makes of the same lines, all read at once."""
    parser = LineParser(TimeContext(tz=UTC, reference=datetime(2026, 12, 1, tzinfo=UTC)))
    asms = {h: Assembler(h) for h, _ in lines}
    for host, line in lines:
        for rec in parser.feed_all(line):
            asms[host].add(rec)
    logs = [a.finish() for a in asms.values()]
    return Counter(_path_key(r) for trace in correlate(logs, build_host_index(HOSTS, logs))
                   for _, r in _all_rows(trace))


def _all_rows(trace: Trace) -> list[tuple[Trace, RecipientOutcome]]:
    return [(trace, r) for r in trace.recipients] + [
        row for child in trace.notifications for row in _all_rows(child)]


@pytest.mark.parametrize(
    ("reply", "sibling", "fate"),
    [("450", False, ("mbox1", "delivered", "filter1>mbox1")),
     ("450", True, ("mbox1", "delivered", "filter1>mbox1")),
     ("550", True, ("filter1", "bounced", "filter1>mbox1"))],
)
def test_a_fleet_hosts_reject_of_an_attempt_in_a_queue_file_still_open_is_no_fate_of_its_own(
    reply: str, sibling: bool, fate: tuple[str, str, str]
) -> None:
    """mbox1 refuses filter1's delivery at RCPT while filter1's queue file stays open (a
    temporary 450 that filter1 retries, or a 550 beside a recipient still deferred): mbox1's
    NOQUEUE reject is part of filter1's message, as ``trace`` has it. Before, once hop_wait
    ran out, follow gave it as a recipient "rejected" of its own (``wait`` ended, failed, on a
    message that was delivered five minutes later), then the recipient again with filter1's
    message, its path stopping at filter1."""
    lines = _refused_at_rcpt(reply, sibling=sibling)
    batch = _batch_paths(lines)
    for early in (True, False):
        out = _run(LiveSettings(early=early), lines)
        rows = [r for _, f in out for _, r in f.rows if r.address == "nosuchuser@example.test"]
        assert [(r.host, r.outcome.value, ">".join(p.host for p in r.path)) for r in rows] == [
            fate], early
        assert _paths(out) == batch, early


def test_a_refusal_whose_reject_never_comes_is_waited_for_once() -> None:
    """The lab's cleanup_reject: mx1's bounce quotes filter1's refusal, whose reject line is
    lost (filter1 logs other lines); a second recipient of mx1's queue file is deferred, and
    delivered ten minutes later. The refusal is waited for hop_wait after it was logged, not
    again when the queue file completes: the whole message comes a grace after its
    ``removed`` (before, hop_wait later: ``wait`` and ndjson held it a minute more)."""
    lab = [line for _, line in lab_lines()]
    qid = b"0FF8B1681EE"
    lines = [("mx1", line) for line in lab
             if qid + b":" in line and b"removed" not in line and b"notification" not in line]
    # filter1 is followed and logging (a line of another message): its reject is waited for
    other = next(line for line in lab if line.endswith(b"F2186168222: removed"))
    later = b"Nov 29 17:42:46 mx1 postfix/"
    lines += [
        ("filter1", other),
        ("mx1", b"Nov 29 17:32:46 mx1 postfix/smtp[23792]: 0FF8B1681EE: to=<far@example.net>, "
         b"relay=none, delay=0.5, delays=0.01/0/0.5/0, dsn=4.4.1, status=deferred "
         b"(connect to 127.0.0.9[127.0.0.9]:2599: Connection refused)"),
        ("mx1", later + b"smtp[23792]: 0FF8B1681EE: to=<far@example.net>, "
         b"relay=far.example.net[192.0.2.7]:25, delay=600, delays=600/0/0.5/0, dsn=2.0.0, "
         b"status=sent (250 2.0.0 Ok)"),
        ("mx1", later + b"qmgr[23688]: 0FF8B1681EE: removed"),
    ]
    removed = datetime(2026, 11, 29, 17, 42, 46, tzinfo=UTC)
    settings = LiveSettings()
    for early in (True, False):
        out = _run(replace(settings, early=early), lines)
        done = [t for t, f in out if f.complete and f.trace.hops[0].queue_id == "0FF8B1681EE"]
        assert len(done) == 1, early
        assert done[0] - removed < settings.grace + timedelta(seconds=2), (early, done[0])
