"""``search --to`` leaves the delivery lines out of pass 2 on the host: the rows stay the same.

Pass 1 of a ``--to`` search prints every delivery line of the recipients asked for (each one
holds ``to=<ADDR>``, its own or its ``orig_to``), so pass 2 may leave out every line whose
message text is ``QID: to=<...``: only the other recipients' lines go, and they make rows the
query does not select. The tests run both ways on the real Postfix lab's logs and compare
every field of every row, and check that log content (a sender, a message-id, a client name
chosen to look like a delivery line) never makes the host leave a line out.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lab_fleet import HOSTS, LAB, build_central_fleet, copy_lab_host, lab_host, log_path

from collector.inventory.load import load_inventory
from collector.inventory.origins import plan_readings
from collector.logs import commands
from collector.logs.commands import (
    DELIVERY_LINE,
    DELIVERY_LINE_AT,
    DELIVERY_LINE_RE,
    carries_id,
    id_patterns,
    ids_file_commands,
    journal_ids_command,
)
from collector.logs.parse import TimeContext, parse_line
from collector.logs.select import select_rows
from collector.models import Host, Kind, Query, Row, TransportKind
from collector.search.host import HostSearcher, SearchContext, search_reader
from collector.transport import open_session
from collector.transport.base import lines_of
from collector.transport.local import LocalSession

NOW = datetime(2026, 12, 1, tzinfo=UTC)
HOSTILE = LAB / "hostile"
CTX = TimeContext(UTC, NOW)


class Tally:
    """A session that counts the bytes pass 2 sends back and the pass-2 commands that drop."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.pass2 = 0
        self.dropping = 0
        self.keeping = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def stream_chunks(self, argv: Sequence[str], **kwargs: Any) -> Iterator[bytes]:
        pass2 = "/dev/fd/5" in argv
        if pass2:
            if DELIVERY_LINE in argv or DELIVERY_LINE_AT in argv:
                self.dropping += 1
            else:
                self.keeping += 1
        for chunk in self._session.stream_chunks(argv, **kwargs):
            if pass2:
                self.pass2 += len(chunk)
            yield chunk

    def stream(self, argv: Sequence[str], **kwargs: Any) -> Iterator[bytes]:
        return lines_of(self.stream_chunks(argv, **kwargs))


def answers(session: Any, query: Query, *, drop: bool, reading: Any = None
            ) -> tuple[dict[str, list[Row]], Tally]:
    """Each answering host's rows (every field), and what pass 2 sent."""
    tally = Tally(session)
    found = search_reader(tally, query, UTC, NOW, reading=reading, drop_deliveries=drop)  # type: ignore[arg-type]
    return {r.host: select_rows([r.log], query) for r in found}, tally


def addresses(*logs: Path) -> list[str]:
    """Every to= and orig_to= address the logs name (recipients and their aliases)."""
    found: set[str] = set()
    for log in logs:
        found.update(re.findall(r"to=<([^>]*)>", log.read_text(encoding="utf-8")))
    return sorted(found)


def lab_logs(lab: Path = LAB) -> list[Path]:
    return [lab / name / log_path(name).lstrip("/") for name in HOSTS]


def lab_hosts(tmp_path: Path, lab: Path = LAB) -> list[Host]:
    mtimes = json.loads((lab / "mtimes.json").read_text())
    return [lab_host(copy_lab_host(tmp_path, name, lab, mtimes), name) for name in HOSTS]


def assert_same_rows(hosts: Sequence[Host], queries: Sequence[Query]) -> tuple[int, int, int]:
    """Rows with and without the drop are equal for every query on every host; returns the
    rows compared and pass 2's bytes both ways."""
    rows = kept = dropped = 0
    for query in queries:
        for host in hosts:
            full, keep = answers(LocalSession(host), query, drop=False)
            less, drop = answers(LocalSession(host), query, drop=True)
            assert less == full, (host.name, query)
            assert keep.dropping == 0
            if keep.pass2:
                assert drop.dropping and not drop.keeping, (host.name, query)
            rows += sum(len(r) for r in full.values())
            kept += keep.pass2
            dropped += drop.pass2
    return rows, kept, dropped


