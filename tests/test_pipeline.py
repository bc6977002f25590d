"""pipeline: one host's search over the local transport, on the Postfix lab's real logs.

Each lab host's directory is copied to a temporary root with a ``collector-manifest.json`` of
the logs' original mtimes (what scripts/build_demo.py does), so the year of a syslog stamp
comes out right. The lab fleet itself is built by tests/lab_fleet.py.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lab_fleet import (
    EXPECTED,
    HOSTS,
    LAB,
    MTIMES,
    SCENARIOS,
    copy_lab_host,
    lab_host,
    log_path,
    write_manifest,
)

from collector.logs import commands as retrieval
from collector.logs.commands import CommandKind
from collector.logs.parse import LineParser, TimeContext
from collector.logs.select import select_rows
from collector.models import (
    Host,
    HostLog,
    Kind,
    LogSource,
    Query,
    ReadProblem,
    Record,
    Unread,
)
from collector.search.host import (
    HostSearch,
    HostSearcher,
    SearchContext,
    complete_lives,
    search_host,
)
from collector.search.summary import summarize_host
from collector.search.view import discover_host
from collector.transport.local import LocalSession

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def search(host: Host, query: Query) -> HostSearch:
    return search_host(LocalSession(host), query, UTC, NOW)


def rows_of(result: HostSearch, query: Query) -> list[Any]:
    return select_rows([result.log], query)


def group_keys(log: HostLog) -> list[tuple[Any, ...]]:
    """What a search found, independent of which commands found it."""
    return [
        (
            g.queue_id,
            g.first_time,
            g.last_time,
            g.sender,
            g.message_id,
            g.client,
            tuple(
                (r.address, r.orig_address, tuple(a.status for a in r.attempts))
                for r in g.recipients
            ),
            tuple(c.queue_id for c in g.children),
            len(g.records),
            g.removed,
            g.expired,
        )
        for g in log.groups
    ] + [(r.time, r.recipient, r.response) for r in log.rejects]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Host]:
    """The lab hosts, copied once for the read-only tests of this module."""
    dest = tmp_path_factory.mktemp("lab")
    return {name: lab_host(copy_lab_host(dest, name), name) for name in HOSTS}


# --------------------------------------------------------------------------- discovery


def test_discovery_finds_each_lab_log_with_its_original_mtime(fleet: dict[str, Host]) -> None:
    for name, host in fleet.items():
        found = discover_host(LocalSession(host), host)
        (src,) = found.sources
        assert src.path == log_path(name)
        assert src.mtime == MTIMES[f"{name}{log_path(name)}"]
        assert src.size == (LAB / name / log_path(name).lstrip("/")).stat().st_size


# --------------------------------------------------------------------------- scenario rows

# Postfix's word for a recipient's last delivery line, by the lab's intended fate.
STATUS_OF_FATE = {
    "delivered": "sent",
    "forwarded": "sent",  # local(8) "forwarded as NEWID"
    "discarded": "sent",  # discard(8) logs status=sent (silently)
    "bounced": "bounced",
    "rejected": "rejected",
    "expired": "expired",  # qmgr's status=expired ends the deferred recipients
}

FATES = [
    pytest.param(s, f, id=f"{s['name']}-{f['recipient']}")
    for s in EXPECTED["scenarios"]
    for f in s["fates"]
]


@pytest.mark.parametrize(("scenario", "fate"), FATES)
def test_scenario_rows_match_the_intended_fate(
    fleet: dict[str, Host], scenario: dict[str, Any], fate: dict[str, Any]
) -> None:
    host = fleet[fate["at"]]
    query = Query(recipients=(fate["recipient"],))
    result = search(host, query)
    rows = rows_of(result, query)
    mine = [r for r in rows if r.message_id == scenario["message_id"]]
    if not mine:  # refused before DATA: a NOQUEUE reject names no message-id
        mine = [r for r in rows if r.queue_id is None and r.sender == scenario["sender"]]
    assert mine, f"no row for {fate['recipient']} on {fate['at']}"
    last = mine[-1]
    assert last.status == STATUS_OF_FATE[fate["fate"]]
    assert last.host == fate["at"]
    if "@" in fate["recipient"]:
        assert fate["recipient"] in (last.recipient, last.orig_recipient) or any(
            fate["recipient"] in (r.recipient, r.orig_recipient) for r in mine
        )
    if fate["fate"] == "rejected":
        assert last.dsn is not None and last.dsn[0] in "45"
        assert last.response
    if fate["fate"] == "forwarded":
        assert any(r.response.startswith("forwarded as ") for r in mine) or any(
            r.orig_recipient is not None for r in mine
        )
    if fate["fate"] == "expired":
        (group,) = [g for g in result.log.groups if g.queue_id == last.queue_id]
        assert group.expired and group.removed
    if fate["fate"] == "discarded":
        assert last.response == "silently"


def test_rows_for_every_recipient_on_the_entry_host(fleet: dict[str, Host]) -> None:
    """mx1 logs every message that entered over SMTP; by sender, each one's rows are there."""
    s = SCENARIOS["multi_split"]
    query = Query(senders=(s["sender"],), message_ids=(s["message_id"],))
    rows = rows_of(search(fleet["mx1"], query), query)
    assert sorted(r.recipient for r in rows) == sorted(s["recipients"])
    assert {r.status for r in rows} == {"sent"}
    assert {r.client for r in rows} == {f"ws1.example.test[{s['submitted']['client_ip']}]"}
    assert len({r.queue_id for r in rows}) == 1


