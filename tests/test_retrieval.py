"""retrieval: the filter commands, byte for byte, then run for real on real Postfix lines.

Each command is also run the way SSH runs it (``shlex.join`` handed to a POSIX shell), so the
quoting of every hostile value is proven on both paths. Inputs are lines of the Postfix lab.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from collector.logs import commands as retrieval
from collector.logs.commands import (
    Command,
    CommandKind,
    Needles,
    Window,
    edge_lines_command,
    filter_file_command,
    filter_offsets_command,
    ids_commands,
    ids_file_commands,
    journal_command,
    journal_ids_command,
    journal_match,
    match_command,
    pass1_needles,
    source_in_window,
    split_offset,
    window_ids_command,
    windows_around,
    windows_worth_it,
)
from collector.models import Compression, LogSource, Query

LAB = Path(__file__).parent / "fixtures" / "lab"
LOGS = {
    "mx1": LAB / "mx1" / "var" / "log" / "postfix-mx1.log",  # postlogd
    "filter1": LAB / "filter1" / "var" / "log" / "maillog",  # BSD syslog
    "mbox1": LAB / "mbox1" / "var" / "log" / "mail.log",  # RFC 3339, long queue IDs
    "out1": LAB / "out1" / "var" / "log" / "postfix-out1.log",  # postlogd, postfix-out1
}
# The queue-ID field of a Postfix line (optionally after a severity word).
QID = re.compile(
    rb"^\S+(?: +\S+){1,3} \S+\[\d+\]: (?:warning: )?"
    rb"([0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-z]{10,}z[0-9A-Za-z]+): "
)


def lab_lines(host: str) -> list[bytes]:
    return LOGS[host].read_bytes().splitlines()


def lines_of_ids(lines: Sequence[bytes], ids: set[str]) -> list[bytes]:
    out = []
    for line in lines:
        m = QID.match(line)
        if m and m.group(1).decode() in ids:
            out.append(line)
    return out


def all_ids(lines: Sequence[bytes]) -> list[str]:
    return sorted({m.group(1).decode() for line in lines if (m := QID.match(line))})


# --------------------------------------------------------------------------- pure: commands


def shape(command: Command) -> tuple[CommandKind, tuple[str, ...]]:
    """What a test checks of a command: its kind and the words its constant script reads."""
    return command.kind, command.words


def test_filter_file_command() -> None:
    needles = Needles(("to=<bob@example.test>", "orig_to=<x'y@example.test>"), True)
    cmd = filter_file_command("/var/log/mail.log", needles)
    assert shape(cmd) == (
        CommandKind.MATCH,
        ("/var/log/mail.log",
         "-F", "-a", "-i", "-e", "to=<bob@example.test>", "-e", "orig_to=<x'y@example.test>"),
    )
    assert cmd.path == "/var/log/mail.log"
    assert shape(filter_file_command("/var/log/mail.log.2.gz", Needles(("x",), False))) == (
        CommandKind.MATCH, ("/var/log/mail.log.2.gz", "-F", "-a", "-e", "x"),
    )
    shown = filter_file_command("/root/var/log/m", None, shown="/var/log/m")
    assert shown.path == "/var/log/m" and shown.words == ("/root/var/log/m",)
    assert shown.describe() == "reading /var/log/m"


def test_filter_file_command_without_needles() -> None:
    for suffix in ("", ".1.gz", ".1.bz2", ".1.xz", ".1.zst"):
        path = f"/var/log/mail.log{suffix}"
        assert shape(filter_file_command(path, None)) == (CommandKind.ALL, (path,))


def test_filter_offsets_command() -> None:
    assert shape(filter_offsets_command("/var/log/maillog", Needles(("from=<a@b>",), True))) == (
        CommandKind.MATCH_OFFSETS,
        ("/var/log/maillog", "-b", "-F", "-a", "-i", "-e", "from=<a@b>"),
    )


STDIN = ("-F", "-a", "-f", "/dev/fd/5")


def patterns(command: Command) -> list[str]:
    """The fixed strings a pass-2 command sends on its stdin (one a line)."""
    assert command.stdin is not None and command.stdin.endswith(b"\n")
    return command.stdin.decode().split("\n")[:-1]


def test_ids_file_commands_grep() -> None:
    cmds = ids_file_commands("/var/log/maillog", ["BAE21168172", "1556E168106", "BAE21168172"])
    assert [shape(c) for c in cmds] == [(CommandKind.IDS, ("/var/log/maillog", *STDIN))]
    assert patterns(cmds[0]) == [
        ": 1556E168106: ", ": BAE21168172: ", "[ 1556E168106: ", "[ BAE21168172: ",
        "Queue-ID: 1556E168106,", "Queue-ID: BAE21168172,",
    ]


def test_ids_file_commands_one_command_for_any_number_of_ids() -> None:
    ids = [f"{i:012X}" for i in range(50_000)]
    (cmd,) = ids_file_commands("/l", ids)
    assert cmd.words == ("/l", *STDIN)
    assert len(patterns(cmd)) == 3 * len(ids)


def test_id_patterns_take_only_words_of_letters_and_digits() -> None:
    # One pattern a line: a newline would make two, an empty one would match every line.
    assert retrieval.id_patterns(["A1\nB", "", "C 1", "D1"]) == (
        ": D1: ", "[ D1: ", "Queue-ID: D1,",
    )


def test_journal_command() -> None:
    since = datetime(2026, 11, 29, 18, 24, 6, tzinfo=timezone(timedelta(hours=1)))
    until = datetime(2026, 11, 29, 17, 30, tzinfo=UTC)
    cmd = journal_command(Needles(("to=<bob@example.test>",), True), since=since, until=until)
    assert shape(cmd) == (
        CommandKind.MATCH,
        ("2026-11-29 17:24:06 UTC", "2026-11-29 17:30:00 UTC",
         "SYSLOG_FACILITY=2", "", "-F", "-a", "-i", "-e", "to=<bob@example.test>"),
    )
    assert cmd.path == "journal:SYSLOG_FACILITY=2"
    every = journal_command(None, since=None, until=None, match="SYSLOG_IDENTIFIER=postfix")
    assert shape(every) == (CommandKind.ALL, ("", "", "SYSLOG_IDENTIFIER=postfix", ""))
    # a directory host's own journal directory, never the system's
    own = journal_command(None, since=None, until=None, directory="/r/var/log/journal")
    assert own.words == ("", "", "SYSLOG_FACILITY=2", "/r/var/log/journal")


def test_journal_ids_command() -> None:
    cmd = journal_ids_command(["B1", "A1", "B1"], since=None, until=None)
    assert shape(cmd) == (CommandKind.IDS, ("", "", "SYSLOG_FACILITY=2", "", *STDIN))
    assert patterns(cmd) == [": A1: ", ": B1: ", "[ A1: ", "[ B1: ", "Queue-ID: A1,",
                             "Queue-ID: B1,"]


def test_match_and_ids_commands_dispatch_on_the_source() -> None:
    plain = LogSource("/var/log/mail.log")
    journal = LogSource("journal:SYSLOG_FACILITY=2", kind="journal")
    q = Query()
    assert match_command(plain, "/r/var/log/mail.log", None, q).words == ("/r/var/log/mail.log",)
    assert match_command(plain, "/r/var/log/mail.log", None, q).path == "/var/log/mail.log"
    # for a journal the path is its directory ("": the system journal)
    assert match_command(journal, "", None, q).words == ("", "", "SYSLOG_FACILITY=2", "")
    assert match_command(journal, "/r/j", None, q).words == ("", "", "SYSLOG_FACILITY=2", "/r/j")
    (ids,) = ids_commands(journal, "/r/j", ["A1"], q)
    assert ids.words[3] == "/r/j"
    assert ids.kind is CommandKind.IDS and ids.words[-4:] == STDIN
    assert patterns(ids) == [": A1: ", "[ A1: ", "Queue-ID: A1,"]
    (ids,) = ids_commands(plain, "/r/var/log/mail.log", ["A1"], q)
    assert ids.words == ("/r/var/log/mail.log", *STDIN)
    assert patterns(ids) == [": A1: ", "[ A1: ", "Queue-ID: A1,"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("journal:SYSLOG_FACILITY=2", "SYSLOG_FACILITY=2"),
        ("journal:SYSLOG_IDENTIFIER=postfix/smtpd", "SYSLOG_IDENTIFIER=postfix/smtpd"),
        ("journal:_SYSTEMD_UNIT=postfix@-.service", "_SYSTEMD_UNIT=postfix@-.service"),
        ("journal", "SYSLOG_FACILITY=2"),
        ("journal:", "SYSLOG_FACILITY=2"),
        ("journal:SYSLOG_FACILITY=2 --file=/etc/shadow", "SYSLOG_FACILITY=2"),
        ("journal:$(touch x)", "SYSLOG_FACILITY=2"),
        ("journal:lower=case", "SYSLOG_FACILITY=2"),
    ],
)
def test_journal_match(path: str, expected: str) -> None:
    assert journal_match(LogSource(path, kind="journal")) == expected


def test_window_ids_command() -> None:
    # Whole 4 KiB blocks, from the block holding the byte before each window.
    wins = [Window(0, 100), Window(5000, 9000), Window(20000, None)]
    cmd = window_ids_command("/var/log/maillog", wins, ["B1", "A1", "A1"])
    assert shape(cmd) == (
        CommandKind.WINDOW_IDS,
        ("/var/log/maillog", "4096", "0:1 1:2 4:-", "-b", *STDIN),
    )
    assert patterns(cmd) == [": A1: ", ": B1: ", "[ A1: ", "[ B1: ", "Queue-ID: A1,",
                             "Queue-ID: B1,", "notification: A1", "notification: B1",
                             retrieval.WINDOW_MARK, retrieval.WINDOW_FAILED]
    assert window_ids_command("/x", [Window(0, None)], ["C1"]).words[2] == "0:-"
    # A window that starts right after a block's last byte still reads that byte's block.
    assert window_ids_command("/x", [Window(4097, 4200)], ["C1"]).words[2] == "1:1"
    assert window_ids_command("/x", [Window(4096, 4200)], ["C1"]).words[2] == "0:2"
    # Reaching past the end of the file: read to its end.
    assert window_ids_command("/x", [Window(10, 9000)], ["C1"], size=9000).words[2] == "0:-"
    assert window_ids_command("/x", [Window(10, 8000)], ["C1"], size=8192).words[2] == "0:-"
    assert window_ids_command("/x", [Window(10, 8000)], ["C1"], size=8193).words[2] == "0:2"
    drop = window_ids_command("/x", [Window(10, 8000)], ["C1"], drop_deliveries=True)
    assert drop.words == ("/x", "4096", "0:2", retrieval.DELIVERY_LINE_AT, "-b", *STDIN)


def test_window_reads() -> None:
    reads = retrieval.window_reads
    assert reads([Window(0, 10)], None) == [retrieval.WindowRead(0, 4096)]
    assert reads([Window(1, 10)], None) == [retrieval.WindowRead(0, 4096)]
    assert reads([Window(8193, 8194), Window(9000, None)], None) == [
        retrieval.WindowRead(8192, 4096), retrieval.WindowRead(8192, None)]
    assert not reads([Window(0, 10)], None)[0].cut_start
    assert reads([Window(4097, 4100)], None)[0].cut_start


def test_windows_worth_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Windows cost the bytes they cover and WINDOW_COST_BYTES each, against a share of the
    # whole file.
    monkeypatch.setattr(retrieval, "WINDOW_COST_BYTES", 100)
    monkeypatch.setattr(retrieval, "WINDOW_MAX_SHARE", 0.5)
    assert windows_worth_it([Window(0, 400)], 1000)
    assert not windows_worth_it([Window(0, 401)], 1000)
    assert windows_worth_it([Window(i * 50, i * 50 + 10) for i in range(4)], 1000)
    assert not windows_worth_it([Window(i * 50, i * 50 + 10) for i in range(5)], 1000)
    assert windows_worth_it([Window(100, 300), Window(900, None)], 1000)
    assert not windows_worth_it([Window(100, 301), Window(900, None)], 1000)
    assert windows_worth_it([Window(100, 150), Window(990, None)], 1000)
    assert not windows_worth_it([Window(0, 10)], 0)
    assert not windows_worth_it([Window(0, 10)], None)
    assert not windows_worth_it([], 1000)


def test_edge_lines_command() -> None:
    src = LogSource("/var/log/mail.log.2.gz", compression=Compression.GZIP)
    cmd = edge_lines_command(src, "/root/var/log/mail.log.2.gz")
    assert shape(cmd) == (CommandKind.EDGES, ("/root/var/log/mail.log.2.gz",))
    assert cmd.path == "/var/log/mail.log.2.gz"


def test_scripts_are_constants_that_read_only_positional_words() -> None:
    # A user value never becomes part of a script: the script word is the same object
    # whatever the inputs, and the inputs follow it as separate words.
    a = filter_file_command("/a", Needles(("$(x)",), False))
    b = filter_file_command("/b';x", Needles(("`y`",), True))
    assert a.argv[2] is b.argv[2]
    assert a.argv[:2] == ("sh", "-c") and a.argv[3:5] == ("sh", "/a") and b.words[0] == "/b';x"
    assert a.words[-1] == "$(x)" and b.words[-1] == "`y`"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query(), None),
        (Query(since=datetime(2026, 1, 1, tzinfo=UTC)), None),
        (Query(recipients=("Bob@example.test",)),
         Needles(("to=<Bob@example.test>", "to=Bob@example.test,"), True,
                 ("Bob@example.test",), recipients=True)),
        (Query(senders=("alice@example.test",)),
         Needles(("from=<alice@example.test>", "from=alice@example.test,"), True,
                 ("alice@example.test",))),
        # one prefilter string per address; a non-ASCII one: the ASCII run both needles hold
        (Query(recipients=("a@b.test", "Jörg@Bücher.test")),
         Needles(("to=<a@b.test>", "to=a@b.test,", "to=<Jörg@Bücher.test>",
                  "to=Jörg@Bücher.test,"), True, ("a@b.test", "cher.test"), recipients=True)),
        # no bare string for the empty address, nor one that a needle's part may not hold
        (Query(senders=("a@b.test", "")),
         Needles(("from=<a@b.test>", "from=a@b.test,", "from=<>"), True)),
        (Query(recipients=("abcdeöfgh@ij",)),  # grep finds "to=<abcde", not "fgh@ij"
         Needles(("to=<abcdeöfgh@ij>", "to=abcdeöfgh@ij,"), True, recipients=True)),
        (Query(subjects=("Invoice $(id)",)), Needles(("Invoice $(id)",), True)),
        (Query(senders=("",)), Needles(("from=<>",), True)),
        (Query(clients=("127.0.0.30",)), Needles(("127.0.0.30",), True)),
        (Query(queue_ids=("1556E168106",)), Needles((" 1556E168106: ",), False)),
        (Query(message_ids=("<a@b>", "c@d")), Needles(("a@b", "c@d"), False)),
        (Query(terms=("<a@b>",)), Needles(("a@b",), True)),
        (Query(terms=("1556E168106",)), Needles(("1556E168106",), False)),
        (Query(statuses=("bounced", "rejected")), Needles(("status=bounced", "reject: "), False)),
        # the most selective selector wins; the others are checked after parsing
        (
            Query(recipients=("bob@example.test",), message_ids=("<m@x>",), senders=("a@b",)),
            Needles(("m@x",), False),
        ),
        (
            Query(recipients=("bob@example.test",), senders=("a@b",)),
            Needles(("to=<bob@example.test>", "to=bob@example.test,"), True,
                    ("bob@example.test",), recipients=True),
        ),
    ],
)
def test_pass1_needles(query: Query, expected: Needles | None) -> None:
    assert pass1_needles(query) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"1234:Nov 29 17:24:06 mx1 smtpd[1]: X: a", (1234, b"Nov 29 17:24:06 mx1 smtpd[1]: X: a")),
        (b"0:2026-11-29T17:24:06Z h p[1]: x", (0, b"2026-11-29T17:24:06Z h p[1]: x")),
        (b"Nov 29 17:24:06 no offset", (None, b"Nov 29 17:24:06 no offset")),
        (b"", (None, b"")),
    ],
)
def test_split_offset(line: bytes, expected: tuple[int | None, bytes]) -> None:
    assert split_offset(line) == expected


T = datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("mtime", "older", "since", "until", "expected"),
    [
        (T, None, None, None, True),
        (T, None, T - 3600, None, True),
        (T, None, T + 30, None, True),  # a minute of slack
        (T, None, T + 3600, None, False),  # last line before --since
        (T, T - 86400, None, T - 3600, True),
        (T, T - 3600, None, T - 7200, False),  # first line (older's mtime) after --until
        (None, None, T + 3600, None, True),  # unknown mtime: read it
    ],
)
def test_source_in_window(
    mtime: float | None, older: float | None, since: float | None, until: float | None,
    expected: bool,
) -> None:
    def dt(x: float | None) -> datetime | None:
        return None if x is None else datetime.fromtimestamp(x, UTC)

    src = LogSource("/var/log/mail.log", mtime=mtime)
    old = None if older is None else LogSource("/var/log/mail.log.1", mtime=older)
    assert source_in_window(src, old, dt(since), dt(until)) is expected
    journal = LogSource("journal:SYSLOG_FACILITY=2", kind="journal")
    assert source_in_window(journal, None, dt(T + 86400), None) is True


def test_windows_around_merges_and_clips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieval, "WINDOW_BEFORE", 100)
    monkeypatch.setattr(retrieval, "WINDOW_AFTER", 200)
    assert windows_around([], 10_000) == []
    assert windows_around([50], 10_000) == [Window(0, 250)]
    assert windows_around([1000, 1000], 10_000) == [Window(900, 1200)]
    # overlapping and touching windows merge; a gap keeps them apart
    assert windows_around([1000, 1150, 1500, 5000], 10_000) == [
        Window(900, 1350),
        Window(1400, 1700),
        Window(4900, 5200),
    ]
    assert windows_around([1000, 1300], 10_000) == [Window(900, 1500)]
    # a window reaching the end of the file reads to the end
    assert windows_around([9900], 10_000) == [Window(9800, None)]
    assert windows_around([9800], 10_000) == [Window(9700, None)]
    assert windows_around([100], None) == [Window(0, 300)]


def test_windows_around_merges_windows_closer_than_the_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieval, "WINDOW_BEFORE", 100)
    monkeypatch.setattr(retrieval, "WINDOW_AFTER", 200)
    assert windows_around([1000, 1400], 10_000, merge_gap=99) == [
        Window(900, 1200), Window(1300, 1600)]
    assert windows_around([1000, 1400], 10_000, merge_gap=100) == [Window(900, 1600)]
    monkeypatch.setattr(retrieval, "WINDOW_COST_BYTES", 100)
    assert retrieval.plan_windows([1000, 1400], 10_000) == [Window(900, 1600)]


# --------------------------------------------------------------------------- execution

Runner = Callable[[Command | Sequence[str], Path], subprocess.CompletedProcess[bytes]]


def _argv(command: Command | Sequence[str]) -> list[str]:
    return list(command.argv if isinstance(command, Command) else command)


def _stdin(command: Command | Sequence[str]) -> bytes:
    return (command.stdin or b"") if isinstance(command, Command) else b""


def run_exec(command: Command | Sequence[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """What LocalSession does: the argv straight to exec (and the command's stdin)."""
    return subprocess.run(_argv(command), cwd=cwd, capture_output=True, timeout=30, check=False,
                          input=_stdin(command))


def run_shell(command: Command | Sequence[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """What SSHSession does: the argv joined with shlex.join, read by a POSIX shell."""
    return subprocess.run(
        ["sh", "-c", shlex.join(_argv(command))],
        cwd=cwd, capture_output=True, timeout=30, check=False, input=_stdin(command),
    )


RUNNERS = [pytest.param(run_exec, id="exec"), pytest.param(run_shell, id="ssh-shell")]


def by_window(stdout: bytes, wins: Sequence[Window], size: int | None) -> list[list[bytes]]:
    """Pass 2's output as the searcher reads it (``window_lines``): the whole lines of each
    window, in order."""
    reads = retrieval.window_reads(wins, size)
    out: list[list[bytes]] = [[] for _ in wins]
    for index, line in retrieval.window_lines(stdout.splitlines(), reads):
        out[index].append(line)
    return out


def window_lines(stdout: bytes, wins: Sequence[Window], size: int | None) -> list[bytes]:
    return [line for lines in by_window(stdout, wins, size) for line in lines]


def write_log(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path``, compressed by its suffix."""
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".bz2":
        path.write_bytes(bz2.compress(data))
    elif path.suffix == ".xz":
        path.write_bytes(lzma.compress(data))
    elif path.suffix == ".zst":
        subprocess.run(["zstd", "-q", "-o", str(path)], input=data, check=True)
    else:
        path.write_bytes(data)
    return path


SUFFIXES = ["", ".gz", ".bz2", ".xz", ".zst"]


@pytest.fixture(params=SUFFIXES, ids=lambda s: s or "plain")
def suffix(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("run", RUNNERS)
def test_pass1_on_every_compression(tmp_path: Path, suffix: str, run: Runner) -> None:
    lines = lab_lines("filter1")
    log = write_log(tmp_path / f"maillog.1{suffix}", b"\n".join(lines) + b"\n")
    needles = Needles(("to=<bob@example.test>",), True)
    done = run(filter_file_command(str(log), needles), tmp_path)
    assert done.returncode == 0, done.stderr
    expected = [x for x in lines if b"to=<bob@example.test>" in x.lower()]
    assert len(expected) >= 5  # bob's deliveries and the cleanup reject's to=<bob>
    assert done.stdout.splitlines() == expected


@pytest.mark.parametrize("run", [run_exec])
def test_no_needles_reads_every_line(tmp_path: Path, suffix: str, run: Runner) -> None:
    data = LOGS["mbox1"].read_bytes()
    log = write_log(tmp_path / f"mail.log.2{suffix}", data)
    done = run(filter_file_command(str(log), None), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data


@pytest.mark.parametrize("run", RUNNERS)
def test_no_match_is_exit_1_with_no_output(tmp_path: Path, suffix: str, run: Runner) -> None:
    log = write_log(tmp_path / f"maillog{suffix}", LOGS["filter1"].read_bytes())
    needles = Needles(("to=<nobody@example.test>",), True)
    done = run(filter_file_command(str(log), needles), tmp_path)
    assert (done.returncode, done.stdout) == (1, b"")


@pytest.mark.parametrize("needles", [Needles(("x",), False), None])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_missing_file_is_not_a_no_match(
    tmp_path: Path, needles: Needles | None, suffix: str
) -> None:
    # Rotated away between discovery and reading: a typed exit status, never "no match".
    for cmd in (
        filter_file_command(str(tmp_path / f"gone.log{suffix}"), needles),
        *ids_file_commands(str(tmp_path / f"gone.log{suffix}"), ["A1"]),
    ):
        done = run_exec(cmd, tmp_path)
        assert done.returncode == retrieval.EXIT_VANISHED
        assert b"gone.log" in done.stderr


def test_address_pass1_is_one_string_then_the_exact_strings() -> None:
    # --to/--from: a first grep for the bare address (one fixed string) feeds the exact grep,
    # whose strings travel as one word, one a line; -b (offsets) goes on the first grep.
    needles = pass1_needles(Query(recipients=("Bob@example.test",)))
    assert needles is not None
    exact = "to=<Bob@example.test>\nto=Bob@example.test,"
    first = ("-F", "-a", "-i", "-e", "Bob@example.test")
    assert shape(filter_file_command("/var/log/maillog", needles)) == (
        CommandKind.MATCH, ("/var/log/maillog", exact, *first))
    assert shape(filter_offsets_command("/var/log/maillog", needles)) == (
        CommandKind.MATCH_OFFSETS, ("/var/log/maillog", exact, "-b", *first))
    assert shape(journal_command(needles, since=None, until=None)) == (
        CommandKind.MATCH, ("", "", "SYSLOG_FACILITY=2", "", exact, *first))
    two = pass1_needles(Query(senders=("a@b.test", "C@d.test")))
    assert two is not None and filter_file_command("/l", two).words == (
        "/l", "from=<a@b.test>\nfrom=a@b.test,\nfrom=<C@d.test>\nfrom=C@d.test,",
        "-F", "-a", "-i", "-e", "a@b.test", "-e", "C@d.test")


def address_log() -> list[bytes]:
    """The lab's lines, and the same lines rewritten: bare addresses, other case, an address
    of digits (grep -b's prefix is digits too), the address outside to=/from=."""
    lines = lab_lines("filter1")
    bare = [x.replace(b"to=<bob@example.test>", b"to=BOB@example.TEST,") for x in lines
            if b"to=<bob@example.test>" in x]
    digits = [x.replace(b"to=<bob@example.test>", b"to=<1234>") for x in lines
              if b"to=<bob@example.test>" in x]
    digits += [x.replace(b"from=<alice@example.test>", b"from=1234,") for x in lines
               if b"from=<alice@example.test>" in x]
    loose = [x.replace(b"to=<bob@example.test>", b"note=bob@example.test") for x in lines
             if b"to=<bob@example.test>" in x]
    return [*lines, *bare, *digits, *loose]


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize(
    "query",
    [Query(recipients=("bob@example.test",)), Query(recipients=("1234",)),
     Query(senders=("1234",)), Query(senders=("alice@example.test", "BOB@example.test")),
     Query(recipients=("nobody@example.test",))],
    ids=["to", "to-digits", "from-digits", "from-two", "no-match"],
)
def test_prefiltered_pass1_is_the_one_grep_of_both_strings(
    tmp_path: Path, suffix: str, run: Runner, query: Query
) -> None:
    # The lines (and for a plain file the offsets) are exactly those of the single grep for
    # every needle; and the exit status too.
    lines = address_log()
    log = write_log(tmp_path / f"maillog.1{suffix}", b"\n".join(lines) + b"\n")
    needles = pass1_needles(query)
    assert needles is not None and needles.prefilter
    single = Needles(needles.strings, needles.ignore_case)
    made = [(filter_file_command(str(log), needles), filter_file_command(str(log), single))]
    if not suffix:
        made.append((filter_offsets_command(str(log), needles),
                     filter_offsets_command(str(log), single)))
    for new, old in made:
        got, want = run(new, tmp_path), run(old, tmp_path)
        assert (got.returncode, got.stdout) == (want.returncode, want.stdout), got.stderr
    if "nobody" not in str(query):
        assert got.returncode == 0 and len(got.stdout.splitlines()) >= 3


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_prefiltered_pass1_says_vanished_and_damaged(tmp_path: Path, suffix: str) -> None:
    needles = pass1_needles(Query(recipients=("bob@example.test",)))
    assert needles is not None and needles.prefilter
    gone = str(tmp_path / f"gone.log{suffix}")
    for cmd in (filter_file_command(gone, needles), filter_offsets_command(gone, needles)):
        done = run_exec(cmd, tmp_path)
        assert done.returncode == retrieval.EXIT_VANISHED and b"gone.log" in done.stderr
    data = gzip.compress(b"\n".join(lab_lines("filter1") * 200) + b"\n")
    damaged = tmp_path / "maillog.2.gz"
    damaged.write_bytes(data[: len(data) // 2])
    done = run_exec(filter_file_command(str(damaged), needles), tmp_path)
    assert done.returncode == retrieval.EXIT_DAMAGED and b"cannot decompress" in done.stderr
    assert b"to=<bob@example.test>" in done.stdout  # the lines before the damage


def test_prefiltered_pass1_read_error_is_no_no_match(tmp_path: Path) -> None:
    # The first grep fails (a directory is no file) and the exact grep then sees no line:
    # its "no match" must not hide the failed read.
    needles = pass1_needles(Query(recipients=("bob@example.test",)))
    assert needles is not None
    (tmp_path / "dir.log").mkdir()
    for cmd in (filter_file_command(str(tmp_path / "dir.log"), needles),
                filter_offsets_command(str(tmp_path / "dir.log"), needles)):
        assert run_exec(cmd, tmp_path).returncode == 2


@pytest.mark.parametrize("run", RUNNERS)
def test_fixed_strings_not_regexes(tmp_path: Path, run: Runner) -> None:
    real = lab_lines("mx1")
    # A real NOQUEUE line whose address is rewritten to hold regex metacharacters.
    template = next(x for x in real if b"to=<blocked@example.test>" in x and b"NOQUEUE" in x)
    odd = template.replace(b"blocked@example.test", b"a.*[b]+(c)?|^$\\d@example.test")
    log = write_log(tmp_path / "mail.log", b"\n".join([*real, odd]) + b"\n")

    def grep(*needles: str, ignore_case: bool = False) -> list[bytes]:
        done = run(filter_file_command(str(log), Needles(needles, ignore_case)), tmp_path)
        assert done.returncode in (0, 1), done.stderr
        return done.stdout.splitlines()

    assert grep("to=<a.*[b]+(c)?|^$\\d@example.test>") == [odd]
    assert grep("to=<.*@example.test>") == []  # as a regex it would match every line
    assert grep("to=<blocked@example.tes.>") == []
    assert grep("[0-9A-F]+: removed") == []
    assert grep("to=<BLOCKED@Example.Test>") == []
    hits = grep("to=<BLOCKED@Example.Test>", ignore_case=True)
    assert hits and all(b"to=<blocked@example.test>" in h for h in hits)


HOSTILE = [
    "o'brien@example.test",
    'say"hi"@example.test',
    "a;touch CANARY;b@example.test",
    "$(touch CANARY)@example.test",
    "`touch CANARY`@example.test",
    "${IFS}x$((1+1))@example.test",
    "-rf@example.test",
    "*?[ab]@example.test",
    "back\\slash\\n@example.test",
    "a&&touch CANARY||b@example.test",
    "x > CANARY @example.test",
    "%s%n%x@example.test",
]


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize("suffix", ["", ".gz"], ids=["plain", "gz"])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_needle_runs_nothing_and_matches_literally(
    tmp_path: Path, value: str, run: Runner, suffix: str
) -> None:
    canary = tmp_path / "CANARY"
    value = value.replace("CANARY", str(canary))
    real = lab_lines("mx1")
    template = next(x for x in real if b"to=<blocked@example.test>" in x and b"NOQUEUE" in x)
    odd = template.replace(b"blocked@example.test", value.encode())
    log = write_log(tmp_path / f"mail.log{suffix}", b"\n".join([*real, odd]) + b"\n")
    needles = Needles((f"to=<{value}>",), True)
    done = run(filter_file_command(str(log), needles), tmp_path)
    assert not canary.exists()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [odd]
    # the offsets variant and the journal command carry it the same way
    done = run(filter_offsets_command(str(log), needles), tmp_path)
    assert not canary.exists()
    if suffix == "":
        assert [split_offset(x)[1] for x in done.stdout.splitlines()] == [odd]


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize(
    "needle", ["--help", "-f", "-e", "-", "--", "-r /", "--file=/etc/passwd", "-v"]
)
def test_needle_with_leading_dash_is_a_pattern(tmp_path: Path, needle: str, run: Runner) -> None:
    real = lab_lines("out1")
    odd = real[10] + b" " + needle.encode()
    log = write_log(tmp_path / "postfix-out1.log", b"\n".join([*real, odd]) + b"\n")
    done = run(filter_file_command(str(log), Needles((needle,), False)), tmp_path)
    assert done.returncode == 0, done.stderr
    assert odd in done.stdout.splitlines()
    assert all(needle.encode() in x for x in done.stdout.splitlines())


@pytest.mark.parametrize("run", RUNNERS)
def test_newline_in_a_needle_runs_nothing(tmp_path: Path, run: Runner) -> None:
    canary = tmp_path / "CANARY"
    log = write_log(tmp_path / "mail.log", LOGS["mx1"].read_bytes())
    needle = f"to=<x@example.test>\n$(touch {canary})\n`touch {canary}`"
    for argv in (
        filter_file_command(str(log), Needles((needle,), True)),
        ids_file_commands(str(log), [needle])[0],
    ):
        done = run(argv, tmp_path)
        assert done.returncode in (0, 1), done.stderr
        assert not canary.exists()


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize("suffix", ["", ".bz2"], ids=["plain", "bz2"])
@pytest.mark.parametrize(
    "name",
    [
        "mail log;$(touch CANARY)'x\".log",
        "-mail.log",
        "`touch CANARY`.log",
        "*.log",
    ],
)
def test_hostile_file_names(tmp_path: Path, name: str, suffix: str, run: Runner) -> None:
    canary = tmp_path / "CANARY"
    data = LOGS["mbox1"].read_bytes()
    name = name.replace("CANARY", str(canary).replace("/", "_"))
    log = write_log(tmp_path / (name + suffix), data)
    (tmp_path / "decoy.log").write_bytes(b"decoy line to=<bob@example.test>\n")
    needles = Needles(("to=<bob@example.test>",), True)
    done = run(filter_file_command(str(log), needles), tmp_path)
    assert done.returncode == 0, done.stderr
    expected = [x for x in data.splitlines() if b"to=<bob@example.test>" in x]
    assert done.stdout.splitlines() == expected
    ids = all_ids(data.splitlines())[:1]
    for argv in ids_file_commands(str(log), ids):
        done = run(argv, tmp_path)
        assert done.stdout.splitlines() == lines_of_ids(data.splitlines(), set(ids))
    assert not canary.exists()
    assert {p.name for p in tmp_path.iterdir()} == {log.name, "decoy.log"}


@pytest.mark.parametrize("host", list(LOGS))
@pytest.mark.parametrize("run", [run_exec])
def test_pass2_returns_exactly_the_lines_of_the_ids(
    tmp_path: Path, host: str, suffix: str, run: Runner
) -> None:
    lines = lab_lines(host)
    log = write_log(tmp_path / f"log{suffix}", b"\n".join(lines) + b"\n")
    ids = all_ids(lines)[::2]
    assert len(ids) >= 4
    expected = lines_of_ids(lines, set(ids))
    got: list[bytes] = []
    for argv in ids_file_commands(str(log), ids):
        done = run(argv, tmp_path)
        assert done.returncode == 0, done.stderr
        got += done.stdout.splitlines()
    assert got == expected


@pytest.mark.parametrize("run", RUNNERS)
def test_pass2_with_every_id_of_a_log_at_once(tmp_path: Path, suffix: str, run: Runner) -> None:
    # Every ID of the busiest lab host plus 30,000 absent ones: one command, its fixed strings
    # on stdin (far more than one argument or a pipe's buffer holds), exactly the lines.
    lines = lab_lines("filter1")
    log = write_log(tmp_path / f"log{suffix}", b"\n".join(lines) + b"\n")
    ids = all_ids(lines) + [f"{i:012X}" for i in range(30_000)]
    (cmd,) = ids_file_commands(str(log), ids)
    assert cmd.stdin is not None and len(cmd.stdin) > 1 << 20
    done = run(cmd, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == lines_of_ids(lines, set(all_ids(lines)))


def test_pass2_finds_the_id_wherever_a_postfix_line_puts_it(tmp_path: Path) -> None:
    # After the tag with and without a pid, after a severity, inside rsyslog's "message
    # repeated" and in an amavis verdict; never a "queued as" that names it in passing.
    lines = [
        b"Nov  9 17:24:06 filter1 postfix/cleanup[4380]: warning: 1556E168106: header Subject: x",
        b"Nov  9 17:24:06 filter1 postfix/qmgr[3897]: 1556E168106: removed",
        b"2026-11-29T17:24:06.262931+00:00 mbox1 postfix/qmgr[4146]: 4jcvCB1ksSzC61Q: removed",
        b"Nov  9 17:24:06 filter1 postfix/pickup: 1556E168106: uid=0 from=<root>",
        b"Nov  9 17:24:07 filter1 postfix/smtpd[9]: message repeated 2 times: [ 1556E168106: "
        b"client=x[1.2.3.4]]",
        b"Nov  9 17:24:07 filter1 amavis[77]: (77-01) Passed CLEAN {RelayedInbound}, "
        b"[1.2.3.4]:5 <a@b> -> <c@d>, Queue-ID: 1556E168106, Message-ID: <m@x>, mail_id: y",
        (
            b"Nov  9 17:24:06 filter1 postfix/smtp[1]: 2222E168106: to=<a@b>, status=sent"
            b" (250 2.0.0 Ok: queued as 1556E168106)"
        ),
    ]
    log = write_log(tmp_path / "maillog", b"\n".join(lines) + b"\n")
    (cmd,) = ids_file_commands(str(log), ["1556E168106", "4jcvCB1ksSzC61Q"])
    assert run_exec(cmd, tmp_path).stdout.splitlines() == lines[:6]


# --------------------------------------------------------------------------- windows


def line_starts(data: bytes) -> list[int]:
    starts, pos = [], 0
    for line in data.splitlines(keepends=True):
        starts.append(pos)
        pos += len(line)
    return starts


def expected_in_windows(data: bytes, wins: Sequence[Window], ids: set[str]) -> list[bytes]:
    """Lines of ``ids`` that lie wholly inside one of the windows."""
    out: list[bytes] = []
    for start, line in zip(line_starts(data), data.splitlines(keepends=True)):
        end = start + len(line)
        for w in wins:
            if start >= w.start and (w.end is None or end <= w.end):
                out.append(line.rstrip(b"\n"))
                break
    return lines_of_ids(out, ids)


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize("host", list(LOGS))
def test_window_ids_command_gives_whole_lines_of_the_ids(
    tmp_path: Path, host: str, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = LOGS[host].read_bytes()
    log = write_log(tmp_path / "log", data)
    lines = data.splitlines()
    ids = set(all_ids(lines))
    starts = line_starts(data)
    # Windows that start and end mid-line (odd sizes), merged where they overlap, read
    # byte for byte (blocks of 1: each read is exactly its window and the byte before).
    monkeypatch.setattr(retrieval, "WINDOW_BLOCK", 1)
    monkeypatch.setattr(retrieval, "WINDOW_BEFORE", 701)
    monkeypatch.setattr(retrieval, "WINDOW_AFTER", 1503)
    hits = [starts[i] for i in range(len(starts)) if i % 17 == 5]
    wins = windows_around(hits, len(data))
    assert len(wins) > 2 and any(w.start > 0 for w in wins)
    done = run(window_ids_command(str(log), wins, sorted(ids), size=len(data)), tmp_path)
    assert done.returncode == 0, done.stderr
    got = window_lines(done.stdout, wins, len(data))
    # each window's lines are known by their window
    assert by_window(done.stdout, wins, len(data)) == [
        expected_in_windows(data, [w], ids) for w in wins]
    assert set(got) <= set(lines)  # whole lines only
    # No edge falls on a line boundary here (see the test below for that case), so the
    # lines of the IDs wholly inside the windows are exactly what comes back.
    edges = {w.start for w in wins if w.start > 0} | {w.end for w in wins if w.end is not None}
    assert not edges & set(starts)
    assert got == expected_in_windows(data, wins, ids)
    # one ID only: nothing of the others
    one = sorted(ids)[3]
    done = run(window_ids_command(str(log), wins, [one], size=len(data)), tmp_path)
    for x in window_lines(done.stdout, wins, len(data)):  # its lines, or its parent's notice
        assert one.encode() + b": " in x or x.endswith(b" notification: " + one.encode())


@pytest.mark.parametrize("block", [7, 512, 4096])
@pytest.mark.parametrize("host", list(LOGS))
def test_windows_in_blocks_give_whole_lines_and_at_least_the_window(
    tmp_path: Path, host: str, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read in whole blocks, a window gives every line of the IDs wholly inside it, and
    perhaps more whole lines of the file around it, never a piece of one."""
    data = LOGS[host].read_bytes()
    log = write_log(tmp_path / "log", data)
    lines = data.splitlines()
    ids = set(all_ids(lines))
    starts = line_starts(data)
    monkeypatch.setattr(retrieval, "WINDOW_BLOCK", block)
    monkeypatch.setattr(retrieval, "WINDOW_BEFORE", 301)
    monkeypatch.setattr(retrieval, "WINDOW_AFTER", 603)
    hits = [starts[i] for i in range(len(starts)) if i % 23 == 9]
    for wins in (windows_around(hits, len(data)),
                 [Window(s, s + 1000) for s in starts[5::29]]):  # edges on line starts
        done = run_exec(window_ids_command(str(log), wins, sorted(ids), size=len(data)),
                        tmp_path)
        assert done.returncode == 0, done.stderr
        per_window = by_window(done.stdout, wins, len(data))
        for w, got in zip(wins, per_window, strict=True):
            want = expected_in_windows(data, [w], ids)
            assert set(want) <= set(got)
            assert set(got) <= set(lines_of_ids(lines, ids))  # whole lines of the IDs only
            order = {x: i for i, x in enumerate(lines)}
            assert sorted(got, key=order.__getitem__) == got  # in file order


def test_window_to_the_end_reads_the_last_line_without_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retrieval, "WINDOW_BLOCK", 1)
    lines = lab_lines("filter1")
    last = max(i for i, x in enumerate(lines) if QID.match(x))
    lines = lines[: last + 1]
    data = b"\n".join(lines)  # the last line has no newline (being written)
    log = write_log(tmp_path / "maillog", data)
    ids = set(all_ids(lines[-5:]))
    wins = [Window(len(data) - 2000, None)]
    done = run_exec(window_ids_command(str(log), wins, sorted(ids), size=len(data)), tmp_path)
    got = window_lines(done.stdout, wins, len(data))
    assert got[-1] == lines[-1]
    assert got == expected_in_windows(data + b"\n", wins, ids)


@pytest.mark.parametrize(
    "boundary",
    [
        "end",
        "start",
    ],
)
def test_window_edge_on_a_line_boundary_keeps_the_whole_line(
    tmp_path: Path, boundary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retrieval, "WINDOW_BLOCK", 1)
    data = LOGS["filter1"].read_bytes()
    log = write_log(tmp_path / "maillog", data)
    starts = line_starts(data)
    lines = data.splitlines()
    ids = set(all_ids(lines))
    first = next(i for i, x in enumerate(lines) if QID.match(x))  # smtpd's client= line
    # end: the window ends right after the ID's client= and message-id= lines;
    # start: the window begins right at the client= line.
    wins = (
        [Window(0, starts[first + 2])]
        if boundary == "end"
        else [Window(starts[first], starts[first + 20])]
    )
    assert expected_in_windows(data, wins, ids)
    done = run_exec(window_ids_command(str(log), wins, sorted(ids), size=len(data)), tmp_path)
    assert window_lines(done.stdout, wins, len(data)) == expected_in_windows(data, wins, ids)


@pytest.mark.parametrize("run", RUNNERS)
def test_offsets_then_windows_find_every_line_of_a_message(
    tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pass 1 with offsets, windows around the hits, pass 2 inside them: the real sequence."""
    data = LOGS["out1"].read_bytes()
    log = write_log(tmp_path / "postfix-out1.log", data)
    needles = Needles(("to=<dave@example.net>",), True)
    done = run(filter_offsets_command(str(log), needles), tmp_path)
    pairs = [split_offset(x) for x in done.stdout.splitlines()]
    assert pairs and all(off is not None and data[off:].startswith(line) for off, line in pairs)
    assert all(off == 0 or data[off - 1 : off] == b"\n" for off, _ in pairs)
    offsets = [off for off, _ in pairs if off is not None]
    wins = windows_around(offsets, len(data))
    qid = QID.match(pairs[0][1]).group(1).decode()  # type: ignore[union-attr]
    done = run(window_ids_command(str(log), wins, [qid], size=len(data)), tmp_path)
    got = window_lines(done.stdout, wins, len(data))
    assert got == lines_of_ids(data.splitlines(), {qid})


# --------------------------------------------------------------------------- journal


@pytest.fixture
def fake_journalctl(tmp_path: Path) -> Path:
    """A ``journalctl`` on PATH that records its words and prints real journal-format lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "journal.txt").write_bytes(LOGS["mbox1"].read_bytes())
    script = bin_dir / "journalctl"
    script.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do printf "%s\\n" "$a"; done > {shlex.quote(str(tmp_path / "args"))}\n'
        f"cat {shlex.quote(str(tmp_path / 'journal.txt'))}\n"
    )
    script.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("run", RUNNERS)
def test_journal_command_passes_each_word_whole(
    tmp_path: Path, fake_journalctl: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{fake_journalctl}{os.pathsep}{os.environ['PATH']}")
    canary = tmp_path / "CANARY"
    since = datetime(2026, 11, 29, 17, 24, tzinfo=UTC)
    hostile = f"$(touch {canary})'\"@example.test"
    argv = journal_command(
        Needles((f"to=<{hostile}>", "to=<bob@example.test>"), True),
        since=since, until=None, match="SYSLOG_IDENTIFIER=postfix/smtpd",
    )
    done = run(argv, tmp_path)
    assert not canary.exists()
    assert done.returncode == 0, done.stderr
    words = (tmp_path / "args").read_text().splitlines()
    assert words == [
        "--no-pager", "-q", "-o", "short-iso-precise",
        "--since=2026-11-29 17:24:00 UTC", "SYSLOG_IDENTIFIER=postfix/smtpd",
    ]
    expected = [x for x in lab_lines("mbox1") if b"to=<bob@example.test>" in x]
    assert done.stdout.splitlines() == expected
    # no needles: every line, no grep
    done = run(journal_command(None, since=None, until=None), tmp_path)
    assert done.stdout.splitlines() == lab_lines("mbox1")
    assert (tmp_path / "args").read_text().splitlines()[-1] == "SYSLOG_FACILITY=2"
    # pass 2 on the journal
    qid = all_ids(lab_lines("mbox1"))[0]
    done = run(journal_ids_command([qid], since=None, until=since), tmp_path)
    assert done.stdout.splitlines() == lines_of_ids(lab_lines("mbox1"), {qid})
    assert "--until=2026-11-29 17:24:00 UTC" in (tmp_path / "args").read_text().splitlines()


def test_every_command_fits_one_remote_shell_argument() -> None:
    # Over SSH the whole command line is one argument of `sh -c` (Linux: 128 KiB at most).
    import shlex

    ids = [f"{i:012X}" for i in range(40_000)]
    commands = ids_file_commands("/var/log/mail.log", ids)
    commands.append(retrieval.window_ids_command("/var/log/mail.log", [Window(0, 10)], ids))
    commands.append(journal_ids_command(ids, since=None, until=None))
    assert len(commands) == 3
    assert max(len(shlex.join(c.argv)) for c in commands) < 120 * 1024
    for c in commands:  # the IDs travel on stdin, all of them
        got = {p.strip(" :[") for p in patterns(c) if p.startswith(": ")}
        assert got == set(ids)