# --------------------------------------------------------------------------- the regex

FORGED_QID = "D3850168042"
FORGED_KINDS = {"from=<": Kind.QUEUED, "message-id=": Kind.MESSAGE_ID, "client=": Kind.CLIENT,
                "reject: ": Kind.REJECT}
#: (line, left out by pass 2): real lab shapes, and lines whose attacker-chosen parts spell a
#: delivery line. Only the first shape is a delivery line.
LINES = [
    ("Nov 29 17:32:44 out1 postfix-out1/smtp[23807]: D3850168042: to=<dave@example.net>, "
     "relay=none, delay=0.12, delays=0.09/0.03/0/0, dsn=4.4.1, status=deferred (connect)", True),
    ("2026-11-29T17:32:46.434665+00:00 mbox1 postfix/virtual[23804]: 4jcvPB33N1zC68p: "
     "to=<bob@example.test>, orig_to=<fwd@mbox1.example.test>, relay=virtual, delay=0, "
     "delays=0/0/0/0, dsn=2.0.0, status=sent (delivered to maildir)", True),
    ("2026-11-29T17:32:46+0000 mbox1 postfix/virtual[1]: 4jcvPB33N1zC68p: to=<b@x>", True),
    ("2026-11-29T17:32:46Z mbox1 postfix/virtual[1]: 4jcvPB33N1zC68p: to=<b@x>", True),
    ("Nov  9 17:32:44 out1 postfix/smtp: D3850168042: to=<a@x>, relay=x", True),
    ("Nov 09 17:32:44.123456 out1 postfix/smtp[1]:D3850168042: to=<a@x>, relay=x", True),
    # a sender, a message-id, a client name and a HELO written as a delivery line
    ('Nov 29 17:32:44 out1 postfix/qmgr[1]: D3850168042: from=<"]: D3850168042: to=<"@evil>, '
     "size=1, nrcpt=1 (queue active)", False),
    ('Nov 29 17:32:44 out1 postfix/qmgr[1]: D3850168042: from=<"x: D3850168042: to=<"@e>, '
     "size=1, nrcpt=1 (queue active)", False),
    ("Nov 29 17:32:44 out1 postfix/cleanup[1]: D3850168042: message-id=<: D3850168042: to=<a@x>>",
     False),
    ("Nov 29 17:32:44 out1 postfix/smtpd[1]: D3850168042: client=a: D3850168042: to=<a[1.2.3.4]",
     False),
    ("Nov 29 17:32:44 out1 postfix/cleanup[1]: D3850168042: reject: RCPT from x; from=<a> "
     "to=<a@x> proto=ESMTP helo=<]: D3850168042: to=<a@x>>", False),
    ("Nov 29 17:32:44 out1 postfix/smtp[1]: warning: D3850168042: to=<a@x>, relay=x", False),
    ("Nov 29 17:32:44 out1 postfix/smtp[1]:  D3850168042: to=<a@x>, relay=x", False),
    ("Nov 29 17:32:44 out1 postfix/smtp[1]: D3850168042: to=a@x, relay=x", False),
    ("Nov 29 17:32:44 out1 postfix/smtp[1]: message repeated 2 times: [ D3850168042: to=<a@x>]",
     False),
    ("Nov 29 17:32:44 out1 postfix/smtp[1]: NOQUEUE: to=<a@x>, relay=x", False),
    ("Nov 29 17:32:44 out1 postfix/smtp[1]: D3850: to=<a@x>, relay=x", False),  # no queue ID
    ("Nov 29 17:32:44 out1 postfix/smtp[١]: D3850168042: to=<a@x>, relay=x", False),  # \d
    ("x Nov 29 17:32:44 out1 postfix/smtp[1]: D3850168042: to=<a@x>, relay=x", False),
]


