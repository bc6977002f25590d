"""Pass 2's windows are read in whole blocks by ``dd`` and placed by their byte offsets.

``window_lines`` must hand out only whole lines of the file, each known by its window, and
refuse the whole answer (``WindowsUnread``) when the windows did not come back exactly as
planned: a file that shrank or changed under them, a line that claims to be a mark, a line
too long to place, output cut short. The searcher then reads every ID in the whole file.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.logs import commands
from collector.logs.commands import (
    WINDOW_FAILED,
    WINDOW_MARK,
    CommandKind,
    Window,
    WindowRead,
    WindowsUnread,
    window_ids_command,
    window_lines,
    window_reads,
)
from collector.logs.parse import LineParser, TimeContext
from collector.logs.select import select_rows
from collector.models import Host, Query, TransportKind
from collector.search.host import HostSearcher, SearchContext, complete_in_windows
from collector.transport.base import CUT_MARK
from collector.transport.local import LocalSession

NOW = datetime(2026, 1, 16, tzinfo=UTC)
MARK = WINDOW_MARK.encode()


def run(command: commands.Command) -> bytes:
    done = subprocess.run(list(command.argv), input=command.stdin, capture_output=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def message(qid: str, t: str, rcpt: str) -> list[str]:
    return [
        f"Jan 15 {t} mx1 postfix/smtpd[100]: {qid}: client=c.example[192.0.2.1]",
        f"Jan 15 {t} mx1 postfix/cleanup[101]: {qid}: message-id=<{qid}@c.example>",
        f"Jan 15 {t} mx1 postfix/qmgr[102]: {qid}: from=<s@c.example>, size=900, nrcpt=1 "
        "(queue active)",
        f"Jan 15 {t} mx1 postfix/smtp[103]: {qid}: to=<{rcpt}>, relay=mx.example.net"
        f"[198.51.100.1]:25, delay=0.2, delays=0.1/0/0/0.1, dsn=2.0.0, status=sent (250 ok)",
        f"Jan 15 {t} mx1 postfix/qmgr[102]: {qid}: removed",
    ]


# --------------------------------------------------------------------------- pure


def out(*pairs: tuple[int, bytes]) -> list[bytes]:
    return [b"%d:%s" % (off, line) for off, line in pairs]


def test_lines_are_placed_by_their_offsets() -> None:
    reads = [WindowRead(100, 50), WindowRead(300, None)]
    # window 0: stream bytes 0-49, its newline at 50, its mark at 51; window 1 from 51 + 25.
    lines = out((0, b"cut first line"), (10, b"whole line"), (40, b"cut last!!"),
                (51, MARK), (76, b"cut first of 1"), (90, b"kept"), (120, b"last, no newline"),
                (137, MARK))
    assert list(window_lines(lines, reads)) == [(0, b"whole line"), (1, b"kept"),
                                                (1, b"last, no newline")]


def test_a_read_from_the_start_of_the_file_keeps_its_first_line() -> None:
    reads = [WindowRead(0, 50)]
    assert list(window_lines(out((0, b"first"), (51, MARK)), reads)) == [(0, b"first")]


@pytest.mark.parametrize("lines", [
    out((0, b"x"), (50, MARK)),  # a window one byte short: the file changed
    out((0, b"x"), (52, MARK)),  # one byte long
    out((0, b"x")),  # no mark: the output was cut
    out((0, b"x"), (51, MARK), (60, b"y")),  # a line after the last window
    out((20, b"x"), (10, b"y"), (51, MARK)),  # offsets going back
    [b"no offset at all", *out((51, MARK))],
    out((10, b"x" * 45), (51, MARK)),  # a line running past its window's end
    out((10, b"x" + CUT_MARK), (51, MARK)),  # a line too long to place
])
def test_windows_that_did_not_come_back_as_planned_are_refused(lines: list[bytes]) -> None:
    with pytest.raises(WindowsUnread):
        list(window_lines(lines, [WindowRead(100, 50)]))


def test_a_window_that_could_not_be_read_refuses_them_all() -> None:
    lines = out((0, b"x"), (20, WINDOW_FAILED.encode()), (51, MARK))
    with pytest.raises(WindowsUnread):
        list(window_lines(lines, [WindowRead(0, None)]))


def test_a_line_that_is_the_mark_is_not_taken_for_one() -> None:
    # A file line reading exactly like the mark, inside a window: not where a mark belongs.
    lines = out((10, MARK), (51, MARK))
    with pytest.raises(WindowsUnread):
        list(window_lines(lines, [WindowRead(100, 50)]))


# --------------------------------------------------------------------------- real dd reads


def test_a_forged_header_in_a_cut_line_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window that begins (or ends) inside a line whose client-chosen text reads like a
    whole Postfix line of an ID: the piece is dropped, whatever it says."""
    monkeypatch.setattr(commands, "WINDOW_BLOCK", 1)
    forged = "Jan 15 10:00:09 mx1 postfix/qmgr[102]: BBB222: removed"
    lines = [*message("AAA111", "10:00:00", "a@example.net"),
             "Jan 15 10:00:05 mx1 postfix/smtpd[100]: CCC333: client=x[192.0.2.9], "
             f"helo=<{forged}>",
             *message("BBB222", "10:00:10", "b@example.net")]
    data = ("\n".join(lines) + "\n").encode()
    log = tmp_path / "maillog"
    log.write_bytes(data)
    at = data.index(forged.encode())
    # The reads begin one byte before the window: at the forged text's `<`, and right at
    # its first byte (`Jan 15 ...`, as a client who pads its HELO to a block edge would get).
    for wins in ([Window(at, len(data) - 10)], [Window(at + 1, len(data) - 10)],
                 [Window(0, at + len(forged))]):
        got = list(window_lines(run(window_ids_command(
            str(log), wins, ["BBB222", "AAA111"], size=len(data))).splitlines(),
            window_reads(wins, len(data))))
        assert got and all(line in data.splitlines() for _, line in got)
        assert not any(line.startswith(forged.encode()) for _, line in got)


