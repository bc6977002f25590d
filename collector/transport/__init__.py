"""Run read-only commands on a host: over SSH (paramiko) or in a local directory."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

from collector.errors import TransportError
from collector.models import Host, Settings, Stage, TransportKind
from collector.transport.base import PassphraseProvider, Session


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its names is used; then the real
    module is imported, takes its place, and answers."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        return getattr(real, attr)


def defer_import(name: str) -> None:
    """Make ``import name`` cheap until a name of the module is used.

    paramiko's ssh_config support imports invoke when paramiko is imported (~50 ms: invoke's
    task machinery and an ``importlib.metadata`` scan), only to call ``invoke.run`` for a
    ``Match exec`` line; deferred, invoke is imported when a config has one.
    """
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return  # loaded already, or not installed (paramiko says so itself when needed)
    sys.modules[name] = _Deferred(name)


# Before any module of this package imports paramiko (this file runs first).
defer_import("invoke")


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