def grep_keeps(lines: Sequence[str]) -> list[str]:
    out = subprocess.run(["grep", "-v", "-E", "-a", "-e", DELIVERY_LINE],
                         input="".join(line + "\n" for line in lines).encode(),
                         capture_output=True, env={"LC_ALL": "C"}, check=False)
    assert out.returncode in (0, 1), out.stderr
    return out.stdout.decode().splitlines()


def test_grep_and_python_leave_out_the_same_lines_and_only_delivery_lines() -> None:
    kept = grep_keeps([line for line, _ in LINES])
    assert kept == [line for line, dropped in LINES if not dropped]
    for line, dropped in LINES:
        assert (DELIVERY_LINE_RE.match(line) is not None) is dropped, line
        rec = parse_line(line, CTX)
        if dropped:  # the parser reads it as a delivery line (fields and all, when whole)
            assert rec is not None and rec.queue_id is not None and not rec.severity, line
            assert rec.kind is (Kind.DELIVERY if "status=" in line else Kind.OTHER), line
        else:  # a forged line is read as what it is, which the rows need
            for start, kind in FORGED_KINDS.items():
                if f"]: {FORGED_QID}: {start}" in line:
                    assert rec is not None and rec.kind is kind, line


@pytest.mark.parametrize("lab", [LAB, HOSTILE], ids=["lab", "hostile"])
def test_on_the_lab_s_lines_the_regex_is_the_parser_s_delivery_line(lab: Path) -> None:
    seen = 0
    for log in lab_logs(lab):
        lines = log.read_text(encoding="utf-8").splitlines()
        assert grep_keeps(lines) == [x for x in lines if not DELIVERY_LINE_RE.match(x)]
        for line in lines:
            rec = parse_line(line, CTX)
            delivery = (rec is not None and rec.kind is Kind.DELIVERY and not rec.severity
                        and "message repeated" not in line)
            assert (DELIVERY_LINE_RE.match(line) is not None) is delivery, line
            seen += delivery
    assert seen > 5


def test_carries_id_is_pass_2_s_fixed_strings() -> None:
    ids = {"D3850168042", "4jcvPB33N1zC68p"}
    for line in [line for line, _ in LINES] + ["a Queue-ID: 4jcvPB33N1zC68p, b", "x: y"]:
        fixed = any(p in line for p in id_patterns(sorted(ids)))
        assert carries_id(line, ids) is fixed, line


# --------------------------------------------------------------------------- rows


def test_rows_are_the_same_on_the_lab_for_every_recipient_and_alias(tmp_path: Path) -> None:
    hosts = lab_hosts(tmp_path)
    everyone = addresses(*lab_logs())
    # orig_to aliases, multi-recipient messages, a deferred one, bounces, a reject with its ID
    for must in ("fwd@mbox1.example.test", "root", "dave@example.net", "erin@example.net",
                 "nosuchuser@example.test", "blocked@example.test"):
        assert must in everyone
    queries = [Query(recipients=(a,)) for a in everyone]
    queries.append(Query(recipients=("dave@example.net", "Erin@Example.NET")))
    queries.append(Query(recipients=("bob@example.test",), senders=("alice@example.test",)))
    queries.append(Query(recipients=("dave@example.net",), statuses=("deferred",)))
    rows, kept, dropped = assert_same_rows(hosts, queries)
    assert rows > 100
    assert dropped < kept * 0.7, (kept, dropped)


def test_rows_are_the_same_on_the_hostile_lab(tmp_path: Path) -> None:
    hosts = lab_hosts(tmp_path, HOSTILE)
    queries = [Query(recipients=(a,)) for a in addresses(*lab_logs(HOSTILE))]
    rows, kept, dropped = assert_same_rows(hosts, queries)
    assert rows > 5 and dropped < kept


