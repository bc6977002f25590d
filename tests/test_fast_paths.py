"""Every fast path of parse and assemble against its straightforward counterpart, field by
field, on every line of the real Postfix lab fixtures plus hostile shapes, so a fast path can
never diverge silently:

- ``_Core.parse`` with ``keep_all`` off (decides on the envelope's ``lastindex`` before the
  groups are built) against ``keep_all`` on (every group, every body);
- ``_amavis_fields`` (one scan) against ``_amavis_fields_reference`` (five);
- ``LineParser.parse_blocks`` (a block decoded at once; another program's ASCII line counted
  without re-encoding) against ``LineParser.parse`` (line by line, through ``_feed_slow``);
- assemble's ``client_ip`` against ``parse_endpoint``; the folded groups and summary's counts
  of both parse paths against each other.
"""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.logs import parse as parse_module
from collector.logs.assemble import Assembler, Counter, client_ip
from collector.logs.fields import parse_endpoint
from collector.logs.parse import LineParser, TimeContext
from collector.logs.select import message_count, rows_of_group
from collector.models import Kind, Record

FIXTURES = Path(__file__).parent / "fixtures"
CTX = TimeContext(tz=UTC, reference=datetime(2026, 12, 1, tzinfo=UTC))
FIELDS = [f.name for f in dataclasses.fields(Record) if f.name != "read"]


def _fixture_files() -> list[Path]:
    files = []
    for path in sorted(FIXTURES.rglob("*")):
        if not path.is_file() or path.suffix in (".json", ".toml", ".cf", ".eml"):
            continue
        if "log" in path.name or path.parent.name == "log" or path.suffix == ".gz":
            files.append(path)
    return files


def _raw_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return []  # a fixture that is damaged on purpose
    return data.split(b"\n")


FILES = _fixture_files()
LAB_LINES = sorted(
    {line.decode("utf-8", "replace") for path in FILES for line in _raw_lines(path)}
)

