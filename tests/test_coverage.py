"""Coverage: when "nothing matched" is proven (absent, exit 1) and when it is not (inconclusive,
exit 3, the host and the time range said on stderr).

The pure ledger on hand-made sources, then the real CLI over the demo's real filter1 log cut
into rotations (one of them missing, damaged, or all there).
"""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import copy_demo, run

from collector.cli.app import ExitCode
from collector.logs.coverage import ledger
from collector.models import (
    Compression,
    Hole,
    LogSource,
    ReadProblem,
    SourceKind,
    SourceState,
    Unread,
)

T = datetime(2026, 11, 20, tzinfo=UTC)
NOW = T + timedelta(days=10)
DAY = timedelta(days=1)


def _file(path: str, last: datetime) -> LogSource:
    compression = Compression.GZIP if path.endswith(".gz") else Compression.NONE
    return LogSource(path, compression=compression, mtime=last.timestamp())


def _daily(*numbers: int) -> tuple[list[LogSource], dict[str, tuple[datetime | None, datetime | None]]]:
    """Daily rotations ``maillog.N`` (N days old, .gz from 2), oldest first, and their edges."""
    files, edges = [], {}
    for n in sorted(numbers, reverse=True):
        path = "/var/log/maillog" + (f".{n}" if n else "") + (".gz" if n >= 2 else "")
        start = NOW - (n + 1) * DAY + timedelta(minutes=3)
        end = NOW - n * DAY - timedelta(minutes=2)
        files.append(_file(path, end))
        edges[path] = (start, None if n >= 2 else end)
    return files, edges


def _ledger(files, edges, *, since=None, until=None, unread=(), chosen=None, read_until=NOW):  # type: ignore[no-untyped-def]
    return ledger(
        files, [f.path for f in files] if chosen is None else chosen,
        {u.path: u for u in unread}, edges, since=since, until=until, now=NOW,
        read_until=read_until,
    )


def test_a_complete_series_covers_the_window() -> None:
    files, edges = _daily(0, 1, 2, 3)
    cov = _ledger(files, edges, since=NOW - 3 * DAY)
    assert cov.complete
    assert cov.first == edges["/var/log/maillog.3.gz"][0]
    assert cov.last == NOW  # the live log was read to its end now
    assert [s.state for s in cov.sources] == [SourceState.READ] * 4


def test_a_missing_number_is_a_missing_rotation_inside_the_window_only() -> None:
    files, edges = _daily(0, 1, 3, 4)
    cov = _ledger(files, edges, since=NOW - 5 * DAY + timedelta(hours=1))
    [hole] = cov.uncovered
    assert hole.why is Hole.MISSING_ROTATION and hole.path == "/var/log/maillog.2"
    assert hole.start == datetime.fromtimestamp(files[1].mtime or 0).astimezone()  # .3's end
    assert hole.end == edges["/var/log/maillog.1"][0]
    assert "rotation /var/log/maillog.2 is missing" in str(hole)
    # a window that starts after the missing day is whole
    assert _ledger(files, edges, since=NOW - timedelta(hours=30)).complete


def test_a_window_before_the_oldest_line_is_not_covered() -> None:
    files, edges = _daily(0, 1, 2)
    since = NOW - 7 * DAY
    cov = _ledger(files, edges, since=since)
    [hole] = cov.uncovered
    assert hole.why is Hole.BEFORE_LOGS
    assert (hole.start, hole.end) == (since, edges["/var/log/maillog.2.gz"][0])
    assert _ledger(files, edges).complete  # no --since: all there is was asked


