"""Batches: several read-only commands in one round trip (``transport.base.run_batch``).

The script runs for real (``sh``, here and over real sshd); every command's batched result
must be the one it gives when run alone, whatever it prints or is given.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from collector.errors import TransportError
from collector.models import CommandResult, Host, Stage
from collector.transport.base import (
    BATCH_BYTES,
    batch_argv,
    check_sudo,
    parse_batch,
    run_batch,
)

# Commands that print what a frame line looks like, NUL bytes, newlines, no final newline,
# od's own output format, binary noise, on stdout and on stderr, with every exit status kind.
FRAMES = "C1\nC2\nX0\nX\nC3\n 6c 6f\n\n"
HOSTILE: list[list[str]] = [
    ["printf", "a\\0b\\nC2\\nX0\\n\\n 6c 6f\\n"],
    ["sh", "-c", 'printf "%s" "$1"; printf "%s" "$1" >&2; exit 7', "sh", FRAMES],
    ["/nonexistent/program", "C1"],
    ["printf", "%s", "$(touch CANARY-subst) `touch CANARY-tick` \"'; * ?[x] \nC5\nX0"],
    ["printf", "%s|", "-n", "", " ", "3", "0", "\n", "--", "-e"],
    ["cat", "/dev/null"],
    # binary: the first bytes of the shell itself (NULs, every byte value, no line ends)
    ["sh", "-c", "head -c 70000 /bin/sh; tail -c 3000 /bin/sh >&2; exit 255"],
    ["sh", "-c", "printf 'no newline'; exit 1"],
    ["sh", "-c", "kill -9 $$"],
]


def alone(argv: Sequence[str], cwd: Path) -> CommandResult:
    """The command run on its own, as a session's ``run`` sees it (``sh -c`` of its words)."""
    done = subprocess.run(["sh", "-c", shlex.join(argv)], cwd=cwd, capture_output=True,
                          stdin=subprocess.DEVNULL, check=False)
    return CommandResult(shlex.join(argv), done.stdout, done.stderr, done.returncode % 256)


def batched(commands: Sequence[Sequence[str]], cwd: Path) -> tuple[bytes, bytes]:
    done = subprocess.run(batch_argv(commands), cwd=cwd, capture_output=True, check=False)
    return done.stdout, done.stderr


def test_each_command_of_a_batch_gives_what_it_gives_alone(tmp_path: Path) -> None:
    stdout, stderr = batched(HOSTILE, tmp_path)
    results = parse_batch(stdout, stderr, HOSTILE)
    for argv, result in zip(HOSTILE, results):
        want = alone(argv, tmp_path)
        assert result is not None, argv
        assert result.stdout == want.stdout, argv
        assert result.exit_code == want.exit_code, argv
        if argv[0] == "/nonexistent/program":  # the shell's words for it: "not found"
            assert b"/nonexistent/program: not found" in result.stderr
        elif argv != HOSTILE[-1]:
            assert result.stderr == want.stderr, argv
    assert results[1] is not None and results[1].stderr == FRAMES.encode()
    assert results[6] is not None and len(results[6].stdout) == 70000
    assert results[8] is not None and results[8].exit_code == 137
    assert list(tmp_path.iterdir()) == []  # no argument was ever run as a command