def one_host(tmp_path: Path, lines: Sequence[str], name: str = "out1") -> Host:
    log = tmp_path / name / "var" / "log"
    log.mkdir(parents=True)
    (log / "maillog").write_text("".join(line + "\n" for line in lines))
    return Host(name, transport=TransportKind.LOCAL, root=str(tmp_path / name),
                logs=("/var/log/maillog",), timezone="UTC")


def lab_message(name: str, qid: str) -> list[str]:
    log = LAB / name / log_path(name).lstrip("/")
    return [x for x in log.read_text().splitlines() if f" {qid}: " in x]


def test_deferred_then_sent_in_the_same_second_as_another_recipient(tmp_path: Path) -> None:
    lines = lab_message("out1", "D3850168042")
    assert len([x for x in lines if "status=deferred" in x]) >= 10
    # The lab stopped before out1 delivered: its next try, dave sent in the same second as
    # erin's retry and the removal.
    last = "Nov 29 17:34:20 out1 postfix-out1/smtp[23807]: D3850168042: "
    lines += [
        last + "to=<erin@example.net>, relay=none, delay=95, delays=95/0/0/0, dsn=4.4.1, "
        "status=deferred (connect to 127.0.0.9[127.0.0.9]:2599: Connection refused)",
        last + "to=<dave@example.net>, relay=127.0.0.9[127.0.0.9]:2599, delay=95, "
        "delays=95/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        "Nov 29 17:34:20 out1 postfix-out1/qmgr[23798]: D3850168042: removed",
    ]
    host = one_host(tmp_path, lines)
    for who in ("dave@example.net", "erin@example.net"):
        query = Query(recipients=(who,))
        full, keep = answers(LocalSession(host), query, drop=False)
        less, drop = answers(LocalSession(host), query, drop=True)
        assert less == full and drop.pass2 < keep.pass2
        (row,) = full["out1"]
        assert str(row.status) == ("sent" if who.startswith("dave") else "deferred")


def test_a_forged_sender_message_id_or_client_is_never_left_out(tmp_path: Path) -> None:
    lines = lab_message("out1", "D3850168042")
    qid = "D3850168042"
    forged_from = f'"]: {qid}: to=<"@evil.example'
    forged_id = f"<: {qid}: to=<dave@example.net>>"
    out = []
    for x in lines:
        x = re.sub(r"from=<[^>]*>", lambda _: f"from=<{forged_from}>", x)
        x = re.sub(r"message-id=<.*", lambda _: f"message-id={forged_id}", x)
        x = re.sub(r"client=\S+", lambda _: f"client=x: {qid}: to=<dave@example.net>[1.2.3.4]",
                   x)
        out.append(x)
    host = one_host(tmp_path, out)
    query = Query(recipients=("dave@example.net",))
    full, _ = answers(LocalSession(host), query, drop=False)
    less, _ = answers(LocalSession(host), query, drop=True)
    assert less == full
    (row,) = full["out1"]
    assert row.sender == forged_from and row.message_id == forged_id
    assert row.client == f"x: {qid}: to=<dave@example.net>[1.2.3.4]"
    # and the host sent those lines: run pass 2 itself
    (cmd,) = ids_file_commands(str(tmp_path / "out1/var/log/maillog"), [qid],
                               drop_deliveries=True)
    printed = subprocess.run(cmd.argv, input=cmd.stdin, capture_output=True, check=True)
    text = printed.stdout.decode()
    assert f"from=<{forged_from}>" in text and f"message-id={forged_id}" in text
    assert "client=x: " in text and " to=<dave@" not in text.replace(f": {qid}: to=<", "")