def test_search_by_queue_id_client_and_status(fleet: dict[str, Host]) -> None:
    mx1 = fleet["mx1"]
    s = SCENARIOS["single"]
    by_mid = rows_of(search(mx1, Query(message_ids=(s["message_id"],))), Query())
    (row,) = by_mid
    query = Query(queue_ids=(row.queue_id,))
    assert rows_of(search(mx1, query), query) == [row]
    query = Query(clients=(s["submitted"]["client_ip"],), message_ids=(s["message_id"],))
    assert rows_of(search(mx1, query), query) == [row]
    query = Query(statuses=("rejected",))
    rejected = rows_of(search(mx1, query), query)
    wanted = {
        f["recipient"]
        for sc in EXPECTED["scenarios"]
        for f in sc["fates"]
        if f["fate"] == "rejected" and f["at"] == "mx1"
    }
    assert {r.recipient for r in rejected} == wanted
    assert all(r.status == "rejected" for r in rejected)


def test_time_only_query_reads_everything(fleet: dict[str, Host]) -> None:
    query = Query(since=datetime(2026, 11, 29, tzinfo=UTC))
    result = search(fleet["out1"], query)
    lines = (LAB / "out1" / log_path("out1").lstrip("/")).read_bytes().count(b"\n")
    assert result.log.stats.lines == lines
    late = Query(since=datetime(2026, 11, 30, tzinfo=UTC))
    result = search(fleet["out1"], late)
    assert result.log.groups == ()
    assert any("outside the time window" in n for n in result.notes)


def test_summarize_host_counts(fleet: dict[str, Host]) -> None:
    summary = summarize_host(LocalSession(fleet["mx1"]), Query(), UTC, NOW)
    counts = summary.counts
    entered = [s for s in EXPECTED["scenarios"] if s["submitted"]["host"] == "mx1"]
    noqueue = [s for s in entered if all(f["fate"] == "rejected" for f in s["fates"])]
    assert counts["rejected"] >= len(noqueue) + 1  # plus the reject logged with a queue ID
    assert counts["messages"] >= len(entered) - len(noqueue)
    assert counts["sent"] > 0


# --------------------------------------------------------------------------- pass 2


#: What each command kind is called in these tests.
PASSES = {
    CommandKind.MATCH: "pass1",
    CommandKind.MATCH_OFFSETS: "pass1",
    CommandKind.WINDOW_IDS: "window",
    CommandKind.IDS: "pass2",
}


