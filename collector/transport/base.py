"""Run read-only commands on a host: over SSH (paramiko) or in a local directory.

A :class:`Session` is one open connection to one host, reused for all of that host's
commands. A session is never shared between threads: the fleet pool gives each host's
task its own session. Nothing here writes to, uploads to or creates files on a host.

Commands are argument vectors. :class:`SSHSession` joins them with :func:`shlex.join`,
so every word reaches the remote POSIX shell quoted; a pipeline is passed as
``["sh", "-c", CONSTANT_SCRIPT, "sh", arg1, ...]`` so that user values stay positional
parameters of a constant script.

The two sessions live in :mod:`collector.transport.local` and :mod:`collector.transport.ssh`;
:func:`collector.transport.open_session` picks one (paramiko costs ~0.2 s to import: a
local-only run never pays for it).
"""

from __future__ import annotations

import abc
import re
import shlex
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Protocol

from collector.errors import TransportError
from collector.models import CommandResult, Host, Stage
from collector.transport.privilege import EXIT_ROOT_READ, SUDO

PassphraseProvider = Callable[[str], "str | None"]
"""Asked for the passphrase of an encrypted private key (its path); None: skip the key."""

PASSPHRASE_ENV = "COLLECTOR_KEY_PASSPHRASE"
DEFAULT_SSH_PORT = 22
CHUNK = 65536
_STDERR_KEEP = 65536  # stderr kept per command (its tail); enough for any diagnostic

#: Longest line :meth:`Session.stream` yields whole. Postfix writes lines of at most a few
#: KiB; a longer one comes from something else (or from a hostile host: one 1 GB line).
#: Such a line is yielded as its first ``LINE_MAX`` bytes followed by :data:`CUT_MARK`, and
#: the rest of it is skipped, so one line never costs more than this much memory. The cap
#: is above the parser's own limit for a line (100 000 bytes), so a cut line is always
#: counted there as a bad (over-long) line and never parsed into a record.
LINE_MAX = 128 * 1024
#: What ends a cut line. It holds NULs, which Postfix never writes: no real line ends so.
CUT_MARK = b"\0[collector: over-long line cut]\0"
_TAIL = 2000  # stderr characters quoted in an error message
# What `sudo -n` prints when it would have to ask (sudo 1.9); "a terminal is required"
# comes from older sudo or requiretty.
_SUDO_REFUSALS = (
    b"sudo: a password is required",
    b"sudo: a terminal is required",
    b"is not in the sudoers file",
    b"is not allowed to execute",
    b"may not run sudo",
)


class Session(Protocol):
    """One open connection to one host. Not thread-safe: one thread per session."""

    host: Host
    notes: tuple[str, ...]  # what opening it had to say (a skipped known_hosts line, ...)

    def run(
        self, argv: Sequence[str], *, timeout: float | None = None, sudo: bool | None = None
    ) -> CommandResult:
        """Run ``argv`` to completion and return its output and exit code (any code).

        For small outputs only (a config file, a listing, ``postconf``): a command that
        prints more than ``Settings.run_output_max`` bytes is stopped and raises
        :class:`TransportError` (stage ``read``). Only the tail of stderr is kept.
        ``timeout`` defaults to the inventory's ``command_timeout``; ``sudo`` to
        ``host.sudo``. Raises :class:`TransportError` with stage ``sudo`` when
        ``sudo -n`` has no rule, stage ``read`` on a timeout or a lost connection.
        """
        ...

    def stream(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        sudo: bool | None = None,
        on_bytes: Callable[[int], None] | None = None,
        stdin: bytes | None = None,
    ) -> Iterator[bytes]:
        """Yield stdout lines as they arrive, without their trailing ``\\n``.

        A last line without a newline is yielded too. A line longer than :data:`LINE_MAX`
        is yielded cut, ending in :data:`CUT_MARK` (see :func:`is_cut`). stderr is drained at the same
        time. After the output ends, an exit code other than 0 or 1 (grep's "no
        match") raises :class:`TransportError` (stage ``read``, with the stderr tail).
        ``on_bytes`` is called with the size of every chunk of stdout received.
        ``timeout`` bounds the whole command, including the time the caller spends
        between lines. ``stdin``: bytes written to the command's standard input (then
        closed) while its output is read, so that a long input never waits on a full
        output pipe; None: the command's stdin is empty.
        """
        ...

    def stream_chunks(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        sudo: bool | None = None,
        on_bytes: Callable[[int], None] | None = None,
        stdin: bytes | None = None,
    ) -> Iterator[bytes]:
        """Like :meth:`stream`, but yield stdout as it arrives, cut anywhere (cheaper to
        parse in blocks than line by line)."""
        ...

    def path(self, p: str) -> str:
        """The path a command on this host must use for the host path ``p``."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- helpers


def sudo_argv(argv: Sequence[str], sudo: bool) -> list[str]:
    if not argv:
        raise ValueError("empty command")
    return [*SUDO, *argv] if sudo else list(argv)


def check_sudo(host: str, sudo: bool, exit_code: int, stderr: bytes) -> None:
    """Turn sudo's "I would have to ask" into a clear error: exit 1 of a command run under
    sudo, or :data:`EXIT_ROOT_READ` of a login-user script whose root reader failed, with
    sudo's own words on stderr."""
    ran_sudo = (sudo and exit_code == 1) or exit_code == EXIT_ROOT_READ
    if ran_sudo and any(s in stderr for s in _SUDO_REFUSALS):
        said = next(
            line for line in stderr.decode("utf-8", "replace").splitlines()
            if any(s.decode() in line for s in _SUDO_REFUSALS)
        ).strip()[:_TAIL]
        raise TransportError(
            host,
            Stage.SUDO,
            f"sudo -n refused ({said}); the inventory sets sudo = true, so this user "
            "needs NOPASSWD sudoers rules for the read commands (collector hosts --sudoers "
            "prints them)",
        )


