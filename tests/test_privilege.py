"""Least privilege under sudo = true: the root programs' words, ``ls`` parsing, sudoers lines,
and the login-user scripts around ``sudo -n cat`` / ``journalctl``, run for real.

The scripts run here through a local session (this test runs as root, whose ``sudo -n`` needs
no rule) and, for the refusal, as the unprivileged user ``collector`` with ``runuser``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.errors import TransportError
from collector.logs.commands import (
    EXIT_DAMAGED,
    EXIT_VANISHED,
    Command,
    Needles,
    copy_file_command,
    filter_file_command,
    ids_file_commands,
    journal_command,
    pass1_needles,
)
from collector.models import Host, LogSource, Query, SourceKind, Stage, TransportKind
from collector.search import hostcheck
from collector.transport.base import check_sudo
from collector.transport.local import LocalSession
from collector.transport.privilege import (
    EXIT_ROOT_READ,
    LS_FLAGS,
    RootNeeds,
    RootPrograms,
    login_user_from,
    parse_ls,
    probe_argv,
    safe_path,
    sudoers_lines,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sshfleet import (  # noqa: E402
    NON_ROOT_USER,
    ensure_user,
    journal_export_from_syslog,
    machine_id,
)

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="runs sudo -n as root")
PROGRAMS = RootPrograms(
    cat=shutil.which("cat") or "/usr/bin/cat",
    journalctl=shutil.which("journalctl") or "/usr/bin/journalctl",
    ls=shutil.which("ls") or "/usr/bin/ls",
)
LINES = [
    b"Nov 28 08:03:30 h postfix/smtpd[1]: 4B2E3D0203: client=c[192.0.2.10]",
    b"Nov 28 08:03:31 h postfix/smtp[2]: 4B2E3D0203: to=<carol@example.net>, status=sent (ok)",
    b"Nov 28 08:03:31 h postfix/qmgr[3]: 4B2E3D0204: from=<alice@example.org>, size=1",
]
HOSTILE = ['-dash.log', 'a b $(touch CANARY) `touch CANARY2`.log', 'new\nline.log', "q'\"x.log"]


# --------------------------------------------------------------------------- ls


def test_parse_ls_reads_what_real_ls_prints(tmp_path: Path) -> None:
    names = [*HOSTILE, "mail.log", "\x1b[31mred", "é-utf8", "back\\slash"]
    for n, name in enumerate(names):
        (tmp_path / name).write_bytes(b"x" * n)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "sub").mkdir()
    (tmp_path / "dangling").symlink_to("nowhere")
    (tmp_path / "link").symlink_to("mail.log")
    for env in ({"LC_ALL": "C"}, {"LC_ALL": "C.UTF-8"}):
        out = subprocess.run([PROGRAMS.ls, *LS_FLAGS, str(tmp_path)], capture_output=True,
                             env={**os.environ, **env}, check=False).stdout
        listed = {e.name: e for e in parse_ls(out)}
        assert set(listed) == {*names, "fifo", "sub", "link"}  # the dangling link is left out
        for name, entry in listed.items():
            st = os.stat(tmp_path / name)
            assert entry.size == st.st_size or entry.ftype == "d"
            assert abs(entry.mtime - st.st_mtime) < 1e-3
        assert (listed["fifo"].ftype, listed["sub"].ftype, listed["link"].ftype) == ("p", "d", "f")


@pytest.mark.parametrize("line", [
    b'crw-rw-rw- 1 0 0 1, 3 2024-11-28 13:40:00.000000000 +0000 "null"',
    b'-rw------- 1 0 0 12 2024-11-28 13:40:00.000000000 +0000 "a/b"',
    b'-rw------- 1 0 0 12 2024-11-28 13:40:00.000000000 +0000 "a"b"',
    b'-rw------- 1 0 0 12 2024-11-28 13:40:00.000000000 +0000 ".."',
    b'-rw------- 1 0 0 12 2024-13-28 13:40:00.000000000 +0000 "bad-month"',
    b"total 12",
    b'-rw------- 1 0 0 12 2024-11-28 13:40:00 +0000 "x\\q"',
])
def test_parse_ls_leaves_out_what_it_cannot_trust(line: bytes) -> None:
    assert parse_ls(line) == []


def test_parse_ls_long_hostile_line_is_linear() -> None:
    line = b"-" + b" 1" * 200_000 + b'"'
    assert parse_ls(line + b"\n" + line) == []


# --------------------------------------------------------------------------- the probe


def test_probe_finds_the_programs_for_real() -> None:
    out = subprocess.run(probe_argv(), capture_output=True, check=True).stdout
    user = login_user_from(out)
    assert user.uid == os.geteuid() and user.is_root == (os.geteuid() == 0)
    assert user.programs == PROGRAMS and user.notes == ()


def test_probe_output_that_is_not_a_path_keeps_the_usual_one() -> None:
    user = login_user_from(b"1001\ncollector\n/bin/c at\n-\nls\n")
    assert user.uid == 1001 and user.name == "collector" and not user.is_root
    assert user.programs == RootPrograms()
    assert len(user.notes) == 4  # c at, -, ls (a bare name), and tail not printed at all
    assert login_user_from(b"").uid is None


# --------------------------------------------------------------------------- sudoers


def test_sudoers_lines() -> None:
    needs = RootNeeds(
        files=("/var/log/mail.log.2.gz", "/var/log/mail.log.1", "/var/log/mail.log",
               "/var/log/maillog-20241201.gz", "/srv/a b.log"),
        directories=("/var/log/postfix",),
        journals=(("SYSLOG_FACILITY=2", ""),),
    )
    lines = sudoers_lines("collector", RootPrograms(), needs, ["/var/log/maillog"])
    rules = [line for line in lines if not line.startswith("#")]
    head = "collector ALL=(root) NOPASSWD: "
    stamp = ("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]\\:[0-9][0-9]\\:[0-9][0-9] "
             "UTC")
    assert rules == [
        head + "/usr/bin/cat /var/log/mail.log",
        head + "/usr/bin/tail -n0 -F -q -- /var/log/mail.log",
        head + "/usr/bin/cat /var/log/mail.log.[0-9]",
        head + "/usr/bin/cat /var/log/mail.log.[0-9].gz",
        head + "/usr/bin/cat /var/log/maillog-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9].gz",
        head + "/usr/bin/ls -AQLn --full-time /var/log/postfix",
        head + "/usr/bin/journalctl --no-pager -q -o short-iso-precise "
        f"--since\\={stamp} --until\\={stamp} SYSLOG_FACILITY\\=2",
        head + "/usr/bin/journalctl --no-pager -q -o short-iso-precise -n 1 SYSLOG_FACILITY\\=2",
        head + "/usr/bin/journalctl --no-pager -q -o short-iso-precise -f -n 0 "
        "SYSLOG_FACILITY\\=2",
    ]
    assert "# skipped /srv/a b.log: a sudoers line cannot name it exactly" in lines
    assert sum(line.startswith("#") for line in lines) == len(rules) + 1  # one comment each


def test_sudoers_lines_name_nothing_hostile() -> None:
    lines = sudoers_lines("collector", RootPrograms(), RootNeeds(
        files=tuple(f"/var/log/{n}" for n in HOSTILE[1:]) + ("/var/log/x*", "/var/log/y,z"),
        journals=(("SYSLOG_FACILITY=2 /etc/shadow", ""),),
    ))
    assert all(line.startswith("# skipped ") for line in lines)
    assert all(line.isascii() and line.isprintable() for line in lines)
    assert sudoers_lines("bad user", RootPrograms(), RootNeeds(files=("/x",))) == [
        "# the login user bad user cannot be named in a sudoers line"]
    assert safe_path("/var/log/\x1b[2J") == "'/var/log/\\x1b[2J'"
    # An absolute path is never an option, whatever its name starts with.
    assert sudoers_lines("c", RootPrograms(), RootNeeds(files=("/var/log/-n",)))[1].endswith(
        "/usr/bin/cat /var/log/-n")


def test_sudoers_lines_parse_with_visudo(tmp_path: Path) -> None:
    visudo = shutil.which("visudo") or "/usr/sbin/visudo"
    if not os.path.exists(visudo):
        pytest.skip("sudo is not installed")  # the ssh tests install them for real
    lines = sudoers_lines("collector", PROGRAMS, RootNeeds(
        files=("/var/log/mail.log", "/var/log/mail.log.1"), directories=("/var/log/x",),
        journals=(("SYSLOG_FACILITY=2", ""),)))
    rules = tmp_path / "rules"
    rules.write_text("\n".join(lines) + "\n")
    check = subprocess.run([visudo, "-cf", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


# --------------------------------------------------------------------------- the scripts, for real


def session(root: Path) -> LocalSession:
    return LocalSession(Host("h", transport=TransportKind.LOCAL, root=str(root)))


def stream(s: LocalSession, command: Command) -> list[bytes]:
    return list(s.stream(list(command.argv), sudo=False, stdin=command.stdin))


def exit_of(root: Path, command: Command) -> tuple[int, bytes]:
    done = subprocess.run(list(command.argv), cwd=root, capture_output=True, check=False,
                          input=command.stdin or b"")
    return done.returncode, done.stderr


@NEEDS_ROOT
@pytest.mark.parametrize("name", ["mail.log", *HOSTILE])
def test_root_scripts_read_any_file_name(tmp_path: Path, name: str) -> None:
    log = tmp_path / name
    log.write_bytes(b"\n".join(LINES) + b"\n")
    packed = tmp_path / (name + ".2.gz")
    packed.write_bytes(gzip.compress(b"\n".join(LINES) + b"\n"))
    s = session(tmp_path)
    for path in (str(log), str(packed)):
        match = filter_file_command(path, Needles(("to=<CAROL@example.net>",), True),
                                    root=PROGRAMS)
        assert match.argv[5] == PROGRAMS.cat and "sudo -n --" in match.argv[2]
        assert stream(s, match) == [LINES[1]]
        assert stream(s, filter_file_command(path, None, root=PROGRAMS)) == LINES
        (ids,) = ids_file_commands(path, ["4B2E3D0204"], root=PROGRAMS)
        assert stream(s, ids) == [LINES[2]]
        assert exit_of(tmp_path, filter_file_command(path, Needles(("nothing",), False),
                                                     root=PROGRAMS))[0] == 1
    copy = copy_file_command(str(packed), root=PROGRAMS)
    assert b"".join(s.stream_chunks(list(copy.argv), sudo=False)) == packed.read_bytes()
    assert list(tmp_path.glob("CANARY*")) == [] and not Path("CANARY").exists()


@NEEDS_ROOT
@pytest.mark.parametrize("name", ["mail.log", "mail.log.2.gz", HOSTILE[1]])
def test_root_prefiltered_pass1_finds_what_the_one_grep_finds(tmp_path: Path, name: str) -> None:
    # --to/--from: `sudo cat FILE | [decompress |] grep ADDR | grep -e to=<ADDR> -e to=ADDR,`
    text = b"\n".join([*LINES, LINES[1].replace(b"to=<carol@example.net>", b"to=CAROL@example.net,"),
                       LINES[1].replace(b"to=<carol@example.net>", b"note=carol@example.net")])
    log = tmp_path / name
    log.write_bytes(gzip.compress(text + b"\n") if name.endswith(".gz") else text + b"\n")
    needles = pass1_needles(Query(recipients=("carol@example.net",)))
    assert needles is not None and needles.prefilter
    match = filter_file_command(str(log), needles, root=PROGRAMS)
    assert "sudo -n --" in match.argv[2]
    got = stream(session(tmp_path), match)
    assert got == [LINES[1], LINES[1].replace(b"to=<carol@example.net>", b"to=CAROL@example.net,")]
    nobody = pass1_needles(Query(recipients=("nobody@example.net",)))
    assert nobody is not None
    assert exit_of(tmp_path, filter_file_command(str(log), nobody, root=PROGRAMS))[0] == 1
    # a damaged archive and a failed root read are never "no match"
    if name.endswith(".gz"):
        data = gzip.compress(b"\n".join(LINES * 3000) + b"\n")
        log.write_bytes(data[: len(data) // 2])
        code, err = exit_of(tmp_path, filter_file_command(str(log), nobody, root=PROGRAMS))
        assert code == EXIT_DAMAGED and b"cannot decompress" in err
    (tmp_path / "dir.log").mkdir(exist_ok=True)
    code, err = exit_of(tmp_path, filter_file_command(str(tmp_path / "dir.log"), nobody,
                                                      root=PROGRAMS))
    assert code == EXIT_ROOT_READ and b"could not read" in err


@NEEDS_ROOT
def test_root_scripts_pass2_with_many_ids_on_stdin(tmp_path: Path) -> None:
    # The fixed strings reach grep on the script's stdin, past sudo's cat and the
    # decompressor: more than a pipe holds, and the lines of exactly these IDs.
    many = [f"{i:012X}" for i in range(20_000)]
    for name, data in (("mail.log", b"\n".join(LINES) + b"\n"),
                       ("mail.log.1.gz", gzip.compress(b"\n".join(LINES) + b"\n"))):
        log = tmp_path / name
        log.write_bytes(data)
        (cmd,) = ids_file_commands(str(log), ["4B2E3D0203", "4B2E3D0204", *many],
                                   root=PROGRAMS)
        assert cmd.stdin is not None and len(cmd.stdin) > 1 << 18
        assert stream(session(tmp_path), cmd) == LINES[:3]


@NEEDS_ROOT
def test_root_scripts_say_damaged_vanished_and_unreadable(tmp_path: Path) -> None:
    data = gzip.compress(b"\n".join(LINES * 2000) + b"\n")
    damaged = tmp_path / "mail.log.2.gz"
    damaged.write_bytes(data[: len(data) // 2])
    code, err = exit_of(tmp_path, filter_file_command(str(damaged), None, root=PROGRAMS))
    assert code == EXIT_DAMAGED and b"cannot decompress" in err
    gone = filter_file_command(str(tmp_path / "gone.log"), None, root=PROGRAMS)
    code, err = exit_of(tmp_path, gone)
    assert code == EXIT_VANISHED and b"no such file" in err
    # A directory is no file: cat fails as root, which is the root reader's failure.
    (tmp_path / "dir.log").mkdir()
    code, err = exit_of(tmp_path, filter_file_command(str(tmp_path / "dir.log"),
                                                      Needles(("x",), False), root=PROGRAMS))
    assert code == EXIT_ROOT_READ and b"could not read" in err
    with pytest.raises(TransportError) as caught:
        stream(session(tmp_path), filter_file_command(str(tmp_path / "dir.log"), None,
                                                      root=PROGRAMS))
    assert caught.value.stage is Stage.READ and caught.value.exit_code == EXIT_ROOT_READ


def run_as(user: str, argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["runuser", "-u", user, "--", *argv], cwd=cwd, capture_output=True,
                          check=False)


@NEEDS_ROOT
def test_a_refused_sudo_is_a_sudo_error(tmp_path: Path) -> None:
    ensure_user(NON_ROOT_USER)
    log = tmp_path / "mail.log"
    log.write_bytes(b"\n".join(LINES) + b"\n")
    tmp_path.chmod(0o755)
    log.chmod(0o600)
    command = filter_file_command(str(log), Needles(("x",), False), root=PROGRAMS)
    done = run_as(NON_ROOT_USER, command.argv, tmp_path)
    assert done.returncode == EXIT_ROOT_READ
    with pytest.raises(TransportError) as caught:
        check_sudo("h", False, done.returncode, done.stderr)
    assert caught.value.stage is Stage.SUDO
    assert "sudo -n refused (sudo: a password is required)" in caught.value.message


@NEEDS_ROOT
def test_root_journal_reads_the_window(tmp_path: Path) -> None:
    tool = next((t for t in ("/usr/lib/systemd/systemd-journal-remote",
                             "/lib/systemd/systemd-journal-remote") if os.access(t, os.X_OK)), None)
    if tool is None:
        pytest.skip("systemd-journal-remote is not installed")  # the ssh tests need it anyway
    text = "\n".join(line.decode() for line in LINES) + "\n"
    now = datetime(2024, 12, 1, tzinfo=UTC).timestamp()
    journal = tmp_path / "var/log/journal" / machine_id("h")
    journal.mkdir(parents=True)
    subprocess.run([tool, "-o", str(journal / "system.journal"), "-"], check=True,
                   input=journal_export_from_syslog(text, machine_id("h"), now).encode())
    s = session(tmp_path)
    since = datetime(2024, 11, 28, 8, 3, 31).astimezone(UTC)
    where = str(journal.parent)
    plain = journal_command(None, since=since, until=None, directory=where)
    root = journal_command(None, since=since, until=None, directory=where, root=PROGRAMS)
    assert stream(s, root) == stream(s, plain) and len(stream(s, root)) == 2
    found = journal_command(Needles(("carol",), False), since=None, until=None,
                            directory=where, root=PROGRAMS)
    assert len(stream(s, found)) == 1 and b"to=<carol@example.net>" in stream(s, found)[0]
    carol = pass1_needles(Query(recipients=("carol@example.net",)))
    assert carol is not None and carol.prefilter
    for root_programs in (PROGRAMS, None):
        pre = journal_command(carol, since=None, until=None, directory=where, root=root_programs)
        assert stream(s, pre) == stream(s, found)
    src = LogSource("journal:SYSLOG_FACILITY=2", kind=SourceKind.JOURNAL)
    edges = hostcheck.edge_lines(s, src, PROGRAMS)  # the directory host's own journal
    assert edges == hostcheck.edge_lines(s, src)
    assert edges[0] is not None and "4B2E3D0203: client=" in edges[0]
    assert edges[1] is not None and "4B2E3D0204: from=" in edges[1]


@NEEDS_ROOT
def test_root_file_ends_for_hosts_check(tmp_path: Path) -> None:
    log = tmp_path / "var/log/mail.log.1.gz"
    log.parent.mkdir(parents=True)
    log.write_bytes(gzip.compress(b"\n".join(LINES) + b"\n"))
    s = session(tmp_path)
    src = LogSource("/var/log/mail.log.1.gz")
    assert hostcheck.edge_lines(s, src, PROGRAMS) == hostcheck.edge_lines(s, src)
    assert hostcheck.edge_lines(s, src, PROGRAMS) == (LINES[0].decode(), LINES[2].decode())