def run_select(host: Host, query: Query) -> tuple[HostLog, list[str]]:
    """One host's two passes; the log, and which pass each command was."""
    searcher = HostSearcher(LocalSession(host), SearchContext(UTC, NOW))
    searcher.search(query)
    return searcher.log(), [PASSES.get(c.kind, c.kind.value) for c in searcher.ran]


def gzipped_copy(host: Host, tmp: Path) -> Host:
    """The same host with its log gzipped: compressed files are never read in windows."""
    name = host.name
    root = copy_lab_host(tmp, name)
    plain = root / log_path(name).lstrip("/")
    gz = plain.with_name(plain.name + ".1.gz")
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    plain.write_bytes(b"")
    mtime = MTIMES[f"{name}{log_path(name)}"]
    write_manifest(
        root,
        name,
        {
            log_path(name) + ".1.gz": {"mtime": mtime, "size": gz.stat().st_size},
            log_path(name): {"mtime": mtime + 60, "size": 0},
        },
    )
    return replace(host, root=str(root))


QUERIES = {
    "to-bob": Query(recipients=("bob@example.test",)),
    "from-alice": Query(senders=("alice@example.test",)),
    "to-dave": Query(recipients=("dave@example.net",)),
    "bounced-rejected": Query(statuses=("bounced", "rejected")),
    "client-filter1": Query(clients=("127.0.0.22",)),
}
CASES = [
    pytest.param(q, name, id=f"{q}-{name}")
    for name in ("filter1", "out1", "mbox1")
    for q in QUERIES
]