@pytest.mark.parametrize("block", [1, 7, 4096])
def test_windows_of_a_file_that_shrank_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(commands, "WINDOW_BLOCK", block)
    lines = [x for n in range(200) for x in message(f"A{n:05X}", f"10:{n // 60:02d}:{n % 60:02d}",
                                                      f"u{n}@example.net")]
    data = ("\n".join(lines) + "\n").encode()
    log = tmp_path / "maillog"
    log.write_bytes(data)
    wins = [Window(1000, 9000), Window(20000, 30000), Window(len(data) - 500, None)]
    ids = ["A00010", "A00050", "A000C0"]
    command = window_ids_command(str(log), wins, ids, size=len(data))
    reads = window_reads(wins, len(data))
    assert list(window_lines(run(command).splitlines(), reads))  # as planned: read
    log.write_bytes(data[:25000])  # truncated under the windows (copytruncate)
    with pytest.raises(WindowsUnread):
        list(window_lines(run(command).splitlines(), reads))


def test_a_search_whose_windows_are_refused_reads_every_id_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is cut to half its size between pass 1 and the windows: nothing read in the
    windows is used, every ID is looked up in the whole file, and the rows are those of a
    search of the file as it now is."""
    monkeypatch.setattr(commands, "WINDOW_BEFORE", 600)
    monkeypatch.setattr(commands, "WINDOW_AFTER", 1200)
    monkeypatch.setattr(commands, "WINDOW_COST_BYTES", 0)
    monkeypatch.setattr(commands, "WINDOW_BLOCK", 512)
    lines = [x for n in range(300) for x in message(
        f"A{n:05X}", f"10:{n // 60:02d}:{n % 60:02d}",
        "rare@example.net" if n % 97 == 5 else f"u{n}@example.net")]
    text = "\n".join(lines) + "\n"
    root = tmp_path / "mx1"
    (root / "var" / "log").mkdir(parents=True)
    log = root / "var" / "log" / "maillog"
    log.write_text(text)
    host = Host("mx1", transport=TransportKind.LOCAL, root=str(root),
                logs=("/var/log/maillog",), timezone="UTC")
    query = Query(recipients=("rare@example.net",))

    whole = HostSearcher(LocalSession(host), SearchContext(UTC, NOW))
    whole.search(query)
    assert CommandKind.WINDOW_IDS in [c.kind for c in whole.ran]  # windows were read
    assert CommandKind.IDS not in [c.kind for c in whole.ran]  # and were enough
    assert len(select_rows([whole.log()], query)) == 4

    class Shrinking(LocalSession):
        def stream(self, argv, **kw):  # type: ignore[no-untyped-def,override]
            if any("wins=$3" in word for word in argv):
                log.write_text(text[: len(text) // 2])
            return super().stream(argv, **kw)

    searcher = HostSearcher(Shrinking(host), SearchContext(UTC, NOW))
    found = searcher.search(query)
    kinds = [c.kind for c in searcher.ran]
    assert kinds.count(CommandKind.WINDOW_IDS) == 1 and CommandKind.IDS in kinds
    fetched = next(c for c in searcher.ran if c.kind is CommandKind.IDS)
    assert fetched.stdin is not None
    assert all(f": {q}: ".encode() in fetched.stdin for q in found) and len(found) == 4
    now = HostSearcher(LocalSession(host), SearchContext(UTC, NOW))
    now.search(query)
    assert select_rows([searcher.log()], query) == select_rows([now.log()], query)
    assert len(select_rows([now.log()], query)) == 2


def test_a_notification_read_in_a_window_is_proven_by_its_parent_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bounce made by Postfix has no client= line: its parent's `sender non-delivery
    notification: ID` line proves where its life starts, and the windows bring that line, so
    the notification is not read again in the whole file (the parent is not kept for it)."""
    monkeypatch.setattr(commands, "WINDOW_COST_BYTES", 0)
    monkeypatch.setattr(commands, "WINDOW_BLOCK", 512)
    monkeypatch.setattr(commands, "WINDOW_BEFORE", 3000)
    monkeypatch.setattr(commands, "WINDOW_AFTER", 3000)
    monkeypatch.setattr("collector.search.host.windows_worth_it", lambda wins, size: True)
    filler = [x for n in range(60) for x in message(f"F{n:05X}", f"09:{n:02d}:00",
                                                     f"u{n}@example.net")]
    child = [
        "Jan 15 10:00:00 mx1 postfix/cleanup[101]: CCC333: message-id=<CCC333@mx1.example>",
        "Jan 15 10:00:00 mx1 postfix/qmgr[102]: CCC333: from=<>, size=2556, nrcpt=1 "
        "(queue active)",
        "Jan 15 10:00:00 mx1 postfix/bounce[104]: ABD111: sender non-delivery notification: "
        "CCC333",
        "Jan 15 10:00:00 mx1 postfix/smtp[103]: CCC333: to=<sender@example.org>, relay=mx."
        "example.net[198.51.100.1]:25, delay=0.2, delays=0.1/0/0/0.1, dsn=2.0.0, status=sent "
        "(250 ok)",
        "Jan 15 10:00:00 mx1 postfix/qmgr[102]: CCC333: removed",
    ]
    lines = [*filler, *child, *[x.replace("09:", "11:") for x in filler]]
    root = tmp_path / "mx1"
    (root / "var" / "log").mkdir(parents=True)
    (root / "var" / "log" / "maillog").write_text("\n".join(lines) + "\n")
    host = Host("mx1", transport=TransportKind.LOCAL, root=str(root),
                logs=("/var/log/maillog",), timezone="UTC")
    query = Query(recipients=("sender@example.org",))
    searcher = HostSearcher(LocalSession(host), SearchContext(UTC, NOW))
    assert searcher.search(query) == {"CCC333"}
    assert [c.kind for c in searcher.ran if c.kind in (CommandKind.WINDOW_IDS, CommandKind.IDS)
            ] == [CommandKind.WINDOW_IDS]
    log = searcher.log()
    assert {g.queue_id for g in log.groups} == {"CCC333"}
    assert [(r.queue_id, r.status) for r in select_rows([log], query)] == [("CCC333", "sent")]


