"""The SSH side of the transport: paramiko sessions, keys, host keys and ProxyJump.

Shared state: :data:`_KEYS`, a lock-protected cache of loaded private keys keyed by path
(loading an RSA key costs ~125 ms; an encrypted key is asked for its passphrase once per
process), and the bastion connections of :mod:`.bastions`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import getpass
import logging
import math
import os
import random
import shlex
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import paramiko
from paramiko.auth_strategy import AuthSource, AuthStrategy, InMemoryPrivateKey

from collector.errors import TransportError
from collector.models import CommandResult, Host, HostKeyPolicy, Settings, Stage
from collector.transport.base import (
    CHUNK,
    DEFAULT_SSH_PORT,
    PASSPHRASE_ENV,
    LineStreams,
    PassphraseProvider,
    Reader,
    check_stream_exit,
    check_sudo,
    collect,
    keep_tail,
    sudo_argv,
)
from collector.transport.bastions import BASTIONS, disconnect
from collector.transport.known_hosts import KNOWN_HOSTS, KnownHosts

# paramiko logs a failed handshake with its traceback (and the server's words) through the
# logging module; with no handler Python would print it on stderr. collector reports each
# failure as one line of its own instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# --------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class _Loaded:
    key: paramiko.PKey | None
    problem: str = ""


class _KeyCache:
    """Private keys loaded once per process, keyed by absolute path (thread-safe).

    The lock is held while a key loads, so parallel connections wait for the first
    one instead of each loading (or prompting for) the same key. A key that cannot be
    loaded is remembered too: its passphrase is asked for at most once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, _Loaded] = {}

    def get(self, path: str, passphrase_provider: PassphraseProvider | None) -> _Loaded:
        path = os.path.abspath(os.path.expanduser(path))
        with self._lock:
            loaded = self._keys.get(path)
            if loaded is None:
                loaded = _load_key(path, passphrase_provider)
                self._keys[path] = loaded
            return loaded

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


_KEYS = _KeyCache()


def _load_key(path: str, passphrase_provider: PassphraseProvider | None) -> _Loaded:
    try:
        return _Loaded(paramiko.PKey.from_path(path))
    except OSError as exc:
        return _Loaded(None, f"cannot read {path}: {exc.strerror}")
    except (TypeError, paramiko.PasswordRequiredException):
        # cryptography raises TypeError for "encrypted, but no password given".
        pass
    except (ValueError, paramiko.SSHException) as exc:
        return _Loaded(None, f"cannot load {path}: {exc}")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None and passphrase_provider is not None:
        passphrase = passphrase_provider(path)
    if passphrase is None:
        return _Loaded(None, f"{path} is encrypted and no passphrase was given ({PASSPHRASE_ENV})")
    try:
        # cryptography wants bytes here; paramiko passes the password straight through.
        return _Loaded(paramiko.PKey.from_path(path, passphrase.encode()))  # type: ignore[arg-type]
    except (TypeError, ValueError, paramiko.SSHException):
        return _Loaded(None, f"wrong passphrase for {path}")


def _default_identity_files() -> list[str]:
    """OpenSSH's default identities that exist, in its order of trying."""
    names = ("id_rsa", "id_ecdsa", "id_ed25519")
    found = [os.path.expanduser(f"~/.ssh/{n}") for n in names]
    return [p for p in found if os.path.isfile(p)]