@pytest.mark.parametrize(("query_name", "name"), CASES)
def test_windowed_pass2_equals_full_pass2(
    fleet: dict[str, Host], name: str, query_name: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    query = QUERIES[query_name]
    full, full_kinds = run_select(gzipped_copy(fleet[name], tmp_path), query)
    assert "window" not in full_kinds
    # Tiny windows: most lives are cut, so pass 2 falls back to the whole file for them.
    monkeypatch.setattr(retrieval, "WINDOW_BEFORE", 300)
    monkeypatch.setattr(retrieval, "WINDOW_AFTER", 700)
    monkeypatch.setattr(retrieval, "WINDOW_COST_BYTES", 0)  # a lab log is small
    windowed, _ = run_select(fleet[name], query)
    assert group_keys(windowed) == group_keys(full)
    assert select_rows([windowed], query) == select_rows([full], query)


def test_tiny_windows_are_read_and_then_completed(
    fleet: dict[str, Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retrieval, "WINDOW_BEFORE", 300)
    monkeypatch.setattr(retrieval, "WINDOW_AFTER", 700)
    monkeypatch.setattr(retrieval, "WINDOW_COST_BYTES", 0)  # a lab log is small
    _, kinds = run_select(fleet["out1"], Query(recipients=("bob@example.test",)))
    assert kinds[0] == "pass1" and "window" in kinds and "pass2" in kinds


def test_windows_that_hold_every_life_need_no_second_read(
    fleet: dict[str, Host], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = Query(recipients=("bob@example.test",))
    full, _ = run_select(gzipped_copy(fleet["filter1"], tmp_path), query)
    monkeypatch.setattr(retrieval, "WINDOW_BEFORE", 4000)
    monkeypatch.setattr(retrieval, "WINDOW_AFTER", 6000)
    monkeypatch.setattr(retrieval, "WINDOW_COST_BYTES", 0)  # a lab log is small
    monkeypatch.setattr(retrieval, "WINDOW_MAX_SHARE", 1.0)
    windowed, kinds = run_select(fleet["filter1"], query)
    assert "window" in kinds
    assert group_keys(windowed) == group_keys(full)
    assert kinds.count("pass2") < len(full.groups)


# --------------------------------------------------------------------------- complete_lives


def parse_lines(lines: Sequence[bytes]) -> list[Record]:
    parser = LineParser(TimeContext(tz=UTC, reference=datetime(2026, 11, 29, 18, tzinfo=UTC)))
    return [r for r in map(parser.feed, lines) if r is not None]


def lab_lines(name: str) -> list[bytes]:
    return (LAB / name / log_path(name).lstrip("/")).read_bytes().splitlines()


def life(name: str, queue_id: str) -> list[Record]:
    return [r for r in parse_lines(lab_lines(name)) if r.queue_id == queue_id]


def first_id(name: str, kind: Kind, **fields: str) -> str:
    for r in parse_lines(lab_lines(name)):
        if r.kind is kind and r.queue_id and all(r.fields.get(k) == v for k, v in fields.items()):
            return r.queue_id
    raise AssertionError(f"no {kind} line on {name}")


def test_complete_lives_smtp_message() -> None:
    qid = first_id("filter1", Kind.CLIENT)
    records = life("filter1", qid)
    assert records[0].kind is Kind.CLIENT and records[-1].kind is Kind.REMOVED
    assert complete_lives(records) == {qid}
    assert complete_lives(records[1:]) == set()  # the start was cut off
    assert complete_lives(records[1:], reaches_end=True) == set()
    assert complete_lives(records[:-1]) == set()  # may still be queued
    assert complete_lives(records[:-1], reaches_end=True) == {qid}


def test_complete_lives_pickup_message() -> None:
    qid = first_id("mx1", Kind.PICKUP)
    records = life("mx1", qid)
    assert complete_lives(records) == {qid}
    assert complete_lives([r for r in records if r.kind is not Kind.PICKUP]) == set()


def test_complete_lives_internal_notification() -> None:
    # A bounce made by Postfix itself: no client=, no uid=; cleanup's message-id= starts it,
    # known to be internal only by the parent's "notification: ID" line (a null sender alone
    # is no proof: a notification relayed from another host comes in through smtpd).
    lines = lab_lines("out1")
    records = parse_lines(lines)
    child = next(r.child for r in records if r.kind is Kind.NOTIFICATION and r.child)
    assert child is not None
    own = [r for r in records if r.queue_id == child]
    assert not any(r.kind in (Kind.CLIENT, Kind.PICKUP) for r in own)
    assert complete_lives(own) == set()
    parent_line = [r for r in records if r.kind is Kind.NOTIFICATION and r.child == child]
    assert complete_lives(parent_line + own) >= {child}


def test_complete_lives_reinjected_child_needs_its_client_line() -> None:
    records = parse_lines(lab_lines("filter1"))
    parent = next(
        r
        for r in records
        if r.kind is Kind.DELIVERY
        and r.child
        and any(x.queue_id == r.child and x.kind is Kind.CLIENT for x in records)
    )
    own = [r for r in records if r.queue_id == parent.child]
    assert complete_lives([parent, *own]) == {parent.child}
    # the window missed the child's smtpd client= line: its life is not complete
    assert complete_lives([parent, *(r for r in own if r.kind is not Kind.CLIENT)]) == set()


def test_complete_lives_ignores_noqueue_and_keeps_ids_apart() -> None:
    records = parse_lines(lab_lines("mx1"))
    assert any(r.queue_id is None for r in records)
    done = complete_lives(records)
    ids = {r.queue_id for r in records if r.queue_id}
    assert done <= ids
    started = {r.queue_id for r in records if r.kind in (Kind.CLIENT, Kind.PICKUP)}
    removed = {r.queue_id for r in records if r.kind is Kind.REMOVED}
    assert started & removed <= done


# --------------------------------------------------------------------------- rotation and time


def rotate_filter1(dest: Path, older_mtime: float | None = None) -> Host:
    """filter1's log cut into maillog.2.gz (oldest), maillog.1 and maillog.

    The cuts fall inside messages, so some lives straddle two files.
    """
    root = copy_lab_host(dest, "filter1")
    logdir = root / "var" / "log"
    lines = (logdir / "maillog").read_bytes().splitlines(keepends=True)
    a, b = len(lines) // 3 + 1, 2 * len(lines) // 3 + 1
    parts = {"maillog.2.gz": lines[:a], "maillog.1": lines[a:b], "maillog": lines[b:]}
    end = MTIMES["filter1/var/log/maillog"]
    files: dict[str, dict[str, float | int]] = {}
    for i, (name, chunk) in enumerate(parts.items()):
        data = b"".join(chunk)
        (logdir / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        # mtime = the time of the chunk's last line (about): seconds apart, oldest first
        mtime = end - 60 * (2 - i)
        if name == "maillog.2.gz" and older_mtime is not None:
            mtime = older_mtime
        files[f"/var/log/{name}"] = {"mtime": mtime, "size": (logdir / name).stat().st_size}
    write_manifest(root, "filter1", files)
    return lab_host(root, "filter1")


def test_rotated_files_are_all_searched(fleet: dict[str, Host], tmp_path: Path) -> None:
    rotated = rotate_filter1(tmp_path)
    found = discover_host(LocalSession(rotated), rotated)
    assert [s.path for s in found.sources] == [
        "/var/log/maillog.2.gz",
        "/var/log/maillog.1",
        "/var/log/maillog",
    ]
    for query in (
        Query(recipients=("bob@example.test",)),
        Query(senders=("alice@example.test",)),
        Query(statuses=("bounced",)),
    ):
        whole = search(fleet["filter1"], query)
        split = search(rotated, query)
        assert group_keys(split.log) == group_keys(whole.log)
        assert rows_of(split, query) == rows_of(whole, query)
    # the rows really come from more than one file
    query = Query(senders=("alice@example.test",))
    times = [r.time for r in rows_of(search(rotated, query), query)]
    assert len(times) > 2


def test_a_file_older_than_since_is_skipped(tmp_path: Path) -> None:
    week_ago = MTIMES["filter1/var/log/maillog"] - 7 * 86400
    rotated = rotate_filter1(tmp_path, older_mtime=week_ago)
    since = datetime.fromtimestamp(week_ago, UTC) + timedelta(days=1)
    query = Query(senders=("alice@example.test",), since=since)
    result = search(rotated, query)
    assert "skipped /var/log/maillog.2.gz: outside the time window" in result.notes
    # nothing of the old file was read: its lines count nowhere
    kept = search(rotated, Query(senders=("alice@example.test",)))
    assert result.log.stats.lines < kept.log.stats.lines


def test_missing_explicit_log_is_a_note(fleet: dict[str, Host]) -> None:
    host = replace(fleet["mx1"], logs=("/var/log/nothere.log",))
    result = search(host, Query(recipients=("bob@example.test",)))
    assert result.log.groups == ()
    assert any("/var/log/nothere.log" in n for n in result.notes)


def test_unreadable_log_is_a_note(fleet: dict[str, Host]) -> None:
    host = fleet["mx1"]
    session = LocalSession(host)
    found = discover_host(session, host)
    locked = replace(found, sources=tuple(replace(s, readable=False) for s in found.sources))
    result = search_host(session, Query(recipients=("bob@example.test",)), UTC, NOW, found=locked)
    assert result.log.groups == ()
    assert f"cannot read {log_path('mx1')} (permission denied; set sudo = true?)" in result.notes
    assert result.unread == (Unread(log_path("mx1"), ReadProblem.PERMISSION),)


def test_log_that_vanished_after_discovery_is_a_note(fleet: dict[str, Host]) -> None:
    host = fleet["filter1"]
    session = LocalSession(host)
    found = discover_host(session, host)
    (src,) = found.sources
    gone = LogSource("/var/log/maillog.1", size=1000, mtime=(src.mtime or 0) - 60)
    query = Query(recipients=("bob@example.test",))
    result = search_host(session, query, UTC, NOW, found=replace(found, sources=(gone, src)))
    assert rows_of(result, query) == rows_of(search(host, query), query)
    assert any("/var/log/maillog.1" in n for n in result.notes)
    assert result.unread == (Unread("/var/log/maillog.1", ReadProblem.VANISHED),)


def test_damaged_gzip_is_a_note(tmp_path: Path) -> None:
    rotated = rotate_filter1(tmp_path)
    gz = Path(rotated.root or "") / "var" / "log" / "maillog.2.gz"
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    result = search(rotated, Query(senders=("alice@example.test",)))
    assert any("maillog.2.gz" in n for n in result.notes)
    assert result.unread == (Unread("/var/log/maillog.2.gz", ReadProblem.DAMAGED),)
