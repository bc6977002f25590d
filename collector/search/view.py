"""Discovery's read-only view of a host, through its session's commands."""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from collector.errors import TransportError
from collector.logs.coverage import from_dict as coverage_from_dict
from collector.logs.coverage import selectors_from
from collector.logs.discovery import (
    JOURNAL_DIRS,
    DiscoveryResult,
    FileInfo,
    discover,
    first_questions,
)
from collector.models import (
    CommandResult,
    Host,
    LogSource,
    ReadProblem,
    SourceKind,
    Stage,
    TransportKind,
    Unread,
)
from collector.transport.base import Session, run_batch
from collector.transport.privilege import (
    Listed,
    LoginUser,
    RootPrograms,
    login_user_from,
    ls_argv,
    parse_ls,
    probe_argv,
)

#: A local host root may carry this file (written by ``collector fetch``): the original
#: mtimes and sizes of the files copied there, since a copy (or git) loses them.
MANIFEST = "collector-manifest.json"

#: Symlinks followed in one directory (each costs a command); more are skipped with a note.
MAX_LINKS = 32

# One record per entry, each field ended by NUL: a file name may hold any byte but NUL.
_ENTRY = "%y\\0%s\\0%T@\\0%l\\0%f\\0"
_FIND_ENTRIES = (
    "-maxdepth", "1", "-mindepth", "1",
    "(", "-readable", "-printf", "r\\0" + _ENTRY, "-o", "-printf", "u\\0" + _ENTRY, ")",
)  # fmt: skip
_ENTRY_FIELDS = 6
# A symlink's target, followed (find -L): its type (N: nothing, L: a loop), size, mtime.
_TARGET = "%y\\0%s\\0%T@\\0"
_FIND_TARGET = (
    "-maxdepth", "0",
    "(", "-readable", "-printf", "r\\0" + _TARGET, "-o", "-printf", "u\\0" + _TARGET, ")",
)  # fmt: skip


def _records(data: bytes, fields: int) -> list[list[bytes]]:
    """NUL-ended fields grouped into records of ``fields``; a cut last record is dropped."""
    values = data.split(b"\0")[:-1]
    return [values[i : i + fields] for i in range(0, len(values) - fields + 1, fields)]


class RootAccess:
    """How a host's login user reads what only root can: ``sudo -n`` with fixed programs.

    ``enabled``: the inventory says ``sudo = true`` (a local host run by root needs none).
    Every other command runs as the login user. Its uid and the programs' paths are asked
    once (:func:`~collector.transport.privilege.probe_argv`), when first needed.
    """

    def __init__(self, session: Session, enabled: bool | None = None) -> None:
        host = session.host
        if enabled is None:
            local_root = host.transport is TransportKind.LOCAL and os.geteuid() == 0
            enabled = host.sudo and not local_root
        self.session = session
        self.enabled = enabled
        self._user: LoginUser | None = None

    def login_user(self) -> LoginUser:
        if self._user is None:
            self.take(self.session.run(probe_argv(), sudo=False))
        assert self._user is not None
        return self._user

    @property
    def asked(self) -> bool:
        """Whether the login user is known already."""
        return self._user is not None

    def take(self, probe: CommandResult) -> None:
        """The result of :func:`~collector.transport.privilege.probe_argv`, run by someone
        else (in a batch): the login user is not asked again."""
        if self._user is None:
            self._user = login_user_from(probe.stdout)

    def programs(self) -> RootPrograms | None:
        """The programs to read as root with; None when sudo is off or not needed (the
        login user is root)."""
        if not self.enabled:
            return None
        user = self.login_user()
        return None if user.is_root else user.programs


def list_as_root(session: Session, programs: RootPrograms, directory: str) -> list[Listed]:
    """A directory the login user cannot list, listed by ``sudo -n ls`` (fixed flags).

    Raises :class:`TransportError` (stage ``sudo``) when sudo refuses."""
    result = session.run(ls_argv(programs, directory), sudo=True)
    return parse_ls(result.stdout)


