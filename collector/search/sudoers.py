"""``collector hosts --sudoers``: the sudoers lines a host needs for its discovered sources.

Discovery runs as the login user, as it does under ``sudo = true``; what that user cannot read
(or list) is what the lines allow, through the fixed programs of
:mod:`collector.transport.privilege`. A refused ``sudo ls`` is no failure here: the directory
is named, and the files in it are listed once its line is in place (run the command again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from collector.logs.commands import journal_match
from collector.logs.discovery import discover
from collector.models import HostResult, SourceKind
from collector.search.view import RootAccess, SessionView, mark_journal, source_path
from collector.transport.base import Session
from collector.transport.privilege import RootNeeds, safe_path, sudoers_lines


@dataclass(frozen=True, slots=True)
class SudoersAdvice:
    """One host's sudoers lines, and the sources its login user reads without them."""

    host: str
    user: str
    lines: tuple[str, ...]
    own: tuple[str, ...]  # sources the login user reads itself
    notes: tuple[str, ...] = ()


def sudoers_for_host(session: Session) -> SudoersAdvice:
    """Discover as the login user and say what it needs root for (whatever ``sudo`` says)."""
    host = session.host
    root = RootAccess(session, enabled=True)
    view = SessionView(session, root, tolerate_refusal=True)
    view.prefetch()
    found = discover(view, dataclasses.replace(host, sudo=True))
    user = root.login_user()
    sources = mark_journal(found.sources, root)
    name = user.name or host.user or ""
    notes = (*user.notes, *view.notes)
    if user.is_root:
        return SudoersAdvice(host.name, name, ("# the login user is root: it needs no sudo",),
                             tuple(s.path for s in sources), notes)
    files = [session.path(s.path) for s in sources if s.kind is SourceKind.FILE and s.sudo]
    journals = [(journal_match(s), source_path(session, s)) for s in sources
                if s.kind is SourceKind.JOURNAL and s.sudo]
    needs = RootNeeds(tuple(files), tuple(session.path(d) for d in view.root_dirs),
                      tuple(journals))
    known = [session.path(s.path) for s in sources if s.kind is SourceKind.FILE]
    lines = sudoers_lines(name, user.programs, needs, known)
    if view.refused:
        lines += [f"# sudo refused to list {safe_path(d)}: the lines for the logs in it follow "
                  "once its line is installed (run this again then)" for d in view.refused]
    own = tuple(s.path for s in sources if not s.sudo)
    return SudoersAdvice(host.name, name, tuple(lines), own, notes)


def sudoers_text(results: Sequence[HostResult[SudoersAdvice]]) -> list[str]:
    """Each answering host's lines under a comment naming it (a failed host is on stderr)."""
    out: list[str] = []
    for r in results:
        if r.value is None:
            continue
        advice = r.value
        if out:
            out.append("")
        out.append(f"# {advice.host}: sudoers lines for user {safe_path(advice.user)} "
                   "(visudo -f /etc/sudoers.d/collector)")
        for path in advice.own:
            out.append(f"# {safe_path(path)}: the login user reads it without sudo")
        if not advice.lines:
            out.append("# nothing needs root")
        out.extend(advice.lines)
    return out


def sudoers_payload(results: Sequence[HostResult[SudoersAdvice]]) -> list[dict[str, Any]]:
    """The JSON form: per host, its user, lines (comments included), own sources and notes."""
    payload: list[dict[str, Any]] = []
    for r in results:
        if r.value is None:
            assert r.error is not None
            payload.append({"name": r.host, "ok": False,
                            "error": {"stage": r.error.stage.value, "message": r.error.message}})
            continue
        a = r.value
        payload.append({"name": a.host, "ok": True, "user": a.user, "sudoers": list(a.lines),
                        "own": list(a.own), "notes": list(a.notes)})
    return payload
