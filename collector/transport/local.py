"""A directory on this machine acting as a host: commands run with subprocess, no shell."""

from __future__ import annotations

import errno
import io
import math
import os
import posixpath
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO, cast

from collector.errors import TransportError
from collector.models import CommandResult, Host, Settings, Stage
from collector.transport.base import (
    CHUNK,
    LineStreams,
    Reader,
    check_stream_exit,
    check_sudo,
    collect,
    keep_tail,
    sudo_argv,
)

#: Heap cap of every command run for a local host (KiB, ``ulimit -d``). Postfix lines are
#: short and grep, awk, sed and the decompressors need a few MiB (xz -9 and zstd at most
#: ~130 MiB); a grep holding a hostile 1 GB line fails ("memory exhausted", exit 2) instead
#: of taking this machine's memory.
COMMAND_HEAP_KIB = 256 * 1024
# $1 = the cap, the rest = the command. A constant: the command's words stay words.
_LIMITED = 'n=$1; shift; ulimit -d "$n" 2>/dev/null; exec "$@"'


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
        self.notes: tuple[str, ...] = ()
        self.root = root
        settings = settings or Settings()
        self._timeout = settings.command_timeout
        self._run_max = settings.run_output_max
        self._running: set[subprocess.Popen[bytes]] = set()

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
        return sudo_argv(argv, use), use

    def run(
        self, argv: Sequence[str], *, timeout: float | None = None, sudo: bool | None = None
    ) -> CommandResult:
        """See :meth:`Session.run`; a program that is not found gives exit code 127."""
        full, use_sudo = self._argv(argv, sudo)
        command = shlex.join(full)
        limit = self._timeout if timeout is None else timeout
        try:
            proc = self._popen(full)
        except OSError as exc:
            # Like a shell: "not found" is exit 127, not a transport failure.
            return CommandResult(command, b"", f"{full[0]}: {exc.strerror}\n".encode(), 127)
        reader = self._read(proc, command, limit, None)
        stdout, exit_code, stderr = collect(reader, self._run_max, self.host.name, argv, command)
        check_sudo(self.host.name, use_sudo, exit_code, stderr)
        return CommandResult(command, stdout, stderr, exit_code)

    def _popen(self, full: Sequence[str], *, feed: bool = False) -> subprocess.Popen[bytes]:
        """The command in a process group of its own, so that a timeout ends all of it, with
        its heap capped (:data:`COMMAND_HEAP_KIB`). A missing program raises OSError.
        ``feed``: its stdin is a pipe (else empty)."""
        if shutil.which(full[0]) is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), full[0])
        return subprocess.Popen(
            ["sh", "-c", _LIMITED, "sh", str(COMMAND_HEAP_KIB), *full],
            cwd=self.root,
            stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

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
        full, use_sudo = self._argv(argv, sudo)
        command = shlex.join(full)
        limit = self._timeout if timeout is None else timeout
        try:
            proc = self._popen(full, feed=stdin is not None)
        except OSError as exc:
            raise TransportError(
                self.host.name, Stage.READ, f"cannot run {full[0]}: {exc.strerror}"
            ) from None
        return self._chunks(proc, command, limit, use_sudo, on_bytes, stdin)

    def _chunks(
        self,
        proc: subprocess.Popen[bytes],
        command: str,
        limit: float,
        use_sudo: bool,
        on_bytes: Callable[[int], None] | None,
        stdin: bytes | None,
    ) -> Iterator[bytes]:
        exit_code, stderr = yield from self._read(proc, command, limit, on_bytes, stdin)
        check_sudo(self.host.name, use_sudo, exit_code, stderr)
        check_stream_exit(self.host.name, command, exit_code, stderr)

    def _read(
        self,
        proc: subprocess.Popen[bytes],
        command: str,
        limit: float,
        on_bytes: Callable[[int], None] | None,
        stdin: bytes | None = None,
    ) -> Reader:
        """stdout as it comes (stderr drained meanwhile, its tail kept), then the exit code.

        ``stdin`` is written by a thread of its own, then closed. Stopping early, a timeout
        or an error ends the whole process group.
        """
        assert proc.stdout is not None and proc.stderr is not None
        stderr = bytearray()
        timed_out = threading.Event()

        def drain(pipe: io.BufferedReader) -> None:
            for chunk in iter(lambda: pipe.read1(CHUNK), b""):
                stderr.extend(chunk)
                keep_tail(stderr)

        if proc.stdin is not None:
            threading.Thread(target=_feed, args=(proc.stdin, stdin or b""), daemon=True).start()

        def expire() -> None:
            timed_out.set()
            _kill_group(proc)

        drainer = threading.Thread(target=drain, args=(proc.stderr,), daemon=True)
        # No deadline (``timeout=math.inf``, ``follow``): the command runs until it is
        # stopped, or until :meth:`close` ends it.
        timer = threading.Timer(limit, expire) if math.isfinite(limit) else None
        drainer.start()
        if timer is not None:
            timer.start()
        self._running.add(proc)
        stdout = cast(io.BufferedReader, proc.stdout)
        try:
            for chunk in iter(lambda: stdout.read1(CHUNK), b""):
                if on_bytes is not None:
                    on_bytes(len(chunk))
                yield chunk
            exit_code = proc.wait()
            drainer.join()
        finally:
            if timer is not None:
                timer.cancel()
            self._running.discard(proc)
            _kill_group(proc)  # the caller stopped early: leave no reader behind
            proc.wait()
            proc.stdout.close()
            drainer.join()
            proc.stderr.close()
        if timed_out.is_set():
            raise TransportError(
                self.host.name, Stage.READ, f"command timed out after {limit:g} s", command=command
            )
        return exit_code, bytes(stderr)

    def close(self) -> None:
        """End the commands still running (a follow's ``tail -F``; safe from any thread)."""
        for proc in list(self._running):
            _kill_group(proc)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    """Write a command's whole stdin, then close it; a command that stopped reading (it
    ended, or was ended) is left alone."""
    try:
        pipe.write(data)
    except (BrokenPipeError, ValueError, OSError):
        pass
    try:
        pipe.close()
    except OSError:
        pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End the command and everything it started (``sh``'s ``grep``, ``gzip``, ``head``...).

    Killing only ``sh`` would leave its children running (on a FIFO: for ever), holding the
    output pipe open. Under ``sudo`` the group is root's: then only ``sudo`` itself can be
    signalled, and it passes the signal on to its command. Only a command not yet reaped is
    signalled: until then its pid, the group's id, cannot belong to anyone else.
    """
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone, with its group
    except PermissionError:
        if proc.poll() is None:
            proc.kill()
