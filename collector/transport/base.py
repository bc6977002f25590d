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
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from collector.errors import TransportError
from collector.models import CommandResult, Host, Stage

PassphraseProvider = Callable[[str], "str | None"]
"""Asked for the passphrase of an encrypted private key (its path); None: skip the key."""

PASSPHRASE_ENV = "COLLECTOR_KEY_PASSPHRASE"
DEFAULT_SSH_PORT = 22
CHUNK = 65536
_STDERR_KEEP = 65536  # stderr kept per command (its tail); enough for any diagnostic
_TAIL = 2000  # stderr characters quoted in an error message
_SUDO = ("sudo", "-n", "--")
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
    ) -> Iterator[bytes]:
        """Yield stdout lines as they arrive, without their trailing ``\\n``.

        A last line without a newline is yielded too. stderr is drained at the same
        time. After the output ends, an exit code other than 0 or 1 (grep's "no
        match") raises :class:`TransportError` (stage ``read``, with the stderr tail).
        ``on_bytes`` is called with the size of every chunk of stdout received.
        ``timeout`` bounds the whole command, including the time the caller spends
        between lines.
        """
        ...

    def stream_chunks(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        sudo: bool | None = None,
        on_bytes: Callable[[int], None] | None = None,
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
    return [*_SUDO, *argv] if sudo else list(argv)


def check_sudo(host: str, sudo: bool, exit_code: int, stderr: bytes) -> None:
    """Turn sudo's "I would have to ask" into a clear error (exit 1 + sudo's own words)."""
    if sudo and exit_code == 1 and any(s in stderr for s in _SUDO_REFUSALS):
        said = stderr.decode("utf-8", "replace").strip().splitlines()[-1]
        raise TransportError(
            host,
            Stage.SUDO,
            f"sudo -n refused ({said}); the inventory sets sudo = true, so this user "
            "needs a NOPASSWD sudoers rule for the read commands",
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


def _split_lines(buffer: bytearray, data: bytes) -> list[bytes]:
    """Append ``data`` to ``buffer``; return the complete lines and keep the rest."""
    buffer += data
    end = buffer.rfind(b"\n")
    if end < 0:
        return []
    lines = bytes(buffer[:end]).split(b"\n")
    del buffer[: end + 1]
    return lines


def lines_of(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Chunks cut anywhere -> lines without their newline (a last unterminated one too)."""
    pending = bytearray()
    for chunk in chunks:
        yield from _split_lines(pending, chunk)
    if pending:
        yield bytes(pending)


def keep_tail(buffer: bytearray) -> None:
    if len(buffer) > 2 * _STDERR_KEEP:
        del buffer[:-_STDERR_KEEP]


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
    ) -> Iterator[bytes]:
        """See :meth:`Session.stream`."""
        return lines_of(self.stream_chunks(argv, timeout=timeout, sudo=sudo, on_bytes=on_bytes))

    @abc.abstractmethod
    def stream_chunks(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        sudo: bool | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Iterator[bytes]:
        """See :meth:`Session.stream_chunks`."""
