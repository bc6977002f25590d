"""``collector fetch``: copy matching slices (or whole logs) of each host into a local directory.

The destination is laid out like the hosts themselves (``DEST/<host>/var/log/...``) with a
manifest per host and one for the fleet, so ``collector search --offline DEST`` (or a local
inventory) re-examines a case without touching the servers. Nothing is written on a host.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from collector.inventory.offline import FLEET_MANIFEST
from collector.logs.commands import (
    filter_file_command,
    ids_file_commands,
    journal_command,
    journal_ids_command,
    journal_match,
    pass1_needles,
    source_in_window,
)
from collector.logs.parse import LineParser, TimeContext
from collector.models import Compression, HostResult, Inventory, LogSource, Query
from collector.search.host import MANIFEST, ByteCounter, discover_host
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


def _local_path(dest: Path, host: str, host_path: str) -> Path:
    rel = posixpath.normpath("/" + host_path).lstrip("/")
    target = (dest / host / rel).resolve()
    if not str(target).startswith(str((dest / host).resolve()) + os.sep):
        raise ValueError(f"refusing to write outside {dest / host}: {host_path}")
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
    """Write this host's matching lines (or, with ``whole``, its whole log files) under DEST."""
    host = session.host
    found = discover_host(session, host)
    notes = list(found.notes)
    manifest: dict[str, Any] = {"host": host.name, "fetched_at": now.isoformat(), "files": {}}
    written: list[str] = []
    total_lines = total_bytes = 0
    needles = None if whole else pass1_needles(query)
    sources = [s for s in found.sources if s.readable or host.sudo]
    for i, src in enumerate(sources):
        older = sources[i - 1] if i > 0 else None
        if not source_in_window(src, older, query.since, query.until):
            notes.append(f"skipped {src.path}: outside the time window")
            continue
        ctx = TimeContext(
            tz=zone,
            reference=datetime.fromtimestamp(src.mtime, tz=zone) if src.mtime else now,
        )
        if src.kind == "journal":
            target_path = JOURNAL_COPY
            sudo = False
        elif whole:
            target_path = src.path
            sudo = host.sudo
        else:
            target_path = _plain_name(src.path, src.compression)
            sudo = host.sudo
        target = _local_path(dest, host.name, target_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if whole and src.kind == "file":
            n, size = _copy_raw(session, ["cat", "--", session.path(src.path)], target, sudo,
                                on_bytes)
        else:
            n, size = _fetch_slice(session, src, query, needles, ctx, target, sudo, on_bytes)
        if src.mtime is not None:
            os.utime(target, (src.mtime, src.mtime))
        manifest["files"][target_path] = {
            "mtime": src.mtime if src.mtime is not None else now.timestamp(),
            "size": size,
            "source": src.path,
            "kind": src.kind,
            "slice": not whole or src.kind == "journal",
        }
        written.append(target_path)
        total_lines += n
        total_bytes += size
    host_manifest = _local_path(dest, host.name, "/" + MANIFEST)
    host_manifest.parent.mkdir(parents=True, exist_ok=True)
    host_manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return FetchedHost(host.name, tuple(written), total_lines, total_bytes, tuple(notes))


def _copy_raw(
    session: Session, argv: list[str], target: Path, sudo: bool, on_bytes: ByteCounter | None
) -> tuple[int, int]:
    """A byte-exact copy (rotated files are compressed: no line splitting here)."""
    lines = size = 0
    with open(target, "wb") as out:
        for chunk in session.stream_chunks(argv, sudo=sudo, on_bytes=on_bytes):
            out.write(chunk)
            lines += chunk.count(b"\n")
            size += len(chunk)
    return lines, size


def _copy(
    session: Session,
    argvs: list[list[str]],
    target: Path,
    sudo: bool,
    on_bytes: ByteCounter | None,
    keep: Callable[[bytes], bool] | None,
) -> tuple[int, int]:
    lines = size = 0
    with open(target, "wb") as out:
        for argv in argvs:
            for line in session.stream(argv, sudo=sudo, on_bytes=on_bytes):
                if keep is not None and not keep(line):
                    continue
                out.write(line + b"\n")
                lines += 1
                size += len(line) + 1
    return lines, size


def _fetch_slice(
    session: Session,
    src: LogSource,
    query: Query,
    needles: Any,
    ctx: TimeContext,
    target: Path,
    sudo: bool,
    on_bytes: ByteCounter | None,
) -> tuple[int, int]:
    """Pass 1 finds the queue IDs; pass 2 writes every line of them (plus NOQUEUE rejects)."""
    journal = src.kind == "journal"
    first = (
        journal_command(needles, since=query.since, until=query.until, match=journal_match(src))
        if journal
        else filter_file_command(session.path(src.path), needles)
    )
    parser = LineParser(ctx)
    ids: set[str] = set()
    loose: list[bytes] = []
    for raw in session.stream(first, sudo=sudo, on_bytes=on_bytes):
        rec = parser.feed(raw)
        if rec is None:
            continue
        if rec.queue_id is not None:
            ids.add(rec.queue_id)
        else:
            loose.append(raw)
    if needles is None:
        ids = set()
    second: list[list[str]] = []
    if ids:
        second = (
            [journal_ids_command(sorted(ids), since=query.since, until=query.until, match=journal_match(src))]
            if journal
            else ids_file_commands(session.path(src.path), sorted(ids))
        )
    n, size = _copy(session, second, target, sudo, on_bytes, keep=None) if second else (0, 0)
    if not second:
        target.write_bytes(b"")
    if loose:
        with open(target, "ab") as out:
            for raw in loose:
                out.write(raw + b"\n")
                n += 1
                size += len(raw) + 1
    return n, size


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
                "files": list(r.value.files) if r.value else [],
            }
        )
    dest.mkdir(parents=True, exist_ok=True)
    (dest / FLEET_MANIFEST).write_text(
        json.dumps({"fetched_at": now.isoformat(), "hosts": hosts}, indent=2) + "\n",
        encoding="utf-8",
    )