BSD = "Nov 29 17:32:45 mx1"
ISO = "2026-11-29T17:32:45.123456+01:00 mx1"
QUOTED = [
    '"a> to=<cfo@corp.example>"@evil.example',
    '"x, status=sent (250 ok)"@evil.example',
    '"a; from=<ceo@corp.example> to=<cfo@corp.example> proto=ESMTP helo=<x>"@evil.example',
    '"a\\" to=<cfo@corp.example> \\\\"@evil.example',
    '"q, relay=fake[192.0.2.9]:25, delay=9"@evil.example',
]
BODIES = [
    *(
        f"postfix/smtp[9]: 4F2A81C0042: to=<{a}>, relay=mx.example.net[192.0.2.7]:25, "
        "delay=0.3, delays=0.1/0/0.1/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as "
        "9B1C2D3E4F5)"
        for a in QUOTED
    ),
    *(
        f"postfix/smtp[9]: 4F2A81C0042: to=<bob@example.com>, orig_to=<{a}>, "
        "relay=none, delay=5, delays=5/0/0/0, dsn=4.4.1, status=deferred (connect to "
        "mx.example.net[192.0.2.7]:25: Connection refused)"
        for a in QUOTED
    ),
    *(f"postfix/qmgr[3]: 4F2A81C0042: from=<{a}>, size=1234, nrcpt=2 (queue active)"
      for a in QUOTED),
    *(
        "postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.66]: 550 5.1.1 "
        f"<{a}>: Recipient address rejected: User unknown; from=<{a}> to=<{a}> "
        "proto=ESMTP helo=<h>"
        for a in QUOTED
    ),
    "postfix/smtpd[1]: 4F2A81C0042: client=unknown[192.0.2.66]:4711, sasl_method=PLAIN, "
    "sasl_username=ceo",
    "postfix/cleanup[2]: 4F2A81C0042: message-id=<a, status=sent@x>",
    "postfix/qmgr[3]: 4F2A81C0042: removed",
    "postfix/cleanup[2]: 4F2A81C0042: removed (discarded)",
    "postfix/postsuper[4]: 4F2A81C0042: removed",
    "postfix/smtpd[1]: connect from unknown[192.0.2.66]",
    "postfix/smtpd[1]: disconnect from unknown[192.0.2.66] ehlo=1 quit=1 commands=2",
    "postfix/smtpd[1]: warning: hostname x does not resolve to address 192.0.2.66",
    "postfix/smtpd[1]: warning: 4F2A81C0042: queue file size limit exceeded",
    "postfix/smtpd[1]: error: open database /etc/postfix/x.db: No such file",
    "postfix/master[1]: fatal: bind 0.0.0.0 port 25: Address already in use",
    "postfix/smtpd[1]: panic: myfree: corrupt or unallocated memory block",
    "postfix/smtpd[1]: message repeated 3 times: [ 4F2A81C0042: client=unknown[192.0.2.66]]",
    "postfix/smtpd[1]: message repeated 2 times: [ NOQUEUE: reject: RCPT from "
    "unknown[192.0.2.66]: 550 5.1.1 <a@b>: User unknown; from=<x@y> to=<a@b> proto=ESMTP "
    "helo=<h>]",
    "postfix/smtpd[1]: message repeated 2 times: [ connect from unknown[192.0.2.66]]",
    "postfix/smtpd[1]: message repeated 999999999 times: [ x]",
    "postfix/smtpd[1]: proxy-reject: END-OF-MESSAGE: 554 5.7.1 spam; from=<a@b> to=<c@d> "
    "proto=ESMTP helo=<h>",
    "postfix/smtpd[1]: proxy-accept: END-OF-MESSAGE: 250 2.0.0 Ok: queued as 9B1C2D3E4F5; "
    "from=<a@b> to=<c@d> proto=ESMTP helo=<h>",
    "postfix/bounce[5]: 4F2A81C0042: sender non-delivery notification: 9B1C2D3E4F5",
    "postfix/pickup[6]: 4F2A81C0042: uid=1000 from=<a b@c> orig_id=9B1C2D3E4F5",
    "postfix/qmgr[3]: 4F2A81C0042: from=<a@b>, status=expired, returned to sender",
    "amavis[7]: (07-1) Passed CLEAN {RelayedInbound}, [192.0.2.6]:1 [192.0.2.6] <a@b> -> "
    "<c@d>, Queue-ID: 4F2A81C0042, Message-ID: <m@x>, mail_id: z, Hits: -1.2, size: 9, "
    "queued_as: 9B1C2D3E4F5, 12 ms",
    # a forged second Queue-ID and Message-ID inside the sender: neither is taken
    "amavis[7]: (07-2) Blocked SPAM {Discarded}, [192.0.2.6]:1 [192.0.2.6] "
    "<x, Queue-ID: AAAAAAAAAAA, Message-ID: <f@x>, Hits: 99, @b> -> <c@d>, Queue-ID: "
    "4F2A81C0042, Message-ID: <m@x>, mail_id: z, Hits: -, size: 9, 12 ms",
    # the same value twice is one value; a bad value is not a field
    "amavis[7]: (07-3) Passed CLEAN {X}, <a, Hits: 1.5, @b> -> <c@d>, Queue-ID: 4F2A81C0042, "
    "Hits: 1.5, queued_as: 9B1C2D3E4F5/x, Message-ID: <bad id>, 1 ms",
    "dovecot[8]: lmtp(a@example.com)<1><x>: msgid=<m@x>: saved mail to INBOX",
    "postfix/smtpd[1]: 4F2A81C0042: client=a\x1b[31mred\x1b[0m[192.0.2.66]",
    "postfix/smtpd[1]: 4F2A81C0042: client=tab\there[192.0.2.66]",
    "postfix/smtpd[1]: 4F2A81C0042: client=é[192.0.2.66]",
]
HOSTILE_LINES = [
    *(f"{BSD} {b}" for b in BODIES),
    *(f"{ISO} {b}" for b in BODIES),
    *(f"2026-11-29T17:32:45Z mx1 {b}" for b in BODIES[:6]),
    *(f"Nov  9 17:32:45.5 mx1 {b}" for b in BODIES[:6]),
    "Feb 31 17:32:45 mx1 postfix/smtpd[1]: connect from x[192.0.2.1]",
    "Feb 31 17:32:45 mx1 postfix/qmgr[3]: 4F2A81C0042: removed",
    "Feb 29 17:32:45 mx1 postfix/qmgr[3]: 4F2A81C0042: removed",
    "",
    "   ",
    "\x0b\x0c \t",  # blank to bytes.strip()
    "\x1c\x1d\x1e",  # blank to str.strip() only: binary junk, not a blank line
    "\x01\x02 binary junk",
    "a line no program wrote",
    f"{BSD} postfix/smtp[9]: 4F2A81C0042: to=<{'a' * 120_000}@b>, relay=none, delay=1, "
    "delays=1/0/0/0, dsn=5.0.0, status=bounced (x)",
    f"{BSD} postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.1]: 550 "
    + "; from=<" * 3000 + " to=<a@b> proto=ESMTP helo=<h>",
]
ALL_LINES = LAB_LINES + HOSTILE_LINES