def _public_blob(path: str) -> bytes | None:
    """The key in an OpenSSH ``.pub`` file (``TYPE BASE64 [comment]``), or None."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            words = f.read(16384).split()
        return base64.b64decode(words[1], validate=True) if len(words) > 1 else None
    except (OSError, ValueError):
        return None


class _KeysStrategy(AuthStrategy):
    """The keys to offer, in order: ``identity_file`` first, then the agent's other keys.

    sshd counts every key offered against its ``MaxAuthTries`` (6 by default): an agent
    holding many keys must not use up the tries before the key the inventory names. As
    OpenSSH does: an explicit identity file replaces the default ``~/.ssh/id_*`` keys
    (without one: the agent's keys, then those files); the agent's copy of the identity
    file's key (matched by its ``.pub``) is offered in its place, so an encrypted file the
    agent holds needs no passphrase; ``identities_only`` (``IdentitiesOnly``) offers no
    agent keys at all (the agent is not asked: ``agent`` is then None).
    """

    def __init__(
        self,
        username: str,
        identity_file: str | None,
        agent: paramiko.Agent | None,
        passphrase_provider: PassphraseProvider | None,
    ) -> None:
        super().__init__(ssh_config=paramiko.SSHConfig())
        self.username = username
        self.explicit = identity_file is not None
        self.identity_files = [identity_file] if identity_file else _default_identity_files()
        self.agent = agent
        self.passphrase_provider = passphrase_provider
        self.problems: list[str] = []
        self.tried: list[str] = []

    def get_sources(self) -> Iterator[AuthSource]:
        agent_keys = list(self.agent.get_keys()) if self.agent is not None else []
        offered: set[bytes] = set()  # public blobs: each key is offered once
        if not self.explicit:
            yield from self._agent_sources(agent_keys, offered)
        for path in self.identity_files:
            yield from self._file_sources(path, agent_keys, offered)
        if self.explicit:
            yield from self._agent_sources(agent_keys, offered)

    def _agent_sources(
        self, keys: list[paramiko.AgentKey], offered: set[bytes]
    ) -> Iterator[AuthSource]:
        for agent_key in keys:
            if agent_key.asbytes() in offered:
                continue
            offered.add(agent_key.asbytes())
            self.tried.append(f"agent {agent_key.get_name()}")
            yield InMemoryPrivateKey(self.username, agent_key)

    def _file_sources(
        self, path: str, agent_keys: list[paramiko.AgentKey], offered: set[bytes]
    ) -> Iterator[AuthSource]:
        """One identity file's key: the agent's copy if it holds one (no passphrase needed)."""
        held = _public_blob(os.path.expanduser(path) + ".pub")
        if held is not None and held in offered:
            return
        copy = next((k for k in agent_keys if held is not None and k.asbytes() == held), None)
        if copy is not None:
            offered.add(copy.asbytes())
            self.tried.append(f"agent {copy.get_name()} ({path})")
            yield InMemoryPrivateKey(self.username, copy)
            return
        loaded = _KEYS.get(path, self.passphrase_provider)
        if loaded.key is None:
            self.problems.append(loaded.problem)
            return
        if loaded.key.asbytes() in offered:
            return
        offered.add(loaded.key.asbytes())
        self.tried.append(path)
        yield InMemoryPrivateKey(self.username, loaded.key)


# --------------------------------------------------------------------------- host keys


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == DEFAULT_SSH_PORT else f"[{address}]:{port}"


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(name)
        self.name = name
        self.key = key


class _NoBanner(paramiko.SSHException):
    """The server never sent ``SSH-2.0-...``: it timed out, or said something else."""

    def __init__(self, *, timed_out: bool) -> None:
        super().__init__("no SSH banner")
        self.timed_out = timed_out


class _RevokedHostKey(paramiko.SSHException):
    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(name)
        self.name = name
        self.key = key


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, known: KnownHosts) -> None:
        self.known = known

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if self.known.is_revoked((hostname,), key):
            raise _RevokedHostKey(hostname, key)
        raise _UnknownHostKey(hostname, key)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """OpenSSH's ``StrictHostKeyChecking accept-new``: record a first-seen key (hashed).

    Only an absent key reaches a policy: paramiko raises BadHostKeyException for a
    changed one before asking, so a changed key is never recorded.
    """

    def __init__(self, known_hosts: str, known: KnownHosts) -> None:
        self.known_hosts = known_hosts
        self.known = known

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if self.known.is_revoked((hostname,), key):
            raise _RevokedHostKey(hostname, key)
        line = f"{paramiko.HostKeys.hash_host(hostname)} {key.get_name()} {key.get_base64()}\n"
        directory = os.path.dirname(self.known_hosts)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as out:
            # Several hosts may be first seen at once: one locked, appended line each.
            fcntl.flock(out, fcntl.LOCK_EX)
            out.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)


# --------------------------------------------------------------------------- ssh


@dataclass(frozen=True, slots=True)
class _Hop:
    user: str
    address: str
    port: int


def parse_proxy_jump(spec: str, default_user: str) -> tuple[_Hop, ...]:
    """``"user@bastion:port[,user@b2:port]"`` -> hops, first to last (IPv6 as ``[addr]``)."""
    hops = []
    for part in spec.split(","):
        part = part.strip()
        user, at, rest = part.rpartition("@")
        if not at:
            user, rest = default_user, part
        port = DEFAULT_SSH_PORT
        if rest.startswith("["):
            address, _, tail = rest[1:].partition("]")
            if tail.startswith(":"):
                port = int(tail[1:])
        elif rest.count(":") == 1:
            address, _, port_text = rest.partition(":")
            port = int(port_text)
        else:
            address = rest
        if not address or not user or not 0 < port < 65536:
            raise ValueError(f"bad proxy_jump entry: {part!r}")
        hops.append(_Hop(user, address, port))
    return tuple(hops)


def _fmt_addr(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


#: How often blocked reads wake up to check the deadline (seconds).
_POLL = 0.2
#: Longest command line sent (Linux caps one exec argument at 128 KiB; leave room).
_MAX_COMMAND = 120 * 1024


class SSHSession(LineStreams):
    """One paramiko connection to one host (through its bastions, if any).

    Not thread-safe; never share it between threads. Use :func:`open_session`.
    """

    def __init__(
        self,
        host: Host,
        settings: Settings,
        client: paramiko.SSHClient,
        bastions: Sequence[Hashable] = (),
        notes: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.notes = notes
        self._settings = settings
        self._client: paramiko.SSHClient | None = client
        self._bastions = list(bastions)  # keys into BASTIONS, first hop first

    def path(self, p: str) -> str:
        """Remote paths are used as they are."""
        return p

    def _open(
        self, argv: Sequence[str], sudo: bool | None, limit: float
    ) -> tuple[paramiko.Channel, str, bool]:
        use_sudo = self.host.sudo if sudo is None else sudo
        # sshd sends no SIGHUP to a root login's command when the channel closes (no pty) and
        # refuses signal requests from root sessions, so a timed-out grep would keep running
        # on the host: coreutils `timeout` ends it there a little after our own deadline.
        # It always runs as the login user: under sudo = true only a fixed reader inside the
        # command runs as root (collector.transport.privilege), and sudo passes timeout's
        # signal on to it.
        # A command without a deadline (``timeout=math.inf``: ``follow``'s ``tail -F``) gets
        # no guard: it ends itself when its output can no longer be written
        # (``collector.logs.commands.follow_command``).
        guard = ["timeout", "-k", "5", str(int(limit) + 5)] if math.isfinite(limit) else []
        command = shlex.join(sudo_argv(argv, use_sudo))
        if len(command) > _MAX_COMMAND:
            # sshd hands the line to the login shell as one argument of `sh -c`; above
            # 128 KiB exec fails, and some shells report that only as exit status 1.
            raise TransportError(
                self.host.name,
                Stage.READ,
                f"command of {len(command)} bytes is longer than a remote shell accepts",
            )
        transport = self._client.get_transport() if self._client is not None else None
        try:
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("connection is closed")
            channel = transport.open_session(timeout=self._settings.connect_timeout)
            # No pty: stdout and stderr stay apart.
            channel.exec_command((shlex.join(guard) + " " if guard else "") + command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(
                self.host.name, Stage.READ, f"cannot start command: {exc or type(exc).__name__}"
            ) from exc
        return channel, command, use_sudo

    def _timed_out(self, channel: paramiko.Channel, command: str, limit: float) -> TransportError:
        _signal(channel, "TERM")
        channel.close()
        return TransportError(
            self.host.name, Stage.READ, f"command timed out after {limit:g} s", command=command
        )

    def _pump(
        self, channel: paramiko.Channel, stderr: bytearray, deadline: float,
        stdin: bytes | None = None,
    ) -> Iterator[bytes | None]:
        """Yield stdout chunks as they come, keep stderr; None means the deadline passed.

        ``stdin`` is sent by a third thread (then the channel's write side is closed), so
        that a long input never waits on an output window the reader has not emptied yet.

        stderr is drained by a second thread so that neither stream can fill the channel's
        shared window. Both reads block on paramiko's own buffers: select() on a channel
        would make paramiko create a notification pipe that its transport thread may still
        write to while the channel is being closed, and an EBADF there kills the whole
        connection (seen under load).
        """
        finished = threading.Event()

        def drain() -> None:
            while True:
                try:
                    data = channel.recv_stderr(CHUNK)
                except TimeoutError:
                    if finished.is_set():
                        return
                    continue
                if not data:
                    return
                stderr.extend(data)
                keep_tail(stderr)

        def feed(data: bytes) -> None:
            view = memoryview(data)
            while view and not finished.is_set():
                try:
                    sent = channel.send(bytes(view[:CHUNK]))
                except TimeoutError:
                    continue
                except (OSError, EOFError, paramiko.SSHException):
                    return
                if not sent:
                    return  # the channel closed
                view = view[sent:]
            try:
                channel.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                pass

        channel.settimeout(_POLL)
        drainer = threading.Thread(target=drain, name="collector-stderr", daemon=True)
        drainer.start()
        if stdin is not None:
            threading.Thread(target=feed, args=(stdin,), name="collector-stdin",
                             daemon=True).start()
        try:
            while True:
                if time.monotonic() >= deadline:
                    yield None
                    return
                try:
                    chunk = channel.recv(CHUNK)
                except TimeoutError:
                    continue
                if not chunk:
                    break  # stdout ended
                yield chunk
            # (a command without a deadline gives its stderr a few seconds to end)
            left = deadline - time.monotonic() if math.isfinite(deadline) else 5.0
            drainer.join(max(0.0, left))
            if drainer.is_alive():
                yield None
        finally:
            finished.set()

    def _exit_code(self, channel: paramiko.Channel, command: str) -> int:
        """The command's exit status; -1 if sshd sent none (the command died of a signal)."""
        code = channel.recv_exit_status()
        transport = channel.get_transport()
        if code == -1 and (transport is None or not transport.is_active()):
            raise TransportError(
                self.host.name, Stage.READ, "connection lost while a command ran", command=command
            )
        return code

    def run(
        self, argv: Sequence[str], *, timeout: float | None = None, sudo: bool | None = None
    ) -> CommandResult:
        """See :meth:`Session.run`."""
        limit = self._settings.command_timeout if timeout is None else timeout
        channel, command, use_sudo = self._open(argv, sudo, limit)
        reader = self._read(channel, command, limit, None)
        cap = self._settings.run_output_max
        stdout, exit_code, stderr = collect(reader, cap, self.host.name, argv, command)
        check_sudo(self.host.name, use_sudo, exit_code, stderr)
        return CommandResult(command, stdout, stderr, exit_code)

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
        limit = self._settings.command_timeout if timeout is None else timeout
        channel, command, use_sudo = self._open(argv, sudo, limit)
        return self._stream(channel, command, use_sudo, limit, on_bytes, stdin)

    def _stream(
        self,
        channel: paramiko.Channel,
        command: str,
        use_sudo: bool,
        limit: float,
        on_bytes: Callable[[int], None] | None,
        stdin: bytes | None,
    ) -> Iterator[bytes]:
        exit_code, stderr = yield from self._read(channel, command, limit, on_bytes, stdin)
        check_sudo(self.host.name, use_sudo, exit_code, stderr)
        check_stream_exit(self.host.name, command, exit_code, stderr)

    def _read(
        self,
        channel: paramiko.Channel,
        command: str,
        limit: float,
        on_bytes: Callable[[int], None] | None,
        stdin: bytes | None = None,
    ) -> Reader:
        """stdout as it comes (stderr's tail kept), then the exit code and stderr.

        Stopping early (the caller closes the reader) asks sshd to end the command.
        """
        stderr = bytearray()
        try:
            for chunk in self._pump(channel, stderr, time.monotonic() + limit, stdin):
                if chunk is None:
                    raise self._timed_out(channel, command, limit)
                if on_bytes is not None:
                    on_bytes(len(chunk))
                yield chunk
            exit_code = self._exit_code(channel, command)
        finally:
            if not channel.exit_status_ready():
                _signal(channel, "TERM")  # the caller stopped early
            channel.close()
        return exit_code, bytes(stderr)

    def close(self) -> None:
        """Say goodbye to the host, then let go of its bastions, last hop first."""
        if self._client is not None:
            disconnect(self._client)
            self._client = None
        for key in reversed(self._bastions):
            BASTIONS.release(key)
        self._bastions = []


def _signal(channel: paramiko.Channel, name: str) -> None:
    """Ask sshd to signal the command (RFC 4254 6.9; OpenSSH >= 7.9 honours it).

    Closing a channel without a pty does not end the remote process: a ``grep`` on a
    FIFO or a slow ``zgrep`` would run on. paramiko has no public call for this request.
    """
    try:
        message = paramiko.Message()
        message.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
        message.add_int(channel.remote_chanid)
        message.add_string("signal")
        message.add_boolean(False)
        message.add_string(name)
        channel.get_transport()._send_user_message(message)  # type: ignore[attr-defined]
    except (paramiko.SSHException, OSError, EOFError, AttributeError):
        pass  # best effort: the channel is being closed anyway


def _tcp_connect(name: str, address: str, port: int, timeout: float) -> socket.socket:
    where = _fmt_addr(address, port)
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except socket.gaierror as exc:
        raise TransportError(
            name, Stage.CONNECT, f"cannot resolve {address}: {exc.strerror}"
        ) from exc
    except ConnectionRefusedError as exc:
        raise TransportError(name, Stage.CONNECT, f"connection refused ({where})") from exc
    except TimeoutError as exc:
        raise TransportError(
            name, Stage.CONNECT, f"timed out after {timeout:g} s ({where})"
        ) from exc
    except OSError as exc:
        raise TransportError(name, Stage.CONNECT, f"{exc.strerror or exc} ({where})") from exc
    # paramiko sends many small packets: without NODELAY each exec waits ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _connect_hop(
    name: str,
    hop: _Hop,
    sock: socket.socket | paramiko.Channel,
    host: Host,
    settings: Settings,
    known_hosts: str,
    passphrase_provider: PassphraseProvider | None,
) -> paramiko.SSHClient:
    """SSH handshake, host-key check and authentication over an open socket or channel."""
    client = paramiko.SSHClient()
    known = KNOWN_HOSTS.get(known_hosts)
    mine = client.get_host_keys()  # each client its own copy: accept-new adds to it
    for entry in known.keys:
        for key_type, key in known.keys[entry].items():
            mine.add(entry, key_type, key)
    if settings.host_key_policy is HostKeyPolicy.ACCEPT_NEW:
        client.set_missing_host_key_policy(_AcceptNew(known_hosts, known))
    else:
        client.set_missing_host_key_policy(_RejectUnknown(known))
    agent, agent_problem = (None, "") if host.identities_only else _open_agent()
    strategy = _KeysStrategy(hop.user, host.identity_file, agent, passphrase_provider)
    if agent_problem:
        strategy.problems.append(agent_problem)
    limit = settings.connect_timeout
    started = time.monotonic()
    try:
        client.connect(
            hop.address,
            port=hop.port,
            username=hop.user,
            sock=sock,
            timeout=limit,
            banner_timeout=limit,
            auth_timeout=limit,
            channel_timeout=limit,
            auth_strategy=strategy,
        )
    except (paramiko.SSHException, OSError, EOFError) as exc:
        failure = _what_failed(exc, client, known, hop, time.monotonic() - started >= limit * 0.9)
        client.close()
        error = _connect_failure(failure, name, hop, known_hosts, strategy, limit)
        if isinstance(failure, _NoBanner) and not failure.timed_out:
            raise _Dropped(error) from exc
        raise error from exc
    finally:
        if agent is not None:
            agent.close()  # agent keys sign only during authentication
    transport = client.get_transport()
    server_key = transport.get_remote_server_key() if transport is not None else None
    names = (_known_hosts_name(hop.address, hop.port),)
    if server_key is not None and known.is_revoked(names, server_key):
        # Listed as known on another line too: @revoked wins, as in OpenSSH.
        client.close()
        raise _connect_failure(_RevokedHostKey(names[0], server_key), name, hop, known_hosts,
                               strategy, limit)
    return client


def _what_failed(
    exc: BaseException, client: paramiko.SSHClient, known: KnownHosts, hop: _Hop, waited: bool
) -> BaseException:
    """The handshake failure as collector names it (revoked key, no banner), else as is."""
    name = _known_hosts_name(hop.address, hop.port)
    if isinstance(exc, paramiko.BadHostKeyException) and known.is_revoked((name,), exc.key):
        return _RevokedHostKey(name, exc.key)
    no_banner = not _got_banner(client)
    if waited and no_banner and not isinstance(exc, paramiko.AuthenticationException):
        # paramiko's transport thread died of banner_timeout; the error that surfaces is
        # then either "Error reading SSH protocol banner" or, when authentication had
        # already started waiting, "No existing session".
        return _NoBanner(timed_out=True)
    if no_banner and ("banner" in str(exc).lower() or isinstance(exc, ConnectionResetError)):
        return _NoBanner(timed_out=False)
    return exc


def _open_agent() -> tuple[paramiko.Agent | None, str]:
    """The ssh-agent of ``$SSH_AUTH_SOCK`` with its key list, or None and why not.

    An agent that hangs up or answers garbage is skipped (said in an auth failure), not a
    crash: the identity files may still log in.
    """
    sock = os.environ.get("SSH_AUTH_SOCK")
    if not sock:
        return None, ""
    try:
        return paramiko.Agent(), ""
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return None, f"ssh-agent at $SSH_AUTH_SOCK did not answer ({exc or type(exc).__name__})"


def _got_banner(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and bool(getattr(transport, "remote_version", ""))


def _connect_failure(
    exc: BaseException,
    name: str,
    hop: _Hop,
    known_hosts: str,
    strategy: _KeysStrategy,
    limit: float,
) -> TransportError:
    where = f"{hop.user}@{_fmt_addr(hop.address, hop.port)}"
    if isinstance(exc, _UnknownHostKey):
        return TransportError(
            name,
            Stage.HOST_KEY,
            f"unknown host key for {exc.name} (not in {known_hosts}); its "
            f"{exc.key.get_name()} fingerprint is {exc.key.fingerprint}: check it, then add it "
            '(ssh-keyscan, or ssh once) or set host_key_policy = "accept-new"',
        )
    if isinstance(exc, _RevokedHostKey):
        return TransportError(
            name,
            Stage.HOST_KEY,
            f"host key of {exc.name} ({exc.key.get_name()} {exc.key.fingerprint}) is marked "
            f"@revoked in {known_hosts}: refused",
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        return TransportError(
            name,
            Stage.HOST_KEY,
            f"host key for {_known_hosts_name(hop.address, hop.port)} has CHANGED and was "
            f"refused: got {exc.key.get_name()} {exc.key.fingerprint}, {known_hosts} has "
            f"{exc.expected_key.fingerprint}; if the change is expected, remove the old entry "
            "(ssh-keygen -R) and connect again",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        tried = ", ".join(strategy.tried) or "no keys"
        problems = "".join(f"; {p}" for p in strategy.problems)
        return TransportError(
            name, Stage.AUTH, f"Authentication failed for {where} (tried {tried}){problems}"
        )
    if isinstance(exc, TimeoutError):
        return TransportError(name, Stage.CONNECT, f"timed out after {limit:g} s ({where})")
    if isinstance(exc, _NoBanner):
        # paramiko waits banner_timeout for the server's "SSH-2.0-..." line, then says only
        # "Error reading SSH protocol banner". What the server said instead is not repeated:
        # its bytes are its own (escape sequences included).
        said = (
            f"timed out after {limit:g} s waiting for the SSH banner of {where}"
            if exc.timed_out
            else f"{where} did not answer with an SSH banner"
        )
        return TransportError(
            name, Stage.CONNECT, f"{said} (is an SSH server listening there?)"
        )
    return TransportError(name, Stage.CONNECT, f"SSH handshake with {where} failed: {exc}")


def open_ssh_session(
    host: Host, settings: Settings, *, passphrase_provider: PassphraseProvider | None = None
) -> SSHSession:
    """Connect to ``host`` (through its ``proxy_jump`` bastions) and return a session.

    Raises :class:`TransportError` tagged ``connect``, ``host-key`` or ``auth``.
    Bastions use the host's identity file and, without a ``user@``, the host's user; each
    bastion connection is shared by every host behind it (see :mod:`.bastions`).
    """
    user = host.user or getpass.getuser()
    target = _Hop(user, host.address or host.name, host.port or DEFAULT_SSH_PORT)
    try:
        hops = parse_proxy_jump(host.proxy_jump, user) if host.proxy_jump else ()
    except ValueError as exc:
        raise TransportError(host.name, Stage.CONFIG, str(exc)) from None
    known_hosts = settings.known_hosts or str(Path("~/.ssh/known_hosts").expanduser())
    known_hosts = os.path.expanduser(known_hosts)
    keys: list[Hashable] = []
    try:
        via: paramiko.SSHClient | None = None
        for index, hop in enumerate(hops):
            key = (hops[: index + 1], host.identity_file, host.identities_only, known_hosts,
                   settings.host_key_policy)
            parent = via

            def connect(index: int = index, hop: _Hop = hop,
                        parent: paramiko.SSHClient | None = parent) -> paramiko.SSHClient:
                previous = hops[index - 1] if index else None
                return _connect_with_retry(host, hop, parent, previous, settings, known_hosts,
                                           passphrase_provider)

            via = BASTIONS.acquire(key, host.name, connect)
            keys.append(key)
        client = _connect_with_retry(host, target, via, hops[-1] if hops else None, settings,
                                     known_hosts, passphrase_provider)
    except BaseException:
        for held in reversed(keys):
            BASTIONS.release(held)
        raise
    return SSHSession(host, settings, client, keys, KNOWN_HOSTS.get(known_hosts).notes)


#: Pauses before the 2nd, 3rd and 4th try when sshd drops a connection unanswered.
_RETRY_PAUSES = (0.2, 0.5, 1.2)


def _connect_with_retry(
    host: Host,
    hop: _Hop,
    via: paramiko.SSHClient | None,
    previous: _Hop | None,
    settings: Settings,
    known_hosts: str,
    passphrase_provider: PassphraseProvider | None,
) -> paramiko.SSHClient:
    """One hop's connection (directly, or through the bastion ``via``), tried again when
    sshd closes it before its banner: that is sshd's ``MaxStartups`` at work (too many
    unauthenticated connections at once), not a dead host. Every try stays within the
    connect timeout.
    """
    deadline = time.monotonic() + settings.connect_timeout
    for pause in (*_RETRY_PAUSES, None):
        if via is None:
            sock: socket.socket | paramiko.Channel = _tcp_connect(
                host.name, hop.address, hop.port, settings.connect_timeout
            )
        else:
            assert previous is not None
            sock = _forward(host.name, via, previous, hop, settings)
        try:
            return _connect_hop(host.name, hop, sock, host, settings, known_hosts,
                                passphrase_provider)
        except _Dropped as dropped:
            jitter = random.uniform(0.0, pause) if pause is not None else 0.0
            if pause is None or time.monotonic() + pause + jitter >= deadline:
                raise dropped.error from None
            time.sleep(pause + jitter)
    raise AssertionError("unreachable")


class _Dropped(Exception):
    """sshd closed the connection before its banner (MaxStartups): worth another try."""

    def __init__(self, error: TransportError) -> None:
        super().__init__(str(error))
        self.error = error


class QuietClose:
    """A channel used as the next hop's socket, whose ``close`` never raises.

    The next hop's transport closes its socket from its own thread when it ends; when the
    bastion's connection is already gone (closed first, or lost), paramiko's channel close
    raises EOFError there, and Python prints that thread's traceback on stderr. Nothing is
    left to close then.
    """

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    def close(self) -> None:
        with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
            self._channel.close()


def _forward(
    name: str, bastion: paramiko.SSHClient, via: _Hop, hop: _Hop, settings: Settings
) -> paramiko.Channel:
    """A ``direct-tcpip`` channel through ``bastion`` to the next hop (like ``ssh -W``)."""
    transport = bastion.get_transport()
    assert transport is not None
    try:
        channel = transport.open_channel(
            "direct-tcpip",
            dest_addr=(hop.address, hop.port),
            src_addr=("127.0.0.1", 0),
            timeout=settings.connect_timeout,
        )
        return cast(paramiko.Channel, QuietClose(channel))
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise TransportError(
            name,
            Stage.CONNECT,
            f"bastion {via.address} could not reach {_fmt_addr(hop.address, hop.port)}: {exc}",
        ) from exc