def test_a_silence_longer_than_any_file_spans_is_a_gap() -> None:
    # dated rotations tell nothing by their names: a missing day is a silence of a day
    files = [_file("/var/log/maillog-20261125.gz", NOW - 5 * DAY),
             _file("/var/log/maillog-20261127.gz", NOW - 3 * DAY),
             _file("/var/log/maillog-20261128.gz", NOW - 2 * DAY),
             _file("/var/log/maillog", NOW)]
    edges = {files[0].path: (NOW - 6 * DAY, None), files[1].path: (NOW - 4 * DAY, None),
             files[2].path: (NOW - 3 * DAY + timedelta(minutes=1), None),
             files[3].path: (NOW - 2 * DAY + timedelta(minutes=1), None)}
    cov = _ledger(files, edges, since=NOW - 6 * DAY)
    [hole] = cov.uncovered
    assert hole.why is Hole.GAP
    assert (hole.start, hole.end) == (NOW - 5 * DAY, NOW - 4 * DAY)
    # a quiet hour between two files is not a hole
    edges[files[1].path] = (NOW - 5 * DAY + timedelta(minutes=50), None)
    assert _ledger(files, edges, since=NOW - 6 * DAY).complete


def test_an_unread_source_is_a_hole_over_its_span() -> None:
    files, edges = _daily(0, 1, 2)
    cov = _ledger(files, edges, unread=[Unread("/var/log/maillog.1", ReadProblem.PERMISSION)])
    [hole] = cov.uncovered
    assert hole.why is Hole.UNREAD and hole.path == "/var/log/maillog.1"
    assert cov.sources[1].state is SourceState.UNREAD


def test_files_skipped_outside_the_window_still_prove_the_logs_reach_back() -> None:
    files, edges = _daily(0, 1, 2, 3)
    chosen = [f.path for f in files[2:]]  # .3.gz and .2.gz are older than --since
    cov = _ledger(files, {p: edges[p] for p in chosen}, since=NOW - timedelta(hours=30), chosen=chosen)
    assert cov.complete
    assert [s.state for s in cov.sources][:2] == [SourceState.SKIPPED] * 2


def test_a_copy_ends_at_its_last_line_and_only_an_until_past_it_is_a_hole() -> None:
    files, edges = _daily(0, 1)
    edges["/var/log/maillog"] = (edges["/var/log/maillog"][0], NOW - timedelta(hours=20))
    assert _ledger(files, edges, read_until=None, since=NOW - DAY - timedelta(hours=20)).complete
    until = NOW - timedelta(hours=2)
    cov = _ledger(files, edges, read_until=None, until=until)
    [hole] = cov.uncovered
    assert hole.why is Hole.AFTER_LOGS
    assert (hole.start, hole.end) == (NOW - timedelta(hours=20), until)
    # a live host's log read to its end now covers up to now, however old its last line
    assert _ledger(files, edges, until=until).complete


def test_a_journal_that_starts_after_since_is_not_covered() -> None:
    journal = LogSource("journal:SYSLOG_FACILITY=2", kind=SourceKind.JOURNAL)
    cov = _ledger([journal], {journal.path: (NOW - DAY, None)}, since=NOW - 2 * DAY)
    [hole] = cov.uncovered
    assert hole.why is Hole.BEFORE_LOGS and hole.end == NOW - DAY


# --------------------------------------------------------------------------- the real CLI


