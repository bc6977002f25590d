"""Run read-only commands on a host: over SSH (paramiko) or in a local directory.

A :class:`Session` is one open connection to one host, reused for all of that host's
commands. A session is never shared between threads: the fleet pool gives each host's
task its own session. Nothing here writes to, uploads to or creates files on a host.

Commands are argument vectors. :class:`SSHSession` joins them with :func:`shlex.join`,
so every word reaches the remote POSIX shell quoted; a pipeline is passed as
``["sh", "-c", CONSTANT_SCRIPT, "sh", arg1, ...]`` so that user values stay positional
parameters of a constant script.

The SSH implementation lives in :mod:`collector.ssh`, imported only when an SSH host is
opened (paramiko costs ~0.2 s to import; a local-only run never pays for it).
"""

from __future__ import annotations

import abc
import io
import os
import posixpath
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, cast

from collector.errors import TransportError
from collector.models import CommandResult, Host, Settings, Stage, TransportKind

PassphraseProvider = Callable[[str], "str | None"]
"""Asked for the passphrase of an encrypted private key (its path); None: skip the key."""

PASSPHRASE_ENV = "COLLECTOR_KEY_PASSPHRASE"
DEFAULT_SSH_PORT = 22
_CHUNK = 65536
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


def _sudo_argv(argv: Sequence[str], sudo: bool) -> list[str]:
    if not argv:
        raise ValueError("empty command")
    return [*_SUDO, *argv] if sudo else list(argv)


def _check_sudo(host: str, sudo: bool, exit_code: int, stderr: bytes) -> None:
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


def _check_stream_exit(host: str, command: str, exit_code: int, stderr: bytes) -> None:
    if exit_code not in (0, 1):
        raise TransportError(
            host, Stage.READ, f"command exited with {exit_code}: {command}: {_stderr_tail(stderr)}"
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


def _keep_tail(buffer: bytearray) -> None:
    if len(buffer) > 2 * _STDERR_KEEP:
        del buffer[:-_STDERR_KEEP]


# --------------------------------------------------------------------------- local


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


class LocalSession(LineStreams):
    """A directory on this machine acting as a host's ``/`` (``transport = "local"``).

    Commands run here with :mod:`subprocess`, never through a shell. Callers translate
    every host path with :meth:`path`. ``sudo`` is applied only when not already root.
    """

    def __init__(self, host: Host, settings: Settings | None = None) -> None:
        if not host.root:
            raise TransportError(host.name, Stage.CONFIG, "local transport needs a root directory")
        root = os.path.realpath(host.root)
        if not os.path.isdir(root):
            raise TransportError(host.name, Stage.CONNECT, f"no such directory: {host.root}")
        self.host = host
        self.root = root
        self._timeout = (settings or Settings()).command_timeout

    def path(self, p: str) -> str:
        """``root + p``; refuses a path that leaves the root (``..``, absolute symlinks)."""
        if not p.startswith("/"):
            raise TransportError(self.host.name, Stage.READ, f"not an absolute path: {p!r}")
        joined = posixpath.normpath(posixpath.join(self.root, p.lstrip("/")))
        # realpath also catches a symlink inside the root that points outside it.
        resolved = os.path.realpath(joined)
        for candidate in (joined, resolved):
            if os.path.commonpath([self.root, candidate]) != self.root:
                raise TransportError(
                    self.host.name, Stage.READ, f"path escapes the host root: {p!r}"
                )
        return joined

    def _argv(self, argv: Sequence[str], sudo: bool | None) -> tuple[list[str], bool]:
        want = self.host.sudo if sudo is None else sudo
        use = want and os.geteuid() != 0
        return _sudo_argv(argv, use), use

    def run(
        self, argv: Sequence[str], *, timeout: float | None = None, sudo: bool | None = None
    ) -> CommandResult:
        """See :meth:`Session.run`; a program that is not found gives exit code 127."""
        full, use_sudo = self._argv(argv, sudo)
        command = shlex.join(full)
        limit = self._timeout if timeout is None else timeout
        try:
            done = subprocess.run(
                full,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TransportError(
                self.host.name, Stage.READ, f"command timed out after {limit:g} s: {command}"
            ) from None
        except OSError as exc:
            # Like a shell: "not found" is exit 127, not a transport failure.
            return CommandResult(command, b"", f"{full[0]}: {exc.strerror}\n".encode(), 127)
        _check_sudo(self.host.name, use_sudo, done.returncode, done.stderr)
        return CommandResult(command, done.stdout, done.stderr, done.returncode)

    def stream_chunks(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        sudo: bool | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Iterator[bytes]:
        """See :meth:`Session.stream_chunks`."""
        full, use_sudo = self._argv(argv, sudo)
        command = shlex.join(full)
        limit = self._timeout if timeout is None else timeout
        try:
            proc = subprocess.Popen(
                full,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise TransportError(
                self.host.name, Stage.READ, f"cannot run {full[0]}: {exc.strerror}"
            ) from None
        return self._chunks(proc, command, limit, use_sudo, on_bytes)

    def _chunks(
        self,
        proc: subprocess.Popen[bytes],
        command: str,
        limit: float,
        use_sudo: bool,
        on_bytes: Callable[[int], None] | None,
    ) -> Iterator[bytes]:
        assert proc.stdout is not None and proc.stderr is not None
        stderr = bytearray()
        timed_out = threading.Event()

        def drain(pipe: io.BufferedReader) -> None:
            for chunk in iter(lambda: pipe.read1(_CHUNK), b""):
                stderr.extend(chunk)
                _keep_tail(stderr)

        def expire() -> None:
            timed_out.set()
            proc.kill()

        drainer = threading.Thread(target=drain, args=(proc.stderr,), daemon=True)
        timer = threading.Timer(limit, expire)
        drainer.start()
        timer.start()
        stdout = cast(io.BufferedReader, proc.stdout)
        try:
            for chunk in iter(lambda: stdout.read1(_CHUNK), b""):
                if on_bytes is not None:
                    on_bytes(len(chunk))
                yield chunk
            exit_code = proc.wait()
            drainer.join()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()  # the caller stopped early: do not leave the reader behind
                proc.wait()
            proc.stdout.close()
            drainer.join()
            proc.stderr.close()
        if timed_out.is_set():
            raise TransportError(
                self.host.name, Stage.READ, f"command timed out after {limit:g} s: {command}"
            )
        _check_sudo(self.host.name, use_sudo, exit_code, bytes(stderr))
        _check_stream_exit(self.host.name, command, exit_code, bytes(stderr))

    def close(self) -> None:
        """Nothing to release."""


def open_session(
    host: Host, settings: Settings, *, passphrase_provider: PassphraseProvider | None = None
) -> Session:
    """Connect to ``host`` (through its ``proxy_jump`` bastions) and return a session.

    Raises :class:`TransportError` tagged ``connect``, ``host-key`` or ``auth``.
    Bastions use the host's identity file and, without a ``user@``, the host's user.
    """
    if host.transport is TransportKind.LOCAL:
        return LocalSession(host, settings)
    from collector.ssh import open_ssh_session

    return open_ssh_session(host, settings, passphrase_provider=passphrase_provider)
