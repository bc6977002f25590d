"""``collector fetch``: copy matching slices (or whole logs) of each host into a local directory.

The destination is laid out like the hosts themselves (``DEST/<host>/var/log/...``) with a
manifest per host and one for the fleet, so ``collector search --offline DEST`` (or a local
inventory) re-examines a case without touching the servers. Nothing is written on a host.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from collector.errors import CollectorError
from collector.inventory.load import valid_host_name
from collector.inventory.offline import FLEET_MANIFEST
from collector.logs.commands import Needles, copy_file_command, pass1_needles
from collector.logs.coverage import selectors_dict
from collector.logs.coverage import to_dict as coverage_to_dict
from collector.models import (
    Compression,
    HostResult,
    Inventory,
    LogSource,
    Query,
    ReadProblem,
    SourceKind,
    Stage,
    Unread,
)
from collector.search.host import ByteCounter, HostSearcher, SearchContext
from collector.search.view import MANIFEST
from collector.transport.base import Session

#: Where a host's journal lines go in a fetched copy (text, ``short-iso-precise``).
JOURNAL_COPY = "/var/log/collector-journal.log"


@dataclass(frozen=True, slots=True)
class FetchedHost:
    host: str
    files: tuple[str, ...]  # host paths written under DEST/<host>
    lines: int
    bytes: int
    notes: tuple[str, ...]
    unread: tuple[Unread, ...] = ()  # sources not copied completely: the copy is partial


class UnsafeDestination(CollectorError):
    """A path to write that would leave the fetch destination: refused, never written."""

    stage = Stage.READ


def _local_path(dest: Path, host: str, host_path: str) -> Path:
    """``DEST/<host>/<host_path>``, proven to stay inside ``DEST/<host>``.

    The host name is checked again (an inventory validates it, but this is where it becomes
    a path), and the resolved target (symlinks already in DEST followed) must lie inside.
    """
    if not valid_host_name(host):
        raise UnsafeDestination(f"refusing to write a copy for the host name {host!r}")
    base = (dest / host).resolve()
    if base.parent != dest.resolve():
        raise UnsafeDestination(f"refusing to write outside {dest}: {host}")
    rel = posixpath.normpath("/" + host_path).lstrip("/")
    target = (base / rel).resolve()
    if os.path.commonpath([base, target]) != str(base) or target == base:
        raise UnsafeDestination(f"refusing to write outside {dest / host}: {host_path!r}")
    return target


def _plain_name(path: str, compression: Compression) -> str:
    if compression is Compression.NONE:
        return path
    return path[: -(len(compression.value) + 1)]


def fetch_host(
    session: Session,
    query: Query,
    dest: Path,
    zone: tzinfo,
    now: datetime,
    *,
    whole: bool = False,
    on_bytes: ByteCounter | None = None,
) -> FetchedHost:
    """Write this host's matching lines (or, with ``whole``, its whole log files) under DEST.

    Sources are chosen, and read, exactly as ``search`` chooses and reads them; a source that
    cannot be read to its end is copied as far as it goes and listed in ``unread``.
    """
    host = session.host
    searcher = HostSearcher(session, SearchContext(zone, now, on_bytes))
    manifest: dict[str, Any] = {"host": host.name, "fetched_at": now.isoformat(), "files": {}}
    written: list[str] = []
    total_lines = total_bytes = 0
    chosen = searcher.plan(query)
    taken = {src.path for src in chosen} | {"/" + MANIFEST}
    for src in chosen:
        target_path = _unique(_target_path(src, whole), src, taken)
        taken.add(target_path)
        target = _local_path(dest, host.name, target_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if whole and src.kind is SourceKind.FILE:
            n, size = _copy_raw(searcher, src, target)
            if not _intact(target, src.compression):
                searcher.lose(Unread(src.path, ReadProblem.DAMAGED))
        else:
            n, size = _fetch_slice(searcher, src, query, None if whole else pass1_needles(query),
                                   target)
        if src.mtime is not None:
            os.utime(target, (src.mtime, src.mtime))
        manifest["files"][target_path] = {
            "mtime": src.mtime if src.mtime is not None else now.timestamp(),
            "size": size,
            "source": src.path,
            "kind": src.kind,
            "slice": not whole or src.kind is SourceKind.JOURNAL,
        }
        written.append(target_path)
        total_lines += n
        total_bytes += size
    searcher.check_unchanged()  # a file logrotate moved meanwhile: the copy is partial
    unread = searcher.unread()
    coverage = searcher.coverage()
    if coverage is not None:  # what an offline search of the case can say it saw
        manifest["coverage"] = coverage_to_dict(coverage)
    # which lines the case holds: every line (--all), or only those of these selectors
    manifest["selected"] = None if whole else selectors_dict(query)
    if unread:
        manifest["unread"] = [{"path": u.path, "problem": u.problem.value} for u in unread]
    host_manifest = _local_path(dest, host.name, "/" + MANIFEST)
    host_manifest.parent.mkdir(parents=True, exist_ok=True)
    host_manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return FetchedHost(
        host.name, tuple(written), total_lines, total_bytes, searcher.notes(), unread
    )


def _unique(target_path: str, src: LogSource, taken: set[str]) -> str:
    """A name no other source of the host has: the text slice of ``mail.log.1.gz`` cannot be
    ``mail.log.1`` when the host also has a ``mail.log.1`` (``delaycompress``, a second
    rotation scheme)."""
    if target_path == src.path or target_path not in taken:
        return target_path
    base = f"{target_path}.{src.compression.value or src.kind}-text"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}{n}"
    return candidate


def _target_path(src: LogSource, whole: bool) -> str:
    """Where a source's copy goes, as a host path (a slice of a rotation is plain text)."""
    if src.kind is SourceKind.JOURNAL:
        return JOURNAL_COPY
    if whole:
        return src.path
    return _plain_name(src.path, src.compression)