@pytest.fixture()
def rotated(tmp_path: Path) -> tuple[Path, Path]:
    """The demo with filter1's real log cut in four: maillog.3.gz, .2.gz, .1 and the live
    maillog, each with the mtime of its last line (as logrotate leaves them)."""
    inventory = copy_demo(tmp_path)
    log = inventory.parent / "fleet" / "filter1" / "var" / "log"
    lines = (log / "maillog").read_bytes().splitlines(keepends=True)
    quarter = len(lines) // 4
    parts = [lines[:quarter], lines[quarter : 2 * quarter], lines[2 * quarter : 3 * quarter],
             lines[3 * quarter :]]
    for name, part in zip(("maillog.3.gz", "maillog.2.gz", "maillog.1", "maillog"), parts,
                          strict=True):
        data = b"".join(part)
        (log / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        stamp = datetime.strptime("2026 " + part[-1][:15].decode(), "%Y %b %d %H:%M:%S")
        when = stamp.replace(tzinfo=UTC).timestamp()
        os.utime(log / name, (when, when))
    return inventory, log


def _search(inventory: Path, *words: str):  # type: ignore[no-untyped-def]
    return run("search", "-i", inventory, "--host", "filter1", *words)


def test_every_rotation_there_nothing_found_is_absent(rotated: tuple[Path, Path]) -> None:
    inventory, _ = rotated
    result = _search(inventory, "--to", "nobody@example.test", "-f", "json")
    assert result.exit_code == ExitCode.NO_MATCH, result.stderr
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "absent"
    [host] = doc["hosts"]
    assert host["coverage"]["complete"] is True
    assert [s["path"] for s in host["coverage"]["sources"]] == [
        "/var/log/maillog.3.gz", "/var/log/maillog.2.gz", "/var/log/maillog.1", "/var/log/maillog"]
    assert host["coverage"]["first"] == "2026-11-29T17:32:42+00:00"


def test_a_missing_rotation_makes_nothing_found_inconclusive(rotated: tuple[Path, Path]) -> None:
    inventory, log = rotated
    (log / "maillog.2.gz").unlink()
    result = _search(inventory, "--to", "nobody@example.test", "-f", "json")
    assert result.exit_code == ExitCode.PARTIAL
    assert result.stderr.startswith("collector: filter1: coverage: 2026-11-29 17:3")
    assert "(rotation /var/log/maillog.2 is missing)" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "inconclusive"
    [hole] = doc["hosts"][0]["coverage"]["uncovered"]
    assert hole["why"] == "missing-rotation" and hole["path"] == "/var/log/maillog.2"
    # rows found stay found (exit 0), and the hole is still said
    found = _search(inventory, "--from", "alice@example.test")
    assert found.exit_code == ExitCode.FOUND
    assert "rotation /var/log/maillog.2 is missing" in found.stderr


def test_a_window_before_the_logs_is_inconclusive_after_their_start_absent(
    rotated: tuple[Path, Path],
) -> None:
    inventory, _ = rotated
    early = _search(inventory, "--to", "nobody@example.test", "--since", "2026-11-29T17:00")
    assert early.exit_code == ExitCode.PARTIAL
    assert early.stderr == (
        "collector: filter1: coverage: 2026-11-29 17:00:00+00:00 to 2026-11-29 17:32:42+00:00 "
        "not seen (before the oldest log line)\n"
        "collector: nothing matched in what was read, but not all of it could be: inconclusive\n"
    )
    late = _search(inventory, "--to", "nobody@example.test", "--since", "2026-11-29T17:33")
    assert late.exit_code == ExitCode.NO_MATCH, late.stderr
    # an --until past the copy's last line: the end is not seen
    after = _search(inventory, "--to", "nobody@example.test", "--until", "2026-11-29T18:00")
    assert after.exit_code == ExitCode.PARTIAL
    assert "17:34:06+00:00 to 2026-11-29 18:00:00+00:00 not seen (after the newest" in after.stderr


def test_a_damaged_rotation_is_said_once_as_a_read_problem(rotated: tuple[Path, Path]) -> None:
    inventory, log = rotated
    data, kept = (log / "maillog.2.gz").read_bytes(), (log / "maillog.2.gz").stat().st_mtime
    (log / "maillog.2.gz").write_bytes(data[: len(data) // 2])
    os.utime(log / "maillog.2.gz", (kept, kept))
    result = _search(inventory, "--to", "nobody@example.test", "-f", "json")
    assert result.exit_code == ExitCode.PARTIAL
    assert result.stderr.count("maillog.2.gz") == 1  # the read line; no second coverage line
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "inconclusive"
    assert [u["why"] for u in doc["hosts"][0]["coverage"]["uncovered"]] == ["unread"]


def test_a_failed_host_makes_nothing_found_inconclusive(tmp_path: Path) -> None:
    inventory = copy_demo(tmp_path)
    text = inventory.read_text()
    inventory.write_text(text.replace('root = "fleet/out1"', 'root = "fleet/nowhere"'))
    result = run("search", "-i", inventory, "--to", "nobody@example.test", "-f", "json")
    assert result.exit_code == ExitCode.PARTIAL
    assert "collector: out1: " in result.stderr
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "inconclusive"
    assert [h["coverage"] is None for h in doc["hosts"]] == [False, False, False, True]


# --------------------------------------------------------------------------- clock skew


def _shift_iso_log(path: Path, seconds: float) -> None:
    """Every RFC 3339 stamp of a log moved by ``seconds`` (a host whose clock is off)."""
    out = []
    for line in path.read_text().splitlines(keepends=True):
        stamp, _, rest = line.partition(" ")
        moved = datetime.fromisoformat(stamp) + timedelta(seconds=seconds)
        out.append(moved.isoformat() + " " + rest)
    path.write_text("".join(out))


def test_trace_estimates_the_clock_skew_from_the_hand_offs(tmp_path: Path) -> None:
    inventory = copy_demo(tmp_path)
    _shift_iso_log(inventory.parent / "fleet" / "mbox1" / "var" / "log" / "mail.log", 7.0)
    result = run("trace", "-i", inventory, "--to", "alice@example.test", "-f", "json")
    assert result.exit_code == ExitCode.FOUND, result.stderr
    skews = {(k["sender"], k["receiver"]): k for k in json.loads(result.stdout)["clock_skew"]}
    ahead = skews[("filter1", "mbox1")]
    assert 6.5 <= ahead["seconds"] <= 8.0 and ahead["samples"] >= 3
    assert abs(skews[("mx1", "filter1")]["seconds"]) < 1.0
    assert "collector: clocks: the clock of mbox1 is 7." in result.stderr
    assert "s ahead of filter1's (median of" in result.stderr
    # the same fleet with its real clocks: no note
    plain = run("trace", "-i", copy_demo(tmp_path / "plain"), "--to", "alice@example.test")
    assert "clocks:" not in plain.stderr


def test_sparse_weekly_rotations_are_not_gaps() -> None:
    # a quiet host rotated weekly: each file holds an hour of lines, a week apart
    week = 7 * DAY
    files = [_file("/var/log/mail.log.2.gz", NOW - 2 * week),
             _file("/var/log/mail.log.1", NOW - week), _file("/var/log/mail.log", NOW)]
    edges = {files[0].path: (NOW - 3 * week + timedelta(hours=1), None),
             files[1].path: (NOW - 2 * week + timedelta(hours=1), NOW - 2 * week + timedelta(hours=2)),
             files[2].path: (NOW - week + timedelta(hours=1), NOW - week + timedelta(hours=2))}
    assert _ledger(files, edges, since=NOW - 3 * week + timedelta(hours=2)).complete


# --------------------------------------------------------------------------- hosts --check clock


class _ClockSession:
    """A host whose ``date`` answers ``offset`` seconds off this machine's clock."""

    def __init__(self, offset: float, answer: bytes | None = None) -> None:
        from collector.models import Host

        self.host = Host("mx9", address="mx9.example.test")
        self.offset, self.answer = offset, answer

    def run(self, argv, *, timeout=None, sudo=None):  # type: ignore[no-untyped-def]
        import time

        from collector.transport.base import CommandResult

        assert argv == ["date", "-u", "+%s.%N"]
        out = self.answer if self.answer is not None else f"{time.time() + self.offset:.9f}\n".encode()
        return CommandResult("date", out, b"", 0)


@pytest.mark.parametrize("offset", [7.25, -42.0, 0.0])
def test_hosts_check_measures_the_clock_offset(offset: float) -> None:
    from collector.search.hostcheck import HostCheck, clock_offset

    measured, error = clock_offset(_ClockSession(offset))  # type: ignore[arg-type]
    assert measured is not None and error is not None
    assert abs(measured - offset) < 0.05 and error < 0.05
    check = HostCheck(_ClockSession(offset).host, None, (), measured, error)  # type: ignore[arg-type]
    if offset:
        side = "ahead of" if offset > 0 else "behind"
        assert check.clock_note is not None and f"{abs(offset):.1f} s {side}" in check.clock_note
    else:
        assert check.clock_note is None


@pytest.mark.parametrize("answer", [b"", b"yesterday\n", b"1" * 5000, b"\x1b[2J1795996680.5\n"])
def test_a_host_that_answers_no_time_has_no_clock(answer: bytes) -> None:
    from collector.search.hostcheck import clock_offset

    assert clock_offset(_ClockSession(0, answer)) == (None, None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fetched cases


def test_a_fetched_case_answers_for_the_window_its_fetch_saw(tmp_path: Path) -> None:
    inventory = copy_demo(tmp_path)
    case = tmp_path / "case"
    fetched = run("fetch", "-i", inventory, "--dest", case, "--to", "alice@example.test",
                  "--since", "2026-11-29T17:33")
    assert fetched.exit_code == ExitCode.FOUND, fetched.stderr
    # the fetch read every line of its window for alice: what it did not copy is not hers
    same = run("search", "--offline", case, "--to", "alice@example.test", "--status", "expired",
               "--since", "2026-11-29T17:33")
    assert same.exit_code == ExitCode.NO_MATCH, same.stderr
    # but the case never held anybody else's lines: nothing is proven for them
    other = run("search", "--offline", case, "--to", "nobody@example.test",
                "--since", "2026-11-29T17:33", "-f", "json")
    assert other.exit_code == ExitCode.PARTIAL
    assert "(the case holds only the lines its fetch selected: recipients alice@example.test)" \
        in other.stderr
    assert json.loads(other.stdout)["hosts"][0]["coverage"]["uncovered"][0]["why"] == "not-fetched"
    again = run("search", "--offline", case, "--to", "alice@example.test", "--since",
                "2026-11-29T17:33", "-f", "json")
    assert again.exit_code == ExitCode.FOUND and again.stderr == ""
    # before the fetch's window, the case cannot say
    earlier = run("search", "--offline", case, "--to", "alice@example.test",
                  "--status", "expired", "--since", "2026-11-29T17:20")
    assert earlier.exit_code == ExitCode.PARTIAL
    assert ("collector: mx1: coverage: 2026-11-29 17:20:00+00:00 to 2026-11-29 17:33:00+00:00 "
            "not seen") in earlier.stderr


@pytest.mark.parametrize("junk", [[], "x", {"window": 1}, {"window": {}, "first": "yesterday"},
                                  {"window": {"since": None, "until": None}, "first": None,
                                   "last": "2026-11-29T17:34:04", "sources": [], "uncovered": []}])
def test_a_case_whose_recorded_coverage_is_junk_is_read_as_any_copy(
    tmp_path: Path, junk: object
) -> None:
    inventory = copy_demo(tmp_path)
    case = tmp_path / "case"
    assert run("fetch", "-i", inventory, "--dest", case, "--all").exit_code == ExitCode.FOUND
    manifest = case / "mx1" / "collector-manifest.json"
    data = json.loads(manifest.read_text())
    data["coverage"] = junk
    manifest.write_text(json.dumps(data))
    result = run("search", "--offline", case, "--host", "mx1", "--to", "nobody@example.test",
                 "--since", "2026-11-29T17:33", "-f", "json")
    assert result.exit_code == ExitCode.NO_MATCH, result.stderr
    [host] = json.loads(result.stdout)["hosts"]
    assert host["coverage"]["first"] == "2026-11-29T17:32:42+00:00"  # the copy's own lines