def test_a_cut_batch_never_gives_a_wrong_result(tmp_path: Path) -> None:
    """Cut anywhere (a lost connection, a timeout), a command's result is its own or
    unknown (None, then run alone): never part of its output, nor another command's."""
    commands = [HOSTILE[0], HOSTILE[1], ["printf", "%s", "x" * 40], HOSTILE[3], HOSTILE[5]]
    stdout, stderr = batched(commands, tmp_path)
    whole = parse_batch(stdout, stderr, commands)
    assert all(r is not None for r in whole)
    for cut in range(len(stdout)):
        for got, want in zip(parse_batch(stdout[:cut], stderr, commands), whole):
            assert got is None or got == want, cut
    # stderr keeps only its tail: a command whose stderr frame is lost has an empty stderr
    lost = parse_batch(stdout, stderr[len(stderr) // 2 :], commands)
    assert [r.stdout if r else None for r in lost] == [r.stdout if r else None for r in whole]


@pytest.mark.parametrize(("forged", "inside"), [
    (b"C2\n", True),         # a frame out of turn
    (b"C1\n", False),        # a frame again
    (b"garbage\n", True),    # not what od writes
    (b"X1\n", False),        # a second status
    (b" 6c 6f\n", False),    # data after the status
    (b" 6c 6\n", True),      # half a byte
    (b" 6C 6F\n", True),     # not od's case
    (b"\n", True),           # od writes no empty line
])
def test_a_line_the_script_cannot_write_there_breaks_the_frame(forged: bytes,
                                                                 inside: bool) -> None:
    commands = [["a"], ["b"]]
    good = b"C1\n 6f 6b\nX0\nC2\n 6f 6b\nX3\n"
    one = parse_batch(good, b"", commands)
    assert [r.stdout if r else None for r in one] == [b"ok", b"ok"]
    assert [r.exit_code if r else None for r in one] == [0, 3]
    # inside the first frame (before its status) or after it: nothing after is trusted
    text = good.replace(b"X0\n", forged + b"X0\n" if inside else b"X0\n" + forged, 1)
    results = parse_batch(text, b"", commands)
    assert results[1] is None
    assert results[0] == (None if inside else one[0])


class ShellSession:
    """A session that runs commands with this machine's ``sh`` (as sshd's shell would), and
    counts them; ``broken`` makes every batch print nothing (a host without ``od``)."""

    def __init__(self, cwd: Path, broken: bool = False) -> None:
        self.host = Host("h")
        self.cwd = cwd
        self.broken = broken
        self.ran: list[list[str]] = []

    def run(self, argv: Sequence[str], *, timeout: float | None = None,
            sudo: bool | None = None) -> CommandResult:
        self.ran.append(list(argv))
        if self.broken and list(argv[:3]) == batch_argv([["x"], ["y"]])[:3]:
            return CommandResult("", b"", b"sh: 1: od: not found\n", 3)
        result = alone(argv, self.cwd)
        check_sudo(self.host.name, False, result.exit_code, result.stderr)
        return result


def test_run_batch_is_one_round_trip_or_falls_back(tmp_path: Path) -> None:
    session = ShellSession(tmp_path)
    got = run_batch(session, HOSTILE[:6])  # type: ignore[arg-type]
    assert len(session.ran) == 1
    broken = ShellSession(tmp_path, broken=True)
    again = run_batch(broken, HOSTILE[:6])  # type: ignore[arg-type]
    assert len(broken.ran) == 7  # the batch, then each command alone
    assert [(r.stdout, r.exit_code) for r in got] == [(r.stdout, r.exit_code) for r in again]


def test_run_batch_splits_by_what_the_commands_print_at_most(tmp_path: Path) -> None:
    session = ShellSession(tmp_path)
    commands = [["printf", "%s", str(n)] for n in range(5)]
    got = run_batch(session, commands, most=[BATCH_BYTES // 2] * 5)  # type: ignore[arg-type]
    assert [r.stdout for r in got] == [b"0", b"1", b"2", b"3", b"4"]
    assert len(session.ran) == 3  # 2 + 2 + 1 (one alone is a plain run)


def test_a_refused_sudo_inside_a_batch_raises_as_run_does(tmp_path: Path) -> None:
    refused = ["sh", "-c", "echo 'sudo: a password is required' >&2; exit 5"]
    session = ShellSession(tmp_path)
    with pytest.raises(TransportError) as alone_error:
        session.run(refused)
    with pytest.raises(TransportError) as batch_error:
        run_batch(session, [["true"], refused])  # type: ignore[arg-type]
    assert batch_error.value.stage is Stage.SUDO
    assert batch_error.value.message == alone_error.value.message