def _copy_raw(searcher: HostSearcher, src: LogSource, target: Path) -> tuple[int, int]:
    """A byte-exact copy (rotated files stay compressed: no line splitting here)."""
    lines = size = 0
    command = copy_file_command(searcher.command_path(src), shown=src.path,
                                root=searcher.root_programs(src))
    with open(target, "wb") as out:
        for chunk in searcher.chunks(src, command):
            out.write(chunk)
            lines += chunk.count(b"\n")
            size += len(chunk)
    return lines, size


def _intact(copy: Path, compression: Compression) -> bool:
    """A compressed copy decompresses to its end (what ``search`` would find reading it).

    zstd has no decompressor in the standard library: its copies are taken as they are.
    """
    opener: dict[Compression, Callable[[Path], io.BufferedIOBase]] = {
        Compression.GZIP: lambda p: gzip.open(p, "rb"),
        Compression.BZIP2: lambda p: bz2.open(p, "rb"),
        Compression.XZ: lambda p: lzma.open(p, "rb"),
    }
    if compression not in opener:
        return True
    try:
        with opener[compression](copy) as stream:
            while stream.read(1 << 20):
                pass
    except (OSError, EOFError, lzma.LZMAError):
        return False
    return True


def _fetch_slice(
    searcher: HostSearcher,
    src: LogSource,
    query: Query,
    needles: Needles | None,
    target: Path,
) -> tuple[int, int]:
    """Pass 1 finds the queue IDs; pass 2 writes every line of them (plus NOQUEUE rejects).

    Without needles (a time window only, or a journal under ``--all``) pass 1 is every line.
    """
    parser = searcher.parser(src)
    ids: set[str] = set()
    kept: list[bytes] = []
    for raw in searcher.lines(src, searcher.match_command(src, needles, query)):
        if needles is None:
            kept.append(raw)
            continue
        rec = parser.feed(raw)
        if rec is None:
            continue
        if rec.queue_id is not None:
            ids.add(rec.queue_id)
        else:
            kept.append(raw)
    lines = size = 0
    with open(target, "wb") as out:
        for command in searcher.ids_commands(src, sorted(ids), query) if ids else ():
            for raw in searcher.lines(src, command):
                out.write(raw + b"\n")
                lines += 1
                size += len(raw) + 1
        for raw in kept:
            out.write(raw + b"\n")
            lines += 1
            size += len(raw) + 1
    return lines, size


def write_fleet_manifest(
    dest: Path, inventory: Inventory, results: list[HostResult[FetchedHost]], now: datetime
) -> None:
    hosts = []
    by_name = {h.name: h for h in inventory.hosts}
    for r in results:
        h = by_name.get(r.host)
        hosts.append(
            {
                "name": r.host,
                "timezone": h.timezone if h else None,
                "aliases": list(h.aliases) if h else [],
                "address": h.address if h else None,
                "ok": r.ok,
                "error": str(r.error) if r.error else None,
                "stage": r.error.stage.value if r.error else None,
                "message": r.error.message if r.error else None,
                "files": list(r.value.files) if r.value else [],
                "unread": [{"path": u.path, "problem": u.problem.value}
                           for u in (r.value.unread if r.value else ())],
            }
            | ({"collects": list(h.collects)} if h is not None and h.collects else {})
        )
        # the hosts it carries: no directory of their own, read offline on its copy
        hosts += [
            {"name": c.name, "via": c.via, "aliases": list(c.aliases), "address": c.address}
            for c in inventory.hosts if c.via == r.host
        ]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / FLEET_MANIFEST).write_text(
        json.dumps({"fetched_at": now.isoformat(), "hosts": hosts}, indent=2) + "\n",
        encoding="utf-8",
    )