def _fields(record: Record) -> tuple[object, ...]:
    """Everything a record says, the read number aside (two parsers are two reads), with
    the type of its fields mapping and their order (JSON writes them in that order)."""
    return (
        *(getattr(record, name) for name in FIELDS),
        type(record.fields),
        tuple(record.fields.items()),
    )


def test_the_fixtures_are_read() -> None:
    # the comparison below is only as good as the lines it sees
    assert len(FILES) >= 20 and len(LAB_LINES) > 1500
    kinds = set()
    core = parse_module._Core(CTX)
    for line in ALL_LINES:
        record = core.parse(line)
        if record is not None:
            kinds.add(record.kind)
    assert kinds >= {Kind.DELIVERY, Kind.QUEUED, Kind.CLIENT, Kind.MESSAGE_ID, Kind.REMOVED,
                     Kind.REJECT, Kind.VERDICT, Kind.CONNECT, Kind.DIAGNOSTIC, Kind.PICKUP,
                     Kind.NOTIFICATION, Kind.EXPIRED}


@pytest.mark.parametrize("line", ALL_LINES, ids=range(len(ALL_LINES)))
def test_skipping_core_equals_the_full_core(line: str) -> None:
    full_core, skipping_core = parse_module._Core(CTX), parse_module._Core(CTX)
    full = full_core.parse(line, keep_all=True)
    fast = skipping_core.parse(line, keep_all=False)
    assert full_core.extra == skipping_core.extra or fast is parse_module._SKIPPED
    if fast is parse_module._SKIPPED:
        # only a line with nothing for tracing is skipped; a bad date is a Postfix line still
        assert full is None or (full.queue_id is None and full.kind is not Kind.REJECT
                                and full.kind is not Kind.VERDICT and full.child is None)
        return
    assert (fast is None) == (full is None)
    if fast is not None and full is not None:
        assert _fields(fast) == _fields(full)


def _amavis_texts() -> Iterator[str]:
    for line in ALL_LINES:
        i = line.find("amavis")
        if i >= 0:
            yield line[line.find(": ", i) + 2 :]
    # every place and value shape of the four fields, alone, twice, and after each other
    values = {
        "Queue-ID": ["4F2A81C0042", "9B1C2D3E4F5", "4jcvDj3dCzzC5v1", "NOQUEUE", "4F2A"],
        "queued_as": ["9B1C2D3E4F5", "9B1C2D3E4F5/x/y", "bad!"],
        "Hits": ["-", "-1.25", "3", "1.2.3", "1234567"],
        "Message-ID": ["<m@x>", "<a b>", "<>", "<x@y>"],
    }
    for key, vals in values.items():
        for v in vals:
            for w in vals:
                yield f"x, {key}: {v}, {key}: {w}, end"
                yield f"x, {key}: {v}, Hits: 1, {key}: {w}, y, Queue-ID: {w},, "
            yield f", {key}: {v}, "
            yield f", {key}: {v}"
            yield f", {key}: {v}, , {key}: {v},{key}: {v}, "


@pytest.mark.parametrize("text", sorted(set(_amavis_texts())))
def test_amavis_fields_equal_the_reference(text: str) -> None:
    assert parse_module._amavis_fields(text) == parse_module._amavis_fields_reference(text)


def _blocks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _two_reads(raw: list[bytes], block: int) -> tuple[LineParser, list[Record], LineParser,
                                                       list[Record]]:
    per_line = LineParser(CTX, samples=10_000)
    slow = list(per_line.parse(raw))
    blocked = LineParser(CTX, samples=10_000)
    fast = list(blocked.parse_blocks(_blocks(b"".join(r + b"\n" for r in raw), block)))
    return per_line, slow, blocked, fast


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(FIXTURES)) for p in FILES])
def test_blocks_equal_lines_on_every_fixture(path: Path) -> None:
    raw = _raw_lines(path)
    if raw and raw[-1] == b"":
        raw.pop()
    per_line, slow, blocked, fast = _two_reads(raw, 4096)
    assert [_fields(r) for r in fast] == [_fields(r) for r in slow]
    assert blocked.stats == per_line.stats