def test_windows_without_dd_are_refused(tmp_path: Path) -> None:
    """A host with no dd (or a dd that fails: a read error) says so in the stream, even for a
    read to the end of the file, whose length no mark can check."""
    lines = [x for n in range(50) for x in message(f"A{n:05X}", f"10:00:{n:02d}", "u@x.example")]
    data = ("\n".join(lines) + "\n").encode()
    log = tmp_path / "maillog"
    log.write_bytes(data)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "grep"):
        (bin_dir / tool).symlink_to(subprocess.run(["sh", "-c", f"command -v {tool}"],
                                                   capture_output=True, text=True,
                                                   check=True).stdout.strip())
    wins = [Window(len(data) - 3000, None)]
    command = window_ids_command(str(log), wins, ["A00031"], size=len(data))
    done = subprocess.run(["/bin/sh", *command.argv[1:]], input=command.stdin,
                          capture_output=True, timeout=30, check=False,
                          env={"PATH": str(bin_dir)})
    assert WINDOW_FAILED.encode() in done.stdout
    with pytest.raises(WindowsUnread):
        list(window_lines(done.stdout.splitlines(), window_reads(wins, len(data))))
    assert list(window_lines(run(command).splitlines(), window_reads(wins, len(data))))


def test_hits_past_the_end_of_the_file_join_the_window_that_reaches_it(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file grew after it was measured: pass 1 saw lines past the size discovery knew.
    monkeypatch.setattr(commands, "WINDOW_BEFORE", 100)
    monkeypatch.setattr(commands, "WINDOW_AFTER", 200)
    assert commands.windows_around([9_000, 9_950, 50_000], 10_000) == [
        Window(8_900, 9_200), Window(9_850, None)]
    assert commands.windows_around([20_000, 50_000], 10_000) == [Window(19_900, None)]
    assert commands.window_reads([Window(19_900, None)], 10_000) == [WindowRead(16_384, None)]


def test_a_notice_proves_a_life_only_in_its_own_window() -> None:
    """A reused short ID: a bounce's parent line in window 0 names X; window 1 holds a life
    of X that starts with cleanup's line (its client= line lies before the window)."""
    parser = LineParser(TimeContext(tz=UTC, reference=NOW))

    def records(*lines: str) -> list:  # type: ignore[type-arg]
        return [r for line in lines for r in parser.feed_all(line.encode())]

    notice = records("Jan 15 09:00:00 mx1 postfix/bounce[104]: ABD111: sender non-delivery "
                     "notification: CCC333")
    life = records(*message("CCC333", "10:00:00", "a@example.net")[1:])  # no client= line
    found = [(0, r) for r in notice] + [(1, r) for r in life]
    assert complete_in_windows(found, windows=3, reaches_end=False) == set()
    same = [(0, r) for r in notice] + [(0, r) for r in life]
    assert complete_in_windows(same, windows=3, reaches_end=False) == {"CCC333"}