def test_a_rotation_compressed_and_a_time_window(tmp_path: Path) -> None:
    hosts = []
    for name in HOSTS:
        root = copy_lab_host(tmp_path, name)
        live = root / log_path(name).lstrip("/")
        lines = live.read_text().splitlines(keepends=True)
        half = len(lines) // 2
        live.with_name(live.name + ".1.gz").write_bytes(gzip.compress("".join(lines[:half]).encode()))
        live.write_text("".join(lines[half:]))
        hosts.append(Host(name, transport=TransportKind.LOCAL, root=str(root), timezone="UTC",
                          logs=(log_path(name), log_path(name) + ".1.gz")))
    since = datetime(2026, 11, 29, 17, 32, 44, tzinfo=UTC)
    until = datetime(2026, 11, 29, 17, 33, 10, tzinfo=UTC)
    queries = [Query(recipients=(a,)) for a in ("dave@example.net", "bob@example.test",
                                                "fwd@mbox1.example.test", "alice@example.test")]
    queries += [Query(recipients=("dave@example.net",), since=since, until=until),
                Query(recipients=("bob@example.test",), since=since)]
    rows, kept, dropped = assert_same_rows(hosts, queries)
    assert rows > 20 and dropped < kept


def test_a_log_host_carrying_several_hosts(tmp_path: Path) -> None:
    inv = load_inventory(build_central_fleet(tmp_path, "combined"))
    everyone = addresses(*lab_logs())
    compared = 0
    for selected, everything in ((inv.hosts, True), ([h for h in inv.hosts if h.name == "mx1"],
                                                      False)):
        for reading in plan_readings(inv.hosts, selected, everything=everything):
            for who in everyone:
                query = Query(recipients=(who,))
                session = open_session(reading.host, inv.settings)
                full, keep = answers(session, query, drop=False, reading=reading)
                less, drop = answers(session, query, drop=True, reading=reading)
                assert less == full, (reading.host.name, who)
                assert drop.pass2 <= keep.pass2
                compared += sum(len(r) for r in full.values())
    assert compared > 50


def test_a_host_printing_more_delivery_lines_than_the_budget_keeps_them_in_pass_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("collector.search.host.MAX_DELIVERED", 3)
    hosts = lab_hosts(tmp_path)
    query = Query(recipients=("dave@example.net",))
    for host in hosts:
        full, _ = answers(LocalSession(host), query, drop=False)
        less, drop = answers(LocalSession(host), query, drop=True)
        assert less == full, host.name
        if host.name == "out1":  # 8 of dave's delivery lines: over the budget, nothing dropped
            assert drop.keeping and not drop.dropping


# --------------------------------------------------------------------------- where it applies


@pytest.mark.parametrize("block", [1, 512, 4096])
def test_windows_drop_delivery_lines_as_the_whole_file_pass_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """Windows that leave the delivery lines out on the host give the rows the windows that
    keep them give (pass 1's delivery lines of each ID read in a window come in their
    place), and the IDs a window cut are read whole, without them, as before."""
    monkeypatch.setattr(commands, "WINDOW_COST_BYTES", 1)
    monkeypatch.setattr(commands, "WINDOW_BLOCK", block)
    monkeypatch.setattr(commands, "WINDOW_BEFORE", 900)
    monkeypatch.setattr(commands, "WINDOW_AFTER", 2500)
    monkeypatch.setattr("collector.search.host.windows_worth_it",
                        lambda wins, size: True)
    hosts = lab_hosts(tmp_path)
    windowed = dropped = 0
    for who in ("dave@example.net", "bob@example.test", "root", "alice@example.test"):
        query = Query(recipients=(who,))
        for host in hosts:
            session = LocalSession(host)
            full = HostSearcher(session, SearchContext(UTC, NOW))
            full.search(query)
            less = HostSearcher(session, SearchContext(UTC, NOW))
            less.search(query, drop_deliveries=True)
            assert select_rows([less.log()], query) == select_rows([full.log()], query)
            assert not any(DELIVERY_LINE_AT in c.argv for c in full.ran)
            for c in less.ran:
                if c.kind is commands.CommandKind.WINDOW_IDS:
                    windowed += 1
                    dropped += DELIVERY_LINE_AT in c.argv
    assert windowed and dropped == windowed