# Hostile bytes as a file holds them: a clean block, then blocks with undecodable bytes,
# NULs and an over-long line, each of which takes its block to the per-line path.
HOSTILE_RAW = [line.encode() for line in HOSTILE_LINES if "\n" not in line]
DAMAGED = [
    f"{BSD} postfix/qmgr[3]: 4F2A81C0042: from=<\xff@b>, size=1, nrcpt=1".encode("latin-1"),
    f"{BSD} postfix/qmgr[3]: 4F2A81C0042: removed\x00\x00".encode(),
    f"{BSD} dovecot[8]: \xc3( bad".encode("latin-1"),
]


@pytest.mark.parametrize("block", [64, 4096, 65536])
@pytest.mark.parametrize("damaged", [False, True])
def test_blocks_equal_lines_on_hostile_bytes(block: int, damaged: bool) -> None:
    raw = HOSTILE_RAW + (DAMAGED if damaged else [])
    per_line, slow, blocked, fast = _two_reads(raw, block)
    assert [_fields(r) for r in fast] == [_fields(r) for r in slow]
    assert blocked.stats == per_line.stats
    assert blocked.stats.unknown >= 2 and blocked.stats.blank >= 2 and blocked.stats.bad >= 2


@pytest.mark.parametrize(
    "client",
    ["mx.example.net[192.0.2.7]", "mx[192.0.2.7]:25", "unknown[2001:db8::1]:587", "local",
     "a[b[c]d]", "x[", "x]", "[", "]", "", "n[private/lmtp]", "x[1]y[2]", "x[1]]"],
)
def test_client_ip_equals_parse_endpoint(client: str) -> None:
    assert client_ip(client) == parse_endpoint(client).address


def test_groups_and_counts_equal_over_both_parse_paths() -> None:
    # the whole lab through the block path and the per-line path: the same groups, rows
    # and summary counts (the assembler's own fast paths see every kind of line here)
    raw = [line.encode() for line in LAB_LINES if "\n" not in line]
    _, slow, _, fast = _two_reads(raw, 65536)

    def built(records: list[Record]) -> tuple[list[object], list[object]]:
        asm, counter = Assembler("mx1"), Counter("mx1")
        groups, counts = [], []
        for r in records:
            groups += asm.add(r)
            counts += counter.add(r)
        groups += asm.finish().groups
        counts += counter.finish()[0]
        rows = [dataclasses.astuple(row) for g in groups for row in rows_of_group(g)]
        shape = [(g.queue_id, g.client, g.client_ip, g.recipients, g.children, g.rejects,
                  message_count(g)) for g in groups]
        return shape + rows, sorted(counts, key=repr)

    assert built(fast) == built(slow)
    assert len(built(fast)[0]) > 100


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York", "Pacific/Kiritimati"])
@pytest.mark.parametrize(
    "reference",
    ["2026-01-01T00:30:00+00:00", "2026-06-15T12:00:00+00:00", "2028-02-28T23:00:00+00:00",
     "2028-02-29T10:00:00-05:00", "2026-12-31T23:59:59+14:00", "2025-03-30T01:30:00+00:00"],
)
def test_remembered_years_equal_the_year_of_each_stamp(zone: str, reference: str) -> None:
    # _bsd_time keeps a date's year once every time of that date gets it; the stamps come in
    # an order that fills the memory first, then hits it, at every time of day that could
    # fall on the other side of the reference
    from zoneinfo import ZoneInfo

    ref = datetime.fromisoformat(reference)
    tz = ZoneInfo(zone)
    ctx = TimeContext(tz=tz, reference=ref)
    slack = ref + parse_module.timedelta(days=1)
    near = {f"{t:%H:%M:%S}" for t in (slack.astimezone(tz), slack.astimezone(tz)
                                      - parse_module.timedelta(seconds=1))}
    times = sorted({"00:00:00", "01:30:00", "02:30:00", "12:00:00", "23:59:59", *near})
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    stamps = [f"{m} {d:2d} {t}" for m in months for d in range(1, 32) for t in times]
    core = parse_module._Core(ctx)
    for stamp in stamps + stamps[::-1]:
        month = parse_module._MONTHS[stamp[:3]]
        day = int(stamp[4:6])
        h, mi, s = (int(x) for x in stamp[7:].split(":"))
        try:
            want: object = core._bsd_time_reference(month, day, h, mi, s, stamp)
        except ValueError:
            want = ValueError
        try:
            got: object = core._bsd_time(stamp)
        except ValueError:
            got = ValueError
        assert got == want, stamp
    assert core._years  # the memory was used
