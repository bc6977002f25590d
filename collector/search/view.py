"""Discovery's read-only view of a host, through its session's commands."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from typing import Any

from collector.logs.discovery import DiscoveryResult, FileInfo, discover
from collector.models import CommandResult, Host, ReadProblem, TransportKind, Unread
from collector.transport.base import Session

#: A local host root may carry this file (written by ``collector fetch``): the original
#: mtimes and sizes of the files copied there, since a copy (or git) loses them.
MANIFEST = "collector-manifest.json"


class SessionView:
    """Discovery's read-only view of a host, through its session's commands."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._manifest = _load_manifest(session)

    def read_text(self, path: str) -> str | None:
        result = self.session.run(["cat", "--", self.session.path(path)])
        if result.exit_code != 0:
            return None
        return result.stdout.decode("utf-8", "replace")

    def list_dir(self, path: str) -> list[FileInfo] | None:
        real = self.session.path(path)
        result = self.session.run(
            [
                "find",
                real,
                "-maxdepth",
                "1",
                "-mindepth",
                "1",
                "(",
                "-readable",
                "-printf",
                "r\\t%y\\t%s\\t%T@\\t%f\\n",
                "-o",
                "-printf",
                "u\\t%y\\t%s\\t%T@\\t%f\\n",
                ")",
            ]
        )
        if result.exit_code != 0 and not result.stdout:
            return None
        infos: list[FileInfo] = []
        for line in result.stdout.decode("utf-8", "surrogateescape").splitlines():
            parts = line.split("\t", 4)
            if len(parts) != 5:
                continue
            readable, ftype, size, mtime, name = parts
            if ftype not in ("f", "p"):  # regular files (and FIFOs, which a reader may hit)
                continue
            full = posixpath.join(path, name)
            meta = self._manifest.get(full, {})
            infos.append(
                FileInfo(
                    path=full,
                    size=int(meta.get("size", size)),
                    mtime=float(meta.get("mtime", mtime)),
                    readable=readable == "r" or bool(self.session.host.sudo),
                )
            )
        return infos

    def run(self, argv: Sequence[str]) -> CommandResult | None:
        host = self.session.host
        if host.transport is TransportKind.LOCAL and (host.root or "/") != "/":
            return None  # a directory is not a running Postfix: read its files instead
        return self.session.run(list(argv))


def _read_manifest(session: Session) -> dict[str, Any]:
    """A fetched copy's ``collector-manifest.json`` (local hosts only), or an empty one."""
    if session.host.transport is not TransportKind.LOCAL:
        return {}
    result = session.run(["cat", "--", session.path("/" + MANIFEST)])
    if result.exit_code != 0:
        return {}
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _load_manifest(session: Session) -> dict[str, dict[str, float]]:
    files = _read_manifest(session).get("files", {})
    if not isinstance(files, dict):
        return {}
    return {str(k): dict(v) for k, v in files.items() if isinstance(v, dict)}


def recorded_unread(session: Session) -> tuple[Unread, ...]:
    """The sources a fetched copy says it could not read completely when it was fetched.

    An offline search of that copy is partial for the same reason, and says so.
    """
    out: list[Unread] = []
    for item in _read_manifest(session).get("unread", []) or []:
        try:
            out.append(Unread(str(item["path"]), ReadProblem(item["problem"])))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(out)


def discover_host(session: Session, host: Host) -> DiscoveryResult:
    """Find the host's log sources from its own Postfix configuration."""
    return discover(SessionView(session), host)