def _stderr_tail(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    return text[-_TAIL:] if text else "(no stderr)"


def check_stream_exit(host: str, command: str, exit_code: int, stderr: bytes) -> None:
    if exit_code not in (0, 1):
        raise TransportError(
            host,
            Stage.READ,
            f"command exited with {exit_code}: {_stderr_tail(stderr)}",
            exit_code=exit_code,
            command=command,
        )


def is_cut(line: bytes) -> bool:
    """Whether :meth:`Session.stream` cut this line at :data:`LINE_MAX` (count it over-long)."""
    return line.endswith(CUT_MARK)


class LineSplitter:
    """Chunks cut anywhere -> lines, holding at most ``limit`` bytes of an unfinished line.

    A line longer than ``limit`` is handed out as soon as it passes the limit, as its first
    ``limit`` bytes plus :data:`CUT_MARK`; its remaining bytes, up to its newline, are
    dropped as they arrive. Memory stays at one chunk plus ``limit`` whatever is sent.
    """

    def __init__(self, limit: int = LINE_MAX) -> None:
        self.limit = limit
        self._pending = bytearray()
        self._cut = False  # the unfinished line was cut and handed out already

    def feed(self, data: bytes) -> list[bytes]:
        """The lines that ``data`` completes (or cuts)."""
        lines: list[bytes] = []
        end = data.rfind(b"\n")
        if end >= 0:
            lines = data[:end].split(b"\n")
            if self._cut:
                del lines[0]  # the end of a line handed out cut
            elif self._pending:
                lines[0] = bytes(self._pending) + lines[0]
            self._pending.clear()
            self._cut = False
            if lines and max(map(len, lines)) > self.limit:
                lines = [self._capped(x) for x in lines]
            data = data[end + 1 :]
        if data and not self._cut:
            self._pending += data
            if len(self._pending) > self.limit:
                lines.append(self._capped(bytes(self._pending)))
                self._pending.clear()
                self._cut = True
        return lines

    def finish(self) -> list[bytes]:
        """The last line, if it had no newline (and was not cut already)."""
        last = [bytes(self._pending)] if self._pending else []
        self._pending.clear()
        return last

    def _capped(self, line: bytes) -> bytes:
        return line if len(line) <= self.limit else line[: self.limit] + CUT_MARK


def lines_of(chunks: Iterator[bytes], limit: int = LINE_MAX) -> Iterator[bytes]:
    """Chunks cut anywhere -> lines without their newline (a last unterminated one too);
    a line over ``limit`` bytes is cut (see :class:`LineSplitter`)."""
    splitter = LineSplitter(limit)
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.finish()


def keep_tail(buffer: bytearray) -> None:
    if len(buffer) > 2 * _STDERR_KEEP:
        del buffer[:-_STDERR_KEEP]


class OutputTooLarge(TransportError):
    """A command run by :meth:`Session.run` printed more than ``Settings.run_output_max``."""


Reader = Generator[bytes, None, tuple[int, bytes]]
"""A running command's stdout chunks; when they end, its exit code and stderr tail.

Closing it early (``close()``, or dropping it) ends the command."""


def collect(
    reader: Reader, limit: int, host: str, argv: Sequence[str], command: str
) -> tuple[bytes, int, bytes]:
    """Read a command's whole stdout, at most ``limit`` bytes: (stdout, exit code, stderr).

    A command that prints more is stopped (the reader is closed, which ends it) and raises
    :class:`TransportError`, stage ``read``: the callers of ``run()`` expect small outputs,
    and a host that sends endless output must not grow collector's memory.
    """
    out = bytearray()
    try:
        while len(out) <= limit:
            try:
                out += next(reader)
            except StopIteration as end:
                exit_code, stderr = end.value
                return bytes(out), exit_code, stderr
    finally:
        reader.close()
    raise OutputTooLarge(
        host,
        Stage.READ,
        f"{describe_argv(argv)} printed more than {human_size(limit)}, the most collector "
        "reads from such a command; it was stopped",
        command=command,
    )


def describe_argv(argv: Sequence[str], width: int = 120) -> str:
    """A command in a person's words: its argv, a constant shell script shown as ``…``."""
    words = list(argv)
    text = "sh -c … " + shlex.join(words[4:]) if words[:2] == ["sh", "-c"] else shlex.join(words)
    return text if len(text) <= width else text[: width - 1] + "…"


def human_size(n: int) -> str:
    """``4194304`` -> ``4 MiB`` (whole KiB/MiB when exact, else bytes)."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


# --------------------------------------------------------------------------- shared by both sessions


class LineStreams(abc.ABC):
    """``stream`` (lines) for a session that implements ``stream_chunks``."""

    def stream(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        sudo: bool | None = None,
        on_bytes: Callable[[int], None] | None = None,
        stdin: bytes | None = None,
    ) -> Iterator[bytes]:
        """See :meth:`Session.stream`."""
        return lines_of(self.stream_chunks(argv, timeout=timeout, sudo=sudo, on_bytes=on_bytes,
                                           stdin=stdin))

    @abc.abstractmethod
    def stream_chunks(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        sudo: bool | None = None,
        on_bytes: Callable[[int], None] | None = None,
        stdin: bytes | None = None,
    ) -> Iterator[bytes]:
        """See :meth:`Session.stream_chunks`."""


# --------------------------------------------------------------------------- batches

# Runs several commands in one exec channel (one round trip instead of one each).
# $@ = for each command: its number of words, then its words; they run one after another,
# as the login user. Each command's stdout and stderr are hex-encoded by od (`od -An -v
# -tx1` writes only spaces, 0-9, a-f and newlines), so no byte a command prints, and no
# argument, can look like a frame line: those start with C (a command begins: on stdout and
# on stderr) or X (its exit status, on stdout), letters od never writes. The status goes
# through its own descriptor (3, a command substitution) since a pipeline's status is od's;
# the substitution also waits for both ods to finish before X is printed. The command's
# words are taken as the subshell's "$@" (the rest shifted off), never evaluated.
_BATCH = (
    'command -v od >/dev/null || exit 3; exec 4>&1; i=0; '
    'while [ "$#" -gt 0 ]; do '
    'n=$1; shift; case $n in ""|*[!0-9]*) exit 2;; esac; [ "$n" -le "$#" ] || exit 2; '
    'i=$((i+1)); printf "C%d\\n" "$i"; printf "C%d\\n" "$i" >&2; '
    's=$( { { { ( t=$#; j=0; '
    'for w do [ "$j" -lt "$n" ] && set -- "$@" "$w"; j=$((j+1)); done; '
    'shift "$t"; "$@" ) 3>&- 4>&- </dev/null; echo "$?" >&3; } '
    '| od -An -v -tx1 >&4; } 2>&1 | od -An -v -tx1 >&2; } 3>&1 ); '
    'printf "X%s\\n" "$s"; shift "$n"; done'
)
_HEX_LINE = re.compile(rb"(?: [0-9a-f]{2})+")
_FRAME = re.compile(rb"C([1-9][0-9]{0,5})")
_STATUS = re.compile(rb"X([0-9]{1,3})")


def batch_argv(commands: Sequence[Sequence[str]]) -> list[str]:
    """One command that runs every command of ``commands`` in turn (see :func:`parse_batch`).

    Each command's words are positional parameters of a constant script: nothing is ever
    interpolated into it."""
    argv = ["sh", "-c", _BATCH, "sh"]
    for words in commands:
        if not words:
            raise ValueError("empty command")
        argv += [str(len(words)), *words]
    return argv


def parse_batch(
    stdout: bytes, stderr: bytes, commands: Sequence[Sequence[str]]
) -> list[CommandResult | None]:
    """Each command's own result from :func:`batch_argv`'s output; None for a command whose
    frame is missing or incomplete (the batch was cut short, or the host lacks ``od``).

    A frame line is honoured only where it can come from the script itself: in order (the
    n-th frame of the n-th command); any other line breaks the frame it is in. stderr may
    have lost its start (only its tail is kept): a command whose stderr frame is missing then
    has an empty stderr.
    """
    count = len(commands)
    outs: list[bytearray | None] = [None] * count
    codes: list[int | None] = [None] * count
    current = -1
    for line in stdout.split(b"\n"):
        done = current < 0 or codes[current] is not None
        frame = _FRAME.fullmatch(line)
        if done and frame is not None and int(frame.group(1)) == current + 2 <= count:
            current += 1
            outs[current] = bytearray()
            continue
        buf = outs[current] if not done else None
        status = _STATUS.fullmatch(line)
        if buf is not None and status is not None:
            codes[current] = int(status.group(1))
        elif buf is not None and _HEX_LINE.fullmatch(line):
            buf += bytes.fromhex(line.decode("ascii"))
        elif line or not done:
            if not done:
                outs[current] = None  # not what od writes: this command's output is unknown
            break  # a line the script did not write where it stands: trust nothing after it
    errs = _stderr_frames(stderr, count)
    results: list[CommandResult | None] = []
    for words, out, code, err in zip(commands, outs, codes, errs):
        if out is None or code is None:
            results.append(None)
        else:
            results.append(CommandResult(shlex.join(words), bytes(out), err, code))
    return results


def _stderr_frames(stderr: bytes, count: int) -> list[bytes]:
    errs = [bytearray() for _ in range(count)]
    current = -1
    for line in stderr.split(b"\n"):
        frame = _FRAME.fullmatch(line)
        if frame is not None and current < int(frame.group(1)) - 1 < count:
            current = int(frame.group(1)) - 1
        elif current >= 0 and _HEX_LINE.fullmatch(line):
            errs[current] += bytes.fromhex(line.decode("ascii"))
    return [bytes(e) for e in errs]


#: Output (stdout and stderr) the commands of one batch may print together when each says
#: how much it prints at most (``run_batch``'s ``most``): od's hex is three times as large, and
#: must stay below ``Settings.run_output_max`` (4 MiB by default).
BATCH_BYTES = 1024 * 1024


def run_batch(
    session: Session,
    commands: Sequence[Sequence[str]],
    *,
    timeout: float | None = None,
    most: Sequence[int] | None = None,
) -> list[CommandResult]:
    """``session.run(argv, sudo=False)`` for each of ``commands``, in one round trip.

    Each result is the command's own (stdout, stderr, exit status), and a command whose
    ``sudo -n`` was refused raises as :meth:`Session.run` does. A command the batch did not
    report (a host without ``od``, a batch cut short, or one whose output together passed
    ``run_output_max``) is run on its own. ``most``: the bytes each command prints at most;
    the commands are then sent in as few batches as keep to :data:`BATCH_BYTES` each. A local
    host runs them one by one (there is no round trip to save).
    """
    from collector.models import TransportKind

    if len(commands) < 2 or session.host.transport is TransportKind.LOCAL:
        return [session.run(list(words), sudo=False, timeout=timeout) for words in commands]
    if most is not None:
        out: list[CommandResult] = []
        start = 0
        while start < len(commands):
            end, total = start + 1, most[start]
            while end < len(commands) and total + most[end] <= BATCH_BYTES:
                total += most[end]
                end += 1
            out += run_batch(session, commands[start:end], timeout=timeout)
            start = end
        return out
    try:
        batch = session.run(batch_argv(commands), sudo=False, timeout=timeout)
    except OutputTooLarge:
        return [session.run(list(words), sudo=False, timeout=timeout) for words in commands]
    parsed = parse_batch(batch.stdout, batch.stderr, commands)
    out = []
    for words, result in zip(commands, parsed):
        if result is None:
            result = session.run(list(words), sudo=False, timeout=timeout)
        else:
            check_sudo(session.host.name, False, result.exit_code, result.stderr)
        out.append(result)
    return out