class SessionView:
    """Discovery's read-only view of a host, through its session's commands.

    Everything runs as the login user; with ``root`` enabled, a directory it cannot list is
    listed by ``sudo -n ls``, and the files it cannot read are marked ``sudo`` (read as root).
    ``tolerate_refusal``: a refused ``sudo ls`` leaves that directory unlisted (and noted in
    :attr:`root_dirs`) instead of failing (``hosts --sudoers`` asks what is missing).
    """

    def __init__(
        self, session: Session, root: RootAccess | None = None, *, tolerate_refusal: bool = False
    ) -> None:
        self.session = session
        self.root = root if root is not None else RootAccess(session)
        self.tolerate_refusal = tolerate_refusal
        manifest = _read_manifest(session)
        self._manifest = _manifest_files(manifest)
        #: What a fetched copy says it could not read when it was fetched.
        self.recorded = _recorded_unread(manifest)
        #: When a fetched copy was made: its live logs end there.
        self.fetched_at = _fetched_at(manifest)
        #: What the fetch that made a copy saw of its window (the copy holds no more).
        self.coverage = coverage_from_dict(manifest.get("coverage"))
        #: The selectors a filtered case was fetched with (None: a whole copy, or no case);
        #: a case of slices that does not say them has an unknown one.
        self.selected = selectors_from(manifest.get("selected")) if "selected" in manifest else (
            {"?": frozenset()} if any(f.get("slice") for f in self._manifest.values()) else None)
        #: What the listings skipped, and why (discovery adds them to its notes).
        self.notes: list[str] = []
        #: The directories only root can list (listed with sudo, or refused).
        self.root_dirs: list[str] = []
        self.refused: list[str] = []  # those sudo refused to list (``tolerate_refusal``)
        self._answers: dict[tuple[str, ...], CommandResult] = {}

    def prefetch(self) -> None:
        """Ask a live SSH host, in one round trip, what discovery will most likely ask first
        (``logs.discovery.first_questions``; under sudo, the login user's probe too). Each
        answer is the command's own result, taken by the first call that asks exactly that
        command; one that is not asked is dropped."""
        host = self.session.host
        if host.transport is not TransportKind.SSH or host.is_directory:
            return
        runs, directories = first_questions(host)
        commands = [*runs, *(self._find_argv(d) for d in directories)]
        probe = self.root.enabled and not self.root.asked
        if probe:
            commands.append(probe_argv())
        results = run_batch(self.session, commands)
        if probe:
            self.root.take(results.pop())
            commands.pop()
        for words, result in zip(commands, results):
            self._answers.setdefault(tuple(words), result)

    def _run(self, argv: Sequence[str]) -> CommandResult:
        """``argv`` run as the login user, or its answer from :meth:`prefetch`."""
        answer = self._answers.pop(tuple(argv), None)
        return answer if answer is not None else self.session.run(list(argv), sudo=False)

    def _find_argv(self, path: str) -> list[str]:
        return ["find", self.session.path(path), *_FIND_ENTRIES]

    def read_text(self, path: str) -> str | None:
        result = self.session.run(["cat", "--", self.session.path(path)], sudo=False)
        if result.exit_code != 0:
            return None
        return result.stdout.decode("utf-8", "replace")

    def list_dir(self, path: str) -> list[FileInfo] | None:
        """The directory's files, FIFOs and subdirectories; a symlink stands for its target.

        The listing is NUL-separated (a file name may hold a newline). A symlink to a regular
        file is listed under its own name with its target's size and mtime, and read through
        its name; on a directory host, a link whose target the system finds outside the root
        is read at its target inside the root instead (``FileInfo.target``), and one that
        leads nowhere is left out with a note.
        """
        real = self.session.path(path)
        result = self._run(self._find_argv(path))
        if result.exit_code != 0 and not result.stdout:
            return self._list_as_root(path, real)
        infos: list[FileInfo] = []
        links: list[tuple[str, str]] = []  # (host path, link text)
        for entry in _records(result.stdout, _ENTRY_FIELDS):
            readable, ftype, size, mtime, link, name = (
                v.decode("utf-8", "surrogateescape") for v in entry
            )
            full = posixpath.join(path, name)
            if ftype == "l":
                if len(links) < MAX_LINKS:
                    links.append((full, link))
                elif len(links) == MAX_LINKS:
                    self.notes.append(f"{path}: more than {MAX_LINKS} symlinks, the rest skipped")
                    links.append((full, link))
                continue
            info = self._info(full, ftype, size, mtime, readable == "r")
            if info is not None:
                infos.append(info)
        for full, link in links[:MAX_LINKS]:
            info = self._follow(full, link)
            if info is not None:
                infos.append(info)
        return infos

    def _list_as_root(self, path: str, real: str) -> list[FileInfo] | None:
        """A directory that exists but the login user cannot list, listed as root."""
        if not self.root.enabled:
            return None
        if self.session.run(["test", "-d", real], sudo=False).exit_code != 0:
            return None  # missing (or not even reachable): nothing to list
        programs = self.root.programs()
        if programs is None:
            return None
        self.root_dirs.append(path)
        try:
            listed = list_as_root(self.session, programs, real)
        except TransportError as exc:
            if not self.tolerate_refusal or exc.stage is not Stage.SUDO:
                raise
            self.notes.append(f"{path}: only root can list it, and sudo refused")
            self.refused.append(path)
            return None
        infos = [
            self._info(posixpath.join(path, e.name), e.ftype, str(e.size), repr(e.mtime), False)
            for e in listed
        ]
        return [i for i in infos if i is not None]

    def _info(
        self, full: str, ftype: str, size: str, mtime: str, readable: bool, target: str = ""
    ) -> FileInfo | None:
        # regular files (and FIFOs, which a reader may hit), and directories
        if ftype not in ("f", "p", "d"):
            return None
        meta = self._manifest.get(full, {})
        try:
            return FileInfo(
                path=full,
                size=int(meta.get("size", size)),
                mtime=float(meta.get("mtime", mtime)),
                readable=readable or self.root.enabled,
                is_dir=ftype == "d",
                target=target or None,
                sudo=not readable and self.root.enabled and ftype != "d",
            )
        except ValueError:
            return None

    def _follow(self, full: str, link: str) -> FileInfo | None:
        """A symlink: its target's type, size and mtime, the way it can be read."""
        try:
            real = self.session.path(full)  # the system's resolution, checked on a dir host
        except TransportError:
            real = None
        target = ""
        if real is None:
            # A directory host's absolute link (or a relative one climbing out of the root)
            # names a place on the host: inside the root.
            target = posixpath.normpath(posixpath.join(posixpath.dirname(full), link))
            try:
                real = self.session.path(target)
            except TransportError:
                self.notes.append(f"{full} -> {link}: leads out of the host root, not read")
                return None
        stat = self._stat(real)
        if stat is None or stat[0] not in ("f", "p"):
            what = "nothing" if stat is None or stat[0] in ("N", "L", "?") else "no file"
            self.notes.append(f"{full} -> {link}: a symlink to {what}, not read")
            return None
        ftype, size, mtime, readable = stat
        if target:
            self.notes.append(f"{full} -> {link}: read as {target} inside the host root")
        return self._info(full, ftype, size, mtime, readable, target)

    def _stat(self, real: str) -> tuple[str, str, str, bool] | None:
        result = self.session.run(["find", "-L", real, *_FIND_TARGET], sudo=False)
        for readable, ftype, size, mtime in _records(result.stdout, 4):
            return (
                ftype.decode(), size.decode(), mtime.decode(), readable == b"r"
            )
        return None

    def run(self, argv: Sequence[str]) -> CommandResult | None:
        host = self.session.host
        if host.is_directory:
            return None  # a directory is not a running Postfix: read its files instead
        return self._run(argv)


