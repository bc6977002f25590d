"""One SSH connection per ProxyJump bastion, shared by every host behind it.

A fleet of 64 hosts behind one bastion must not open 64 connections to it: OpenSSH's default
``MaxStartups 10:30:100`` drops unauthenticated connections beyond 10 at random, so most of
the hosts would be lost. Every host behind the same bastion (same hops, same login, same
identity and host-key settings) instead opens its ``direct-tcpip`` channel through one shared,
reference-counted connection; the connection closes when its last host is done.

A bastion that could not be reached is remembered for a few seconds, so the hosts waiting
for it fail at once with its error instead of each waiting out its own connect timeout.

The pool is process-wide and thread-safe. A forked worker process starts with an empty pool:
the parent's connections belong to the parent.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import paramiko

from collector.errors import TransportError

#: How long a bastion's connect failure stands for the hosts that come after it (seconds).
FAILURE_MEMORY = 5.0


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: paramiko.SSHClient | None = None
    users: int = 0


@dataclass(frozen=True)
class _Failure:
    error: TransportError
    until: float


def _alive(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()


def disconnect(client: paramiko.SSHClient) -> None:
    """Close ``client`` with an SSH_MSG_DISCONNECT first, as OpenSSH's client does.

    paramiko's ``close()`` only shuts the socket: sshd then logs the session as
    ``Connection reset by peer`` (or ``Broken pipe``), which looks like a network fault to
    whoever reads the server's auth log.
    """
    transport = client.get_transport()
    if transport is not None and transport.is_active():
        try:
            message = paramiko.Message()
            message.add_byte(paramiko.common.cMSG_DISCONNECT)
            message.add_int(11)  # SSH_DISCONNECT_BY_APPLICATION (RFC 4253 11.1)
            message.add_string("collector done")
            message.add_string("")
            transport._send_message(message)  # type: ignore[attr-defined]
        except (paramiko.SSHException, OSError, EOFError, AttributeError):
            pass  # best effort: the socket is closed below anyway
    client.close()


class BastionPool:
    """Shared bastion connections, keyed by everything that makes two connections equal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Hashable, _Entry] = {}
        self._failures: dict[Hashable, _Failure] = {}

    def acquire(
        self, key: Hashable, host: str, connect: Callable[[], paramiko.SSHClient]
    ) -> paramiko.SSHClient:
        """The live connection for ``key``, made with ``connect()`` if there is none.

        Every successful call must be matched by :meth:`release`. Raises the
        :class:`TransportError` of the connect (remembered for :data:`FAILURE_MEMORY`
        seconds), renamed for ``host``.
        """
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            entry.users += 1
        try:
            with entry.lock:  # one connect per key; the other hosts wait for it
                if entry.client is not None and _alive(entry.client):
                    return entry.client
                failed = self._failures.get(key)
                if failed is not None and time.monotonic() < failed.until:
                    raise _renamed(failed.error, host)
                if entry.client is not None:  # the bastion hung up since: connect again
                    entry.client.close()
                    entry.client = None
                try:
                    entry.client = connect()
                except TransportError as exc:
                    with self._lock:
                        self._failures[key] = _Failure(exc, time.monotonic() + FAILURE_MEMORY)
                    raise _renamed(exc, host) from exc
                with self._lock:
                    self._failures.pop(key, None)
                return entry.client
        except BaseException:
            self.release(key)
            raise

    def release(self, key: Hashable) -> None:
        """One host is done with ``key``'s connection; the last one closes it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.users -= 1
            if entry.users > 0:
                return
            del self._entries[key]
        if entry.client is not None:
            disconnect(entry.client)

    def open_connections(self) -> int:
        """How many bastion connections are open now (for tests and --debug)."""
        with self._lock:
            return sum(1 for e in self._entries.values() if e.client is not None)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._entries = {}
        self._failures = {}


def _renamed(exc: TransportError, host: str) -> TransportError:
    if exc.host == host:
        return exc
    return TransportError(host, exc.stage, exc.message, command=exc.command)


BASTIONS = BastionPool()
os.register_at_fork(after_in_child=BASTIONS._reset)
