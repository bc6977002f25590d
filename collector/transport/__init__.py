"""Run read-only commands on a host: over SSH (paramiko) or in a local directory."""

from __future__ import annotations

from collector.errors import TransportError
from collector.models import Host, Settings, Stage, TransportKind
from collector.transport.base import PassphraseProvider, Session


def open_session(
    host: Host, settings: Settings, *, passphrase_provider: PassphraseProvider | None = None
) -> Session:
    """Connect to ``host`` (through its ``proxy_jump`` bastions) and return a session.

    Raises :class:`TransportError` tagged ``connect``, ``host-key`` or ``auth``.
    Bastions use the host's identity file and, without a ``user@``, the host's user.
    """
    if host.via is not None:
        # read on its log host: connecting to it (or, as a local host without a root, to
        # this machine) would read another host's lines under its name
        raise TransportError(host.name, Stage.CONNECT, f"its lines are read on {host.via}")
    if host.transport is TransportKind.LOCAL:
        from collector.transport.local import LocalSession

        return LocalSession(host, settings)
    from collector.transport.ssh import open_ssh_session

    return open_ssh_session(host, settings, passphrase_provider=passphrase_provider)