def _read_manifest(session: Session) -> dict[str, Any]:
    """A fetched copy's ``collector-manifest.json`` (local hosts only), or an empty one."""
    if session.host.transport is not TransportKind.LOCAL:
        return {}
    result = session.run(["cat", "--", session.path("/" + MANIFEST)], sudo=False)
    if result.exit_code != 0:
        return {}
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _manifest_files(manifest: dict[str, Any]) -> dict[str, dict[str, float]]:
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        return {}
    return {str(k): dict(v) for k, v in files.items() if isinstance(v, dict)}


def _recorded_unread(manifest: dict[str, Any]) -> tuple[Unread, ...]:
    """The sources a fetched copy says it could not read completely when it was fetched.

    An offline search of that copy is partial for the same reason, and says so.
    """
    out: list[Unread] = []
    for item in manifest.get("unread", []) or []:
        try:
            out.append(Unread(str(item["path"]), ReadProblem(item["problem"])))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(out)


def _fetched_at(manifest: dict[str, Any]) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(manifest["fetched_at"]))
    except (KeyError, ValueError):
        return None
    return when if when.tzinfo is not None else None


def discover_host(
    session: Session, host: Host, root: RootAccess | None = None
) -> DiscoveryResult:
    """Find the host's log sources from its own Postfix configuration (as the login user;
    under ``sudo = true`` the files it cannot read, and the journal, are marked ``sudo``)."""
    view = SessionView(session, root)
    view.prefetch()
    found = discover(view, host)
    return dataclasses.replace(found, sources=mark_journal(found.sources, view.root),
                               recorded=view.recorded, fetched_at=view.fetched_at,
                               coverage=view.coverage, selected=view.selected)


def mark_journal(sources: Sequence[LogSource], root: RootAccess) -> tuple[LogSource, ...]:
    """Under sudo the journal is read as root: whether the login user may read it (the
    systemd-journal or adm group) no listing says, and journalctl does not fail without."""
    if not any(s.kind is SourceKind.JOURNAL for s in sources) or root.programs() is None:
        return tuple(sources)
    return tuple(
        dataclasses.replace(s, sudo=True) if s.kind is SourceKind.JOURNAL else s for s in sources
    )


def source_path(session: Session, source: LogSource) -> str:
    """What a command on this host is given for a source: a file's path on the host; for a
    journal, the journal directory to read (a ``logs`` directory of journal files, say
    systemd-journal-remote's), empty for the system's own journal.

    A directory host reads only inside its root: its own var/log/journal, never the journal
    of the machine collector runs on.
    """
    if source.kind is not SourceKind.JOURNAL or source.path.startswith("/"):
        return session.path(source.path)  # a file, or a journal directory (journalctl -D)
    if not session.host.is_directory:
        return ""
    for directory in JOURNAL_DIRS:
        local = session.path(directory)
        if os.path.isdir(local):
            return local
    raise TransportError(
        session.host.name, Stage.READ, "no journal directory in this directory host"
    )