@pytest.mark.parametrize("query", [
    Query(terms=("dave@example.net",)),  # trace
    Query(message_ids=("<multi_split.20261129173200@lab.example.test>",)),
    Query(queue_ids=("D3850168042",), recipients=("dave@example.net",)),
    Query(senders=("alice@example.test",)),
    Query(statuses=("deferred",)),
])
def test_only_a_recipient_search_drops(tmp_path: Path, query: Query) -> None:
    for host in lab_hosts(tmp_path):
        searcher = HostSearcher(LocalSession(host), SearchContext(UTC, NOW))
        searcher.search(query, drop_deliveries=True)
        assert not any(DELIVERY_LINE in c.argv for c in searcher.ran)


def test_nothing_drops_unless_asked_and_not_after_the_search(tmp_path: Path) -> None:
    query = Query(recipients=("dave@example.net",))
    for host in lab_hosts(tmp_path):
        plain = HostSearcher(LocalSession(host), SearchContext(UTC, NOW))
        plain.search(query)
        assert not any(DELIVERY_LINE in c.argv for c in plain.ran)
        searcher = HostSearcher(LocalSession(host), SearchContext(UTC, NOW))
        ids = searcher.search(query, drop_deliveries=True)
        if ids:
            assert any(DELIVERY_LINE in c.argv for c in searcher.ran)
        before = len(searcher.ran)
        searcher.fetch_ids({"A9E31168161", "ABC93168171", "B0148168161"} - ids)  # a trace's next round
        assert not any(DELIVERY_LINE in c.argv for c in searcher.ran[before:])


# --------------------------------------------------------------------------- exit statuses


def run_drop(path: Path, ids: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    (cmd,) = ids_file_commands(str(path), ids, drop_deliveries=True)
    return subprocess.run(cmd.argv, input=cmd.stdin, capture_output=True, check=False)


def test_exit_statuses_stay_honest(tmp_path: Path) -> None:
    lines = lab_message("out1", "D3850168042")
    log = tmp_path / "maillog"
    log.write_text("".join(x + "\n" for x in lines))
    ok = run_drop(log, ["D3850168042"])
    assert ok.returncode == 0 and b"removed" in ok.stdout and b" to=<" not in ok.stdout
    assert run_drop(log, ["ABCDEF0123"]).returncode == 1  # no line of the ID
    only = tmp_path / "only"
    only.write_text("".join(x + "\n" for x in lines if DELIVERY_LINE_RE.match(x)))
    every = run_drop(only, ["D3850168042"])
    assert every.returncode == 1 and every.stdout == b""  # every line left out: no match
    packed = gzip.compress(log.read_bytes())
    damaged = tmp_path / "maillog.1.gz"
    damaged.write_bytes(packed[: len(packed) // 2])
    broken = run_drop(damaged, ["D3850168042"])
    assert broken.returncode == commands.EXIT_DAMAGED and b"decompress" in broken.stderr
    assert run_drop(tmp_path / "gone.log", ["D3850168042"]).returncode == commands.EXIT_VANISHED
    (tmp_path / "adir").mkdir()
    assert run_drop(tmp_path / "adir", ["D3850168042"]).returncode == 2  # a failed read
    whole = tmp_path / "maillog.2.gz"
    whole.write_bytes(packed)
    assert run_drop(whole, ["D3850168042"]).stdout == ok.stdout


def test_the_journal_pass_2_runs_the_same_regex_after_its_grep() -> None:
    cmd = journal_ids_command(["D3850168042"], since=None, until=None, drop_deliveries=True)
    assert cmd.argv[cmd.argv.index(DELIVERY_LINE) + 1:] == commands.PATTERNS_FROM_STDIN
    assert "grep -v -E -a -e \"$x\"" in cmd.argv[2]
    plain = journal_ids_command(["D3850168042"], since=None, until=None)
    assert DELIVERY_LINE not in plain.argv and cmd.stdin == plain.stdin
