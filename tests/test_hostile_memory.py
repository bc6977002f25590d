"""A host that sends too much: endless output, one huge line. Memory must stay bounded.

A compromised server chooses its command output, file contents and sizes. These tests use
local hosts (real processes, real files) with 20 MB lines and lowered caps, so they run in
seconds; the same figures at 100 MB and 1 GB are in README ("What one host may cost").
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from collector.cli.app import app
from collector.errors import TransportError
from collector.logs.parse import LineParser, TimeContext
from collector.models import Host, Settings, Stage, TransportKind
from collector.search.hostcheck import EDGE_MAX, check_host
from collector.transport import local as local_module
from collector.transport.base import CUT_MARK, LINE_MAX, LineSplitter, is_cut, lines_of
from collector.transport.local import LocalSession

BIG = 20 * 1024 * 1024  # one line of 20 MB
LINE = "Nov 29 17:32:44 mx1 postfix/qmgr[23700]: A9E31168161: from=<alice@example.test>, size=1, nrcpt=1 (queue active)"
MAIN_CF = "maillog_file = /var/log/postfix.log\n"


def _host_dir(root: Path, log: bytes | None) -> Path:
    (root / "etc/postfix").mkdir(parents=True)
    (root / "etc/postfix/main.cf").write_text(MAIN_CF)
    (root / "var/log").mkdir(parents=True)
    if log is not None:
        (root / "var/log/postfix.log").write_bytes(log)
    return root


def _huge_line_log(path: Path, before: int = 2, after: int = 2) -> None:
    """``before`` good lines, one line of BIG bytes (starting like a Postfix line), ``after``."""
    with path.open("wb") as out:
        out.write((LINE + "\n").encode() * before)
        out.write(LINE.encode() + b" " + b"x" * BIG + b"\n")
        out.write((LINE + "\n").encode() * after)


def _session(root: Path, **settings: int) -> LocalSession:
    host = Host("big", transport=TransportKind.LOCAL, root=str(root))
    return LocalSession(host, Settings(**settings))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- line splitting


def _reference(data: bytes, limit: int) -> list[bytes]:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [x if len(x) <= limit else x[:limit] + CUT_MARK for x in lines]


def _chunked(data: bytes, rng: random.Random) -> Iterator[bytes]:
    at = 0
    while at < len(data):
        size = rng.choice((1, 2, 7, 64, 300, 5000))
        yield data[at : at + size]
        at += size


def test_lines_of_cuts_long_lines_and_keeps_the_others_whatever_the_chunking() -> None:
    rng = random.Random(8)
    for _ in range(200):
        parts = [b"x" * rng.choice((0, 1, 99, 100, 101, 250, 1000)) for _ in range(rng.randint(1, 8))]
        data = b"\n".join(parts) + rng.choice((b"", b"\n"))
        assert list(lines_of(_chunked(data, rng), limit=100)) == _reference(data, 100), data


def test_a_cut_line_is_handed_out_before_its_end_arrives() -> None:
    # An endless line (no newline ever) must not be held: it comes out once past the cap.
    splitter = LineSplitter(limit=10)
    assert splitter.feed(b"ok\n0123456") == [b"ok"]
    assert splitter.feed(b"789ABCDEF") == [b"0123456789" + CUT_MARK]
    for _ in range(1000):
        assert splitter.feed(b"y" * 4096) == []  # the rest of it is dropped as it comes
    assert splitter.feed(b"yyy\nnext\nla") == [b"next"]
    assert splitter.finish() == [b"la"]


def test_a_line_of_exactly_the_cap_is_not_cut() -> None:
    assert list(lines_of(iter([b"a" * 10 + b"\n" + b"b" * 11]), limit=10)) == [
        b"a" * 10,
        b"b" * 10 + CUT_MARK,
    ]


def test_the_parser_counts_a_cut_line_as_bad_and_makes_no_record_of_it() -> None:
    # The parser's own limit (100 000 bytes) is below LINE_MAX, and CUT_MARK holds NULs:
    # either way a cut line is a bad line, never a record built from a truncated text.
    cut = (LINE + " ").encode() + b"x" * LINE_MAX
    (line,) = lines_of(iter([cut + b"\n"]))
    assert is_cut(line) and len(line) == LINE_MAX + len(CUT_MARK)
    parser = LineParser(TimeContext(tz=UTC, reference=datetime(2024, 12, 1, tzinfo=UTC)))
    assert parser.feed(line) is None
    assert list(parser.parse([line])) == []
    assert list(parser.parse_blocks([line + b"\n"])) == []
    assert parser.stats.bad == 3 and parser.stats.parsed == 0
    assert not is_cut(LINE.encode())


# --------------------------------------------------------------------------- local sessions


def test_stream_of_a_20mb_line_yields_it_cut_and_the_lines_around_it(tmp_path: Path) -> None:
    root = _host_dir(tmp_path / "h", None)
    _huge_line_log(root / "var/log/postfix.log")
    session = _session(root)
    tracemalloc.start()
    try:
        lines = list(session.stream(["cat", "--", session.path("/var/log/postfix.log")]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [is_cut(x) for x in lines] == [False, False, True, False, False]
    assert lines[2].startswith(LINE.encode()) and len(lines[2]) == LINE_MAX + len(CUT_MARK)
    assert lines[3] == LINE.encode()
    assert peak < 2 * 1024 * 1024  # the 20 MB line was never held


def test_run_stops_a_command_that_prints_more_than_its_cap(tmp_path: Path) -> None:
    root = _host_dir(tmp_path / "h", None)
    _huge_line_log(root / "var/log/postfix.log")
    session = _session(root, run_output_max=1024 * 1024)
    path = session.path("/var/log/postfix.log")
    with pytest.raises(TransportError) as caught:
        session.run(["cat", "--", path])
    assert caught.value.stage is Stage.READ
    assert caught.value.message == (
        f"cat -- {path} printed more than 1 MiB, the most collector reads from such a "
        "command; it was stopped"
    )
    assert session.run(["echo", "small"]).stdout == b"small\n"


def test_run_stops_endless_output_at_once_and_ends_the_command(tmp_path: Path) -> None:
    root = _host_dir(tmp_path / "h", None)
    session = _session(root)  # the default cap: 4 MiB
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        session.run(["sh", "-c", 'echo $$ > "$1"; exec yes', "sh", str(pid_file)], timeout=60)
    assert "printed more than 4 MiB" in caught.value.message
    assert time.monotonic() - started < 10  # not the timeout
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()


def test_run_keeps_only_the_tail_of_a_huge_stderr(tmp_path: Path) -> None:
    session = _session(_host_dir(tmp_path / "h", None))
    result = session.run(["sh", "-c", "head -c 20000000 /dev/zero >&2; echo end >&2"])
    assert result.exit_code == 0 and result.stdout == b""
    assert len(result.stderr) <= 2 * 65536 and result.stderr.endswith(b"end\n")


def test_a_local_command_cannot_take_this_machines_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # grep holds a whole line: on a directory host its heap is capped (256 MiB; here 16 MiB).
    monkeypatch.setattr(local_module, "COMMAND_HEAP_KIB", 16 * 1024)
    root = _host_dir(tmp_path / "h", None)
    _huge_line_log(root / "var/log/postfix.log")
    session = _session(root)
    with pytest.raises(TransportError) as caught:
        list(session.stream(["grep", "-c", "alice", session.path("/var/log/postfix.log")]))
    assert "exited with 2" in caught.value.message and "memory exhausted" in caught.value.message
    # A missing program is still reported as one, not as a failed wrapper.
    assert session.run(["no-such-program-here"]).exit_code == 127
    with pytest.raises(TransportError, match="cannot run no-such-program-here"):
        list(session.stream(["no-such-program-here"]))


# --------------------------------------------------------------------------- hosts --check


@pytest.mark.parametrize("compress", [False, True])
def test_check_host_reads_only_the_ends_of_a_source(tmp_path: Path, compress: bool) -> None:
    root = _host_dir(tmp_path / "h", None)
    log = root / "var/log/postfix.log"
    _huge_line_log(log, before=0, after=1)  # the first line is the huge one
    if compress:
        subprocess.run(["gzip", "-1", str(log)], check=True)
        (root / "etc/postfix/main.cf").write_text("maillog_file = /var/log/postfix.log.gz\n")
    session = _session(root, run_output_max=1024 * 1024)
    tracemalloc.start()
    try:
        check = check_host(session)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (src,) = check.sources
    assert src.first is None and src.format is None  # over-long: not a line anyone wrote
    assert src.last is not None and (src.last.month, src.last.day) == (11, 29)
    assert peak < 3 * EDGE_MAX + 1024 * 1024


def test_check_host_edges_of_small_files(tmp_path: Path) -> None:
    root = _host_dir(tmp_path / "h", b"")
    session = _session(root)
    (src,) = check_host(session).sources
    assert (src.first, src.last, src.format) == (None, None, None)  # empty
    (root / "var/log/postfix.log").write_text(LINE)  # one line, no newline
    (src,) = check_host(session).sources
    assert src.first == src.last and src.first is not None and src.format == "postlogd"
    lines = [LINE.replace("17:32:44", f"17:32:{s:02}") for s in (1, 2, 3)]
    (root / "var/log/postfix.log").write_text("\r\n".join(lines) + "\r\n")
    (src,) = check_host(session).sources
    assert src.first is not None and src.last is not None
    assert (src.first.second, src.last.second) == (1, 3)


# --------------------------------------------------------------------------- the CLI


def _run(*args: str | Path) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "COLLECTOR_INVENTORY": ""})
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """Two directory hosts: ``good`` with one message, ``big`` with a 20 MB line too."""
    good = (LINE + "\n").encode()
    _host_dir(tmp_path / "good", good)
    big = _host_dir(tmp_path / "big", None)
    _huge_line_log(big / "var/log/postfix.log", before=1, after=1)
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(
        '[defaults]\ntransport = "local"\ntimezone = "UTC"\n'
        '[[hosts]]\nname = "good"\nroot = "good"\n[[hosts]]\nname = "big"\nroot = "big"\n'
    )
    return inventory


def test_cli_search_and_check_with_a_huge_line(fleet: Path) -> None:
    result = _run("search", "-i", fleet, "--from", "alice@example.test", "--format", "json")
    assert result.exit_code == 0, result.stderr
    hosts = {h["name"]: h for h in json.loads(result.stdout)["hosts"]}
    assert hosts["good"]["ok"] and hosts["big"]["ok"]
    assert hosts["good"]["stats"]["bad"] == 0
    assert hosts["big"]["stats"]["bad"] >= 1  # the huge line, counted (once per pass)
    result = _run("hosts", "-i", fleet, "--check", "--format", "json")
    assert result.exit_code == 0, result.stderr
    checks = {h["name"]: h for h in json.loads(result.stdout)["hosts"]}
    assert checks["good"]["sources"][0]["first"] is not None
    big = checks["big"]["sources"][0]
    assert big["first"] is not None and big["last"] is not None


def test_cli_check_of_a_host_that_never_stops_talking(fleet: Path, tmp_path: Path) -> None:
    # The big host's log becomes a FIFO fed by `yes`: its answer is a timeout, the good
    # host's answer is whole, and collector's memory does not grow.
    log = tmp_path / "big/var/log/postfix.log"
    log.unlink()
    os.mkfifo(log)
    fleet.write_text("command_timeout = 2\n" + fleet.read_text())
    writer = subprocess.Popen(
        ["sh", "-c", 'while :; do yes "$1" > "$2" 2>/dev/null; done', "sh", LINE, str(log)],
        start_new_session=True,
    )
    try:
        result = _run("hosts", "-i", fleet, "--check", "--format", "json")
    finally:
        os.killpg(writer.pid, 9)
        writer.wait()
    assert result.exit_code == 3, result.stderr
    checks = {h["name"]: h for h in json.loads(result.stdout)["hosts"]}
    assert checks["good"]["ok"] and checks["good"]["sources"][0]["last"] is not None
    assert checks["big"]["error"]["stage"] == "read"
