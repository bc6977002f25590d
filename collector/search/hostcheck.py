"""``collector hosts``: the inventory as a table, and ``--check``: what each host offers.

The table rows are shown through ``render.safe.printable`` by ``render_hosts_table`` (a
server's file names and error text are its own choice); the JSON payloads are exact.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.inventory.load import host_zone
from collector.inventory.origins import Reading
from collector.logs.commands import edge_lines_command, journal_command
from collector.logs.discovery import DiscoveryResult
from collector.logs.parse import TimeContext, parse_line
from collector.models import Host, HostResult, LogSource, TransportKind
from collector.render.rows import iso, source_dict
from collector.render.safe import Escaped, printable
from collector.render.text import short_bytes
from collector.search.view import RootAccess, discover_host, source_path
from collector.transport.base import Session, run_batch
from collector.transport.privilege import EXIT_ROOT_READ, RootPrograms

#: Bytes read at each end of a source for its first and last line. A Postfix line is a few
#: KiB at most; a longer first or last line shows as "-", and costs no more than this even
#: when the file is one line of 1 GB.
EDGE_MAX = 64 * 1024

# $1 = file, $2 = bytes, $3 = "first" or "last": that many bytes from that end of the file
# (decompressed). A constant: inputs arrive only as words. `tail -c` seeks on a plain file
# and keeps only its last $2 bytes of a pipe, so either end costs $2 bytes of memory.
_FILE_END = (
    'f=$1; n=$2; case "$f" in *.gz) d="gzip -dc";; *.bz2) d="bzip2 -dc";; *.xz) d="xz -dc";; '
    '*.zst) d="zstd -dcq";; *) d="";; esac; '
    'if [ "$3" = first ]; then e=head; else e=tail; fi; '
    'if [ -z "$d" ]; then exec $e -c "$n" -- "$f"; fi; $d -- "$f" | $e -c "$n"'
)
# $1 = bytes, the rest = a command: its output, cut after $1 bytes.
_BOUNDED = 'n=$1; shift; "$@" | head -c "$n"'
#: A log host's journal: the entries whose hostnames ``--check`` samples (its last ones).
SAMPLE_ENTRIES = 2000

# The same two reads of a file only root can read: its bytes from `sudo -n -- CAT FILE` ($4),
# cut and decompressed by the login user. `tail` of a pipe reads it through (there is no seek
# into a pipe), so a root file's last line costs a read of the whole file. Exit 5 when the
# root reader failed (sudo refused: its words are on stderr); 141 is SIGPIPE from `head`.
_ROOT_FILE_END = (
    'f=$1; n=$2; c=$4; case "$f" in *.gz) d="gzip -dc";; *.bz2) d="bzip2 -dc";; '
    '*.xz) d="xz -dc";; *.zst) d="zstd -dcq";; *) d="";; esac; '
    'if [ "$3" = first ]; then e=head; else e=tail; fi; exec 4>&1; '
    'if [ -z "$d" ]; then s=$( { { sudo -n -- "$c" "$f"; echo "r$?" >&3; } '
    '| $e -c "$n" >&4; } 3>&1 ); '
    'else s=$( { { sudo -n -- "$c" "$f"; echo "r$?" >&3; } | $d | $e -c "$n" >&4; } 3>&1 ); fi; '
    f'case "$s" in *r0*|*r141*) ;; *) exit {EXIT_ROOT_READ};; esac'
)
# The last $1 bytes of a command's output (a root journal: sudoers allows no `-n`), keeping
# the command's exit status 5 (a root reader that failed).
_ROOT_TAIL = (
    'n=$1; shift; exec 4>&1; s=$( { { "$@"; echo "r$?" >&3; } | tail -c "$n" >&4; } 3>&1 ); '
    f'case "$s" in *r{EXIT_ROOT_READ}*) exit {EXIT_ROOT_READ};; esac'
)
# _BOUNDED, keeping the command's exit status 5 (a root reader that failed).
_ROOT_BOUNDED = (
    'n=$1; shift; exec 4>&1; s=$( { { "$@"; echo "r$?" >&3; } | head -c "$n" >&4; } 3>&1 ); '
    f'case "$s" in *r{EXIT_ROOT_READ}*) exit {EXIT_ROOT_READ};; esac'
)


@dataclass(frozen=True, slots=True)
class SourceCheck:
    source: LogSource
    first: datetime | None
    last: datetime | None
    format: str | None
    needs_sudo: bool
    #: On a log host: the hostnames of the source's last lines (see ``sample_hostnames``),
    #: each with the host it maps to (None: none this log host carries).
    hostnames: tuple[tuple[str, str | None], ...] | None = None


@dataclass(frozen=True, slots=True)
class HostCheck:
    host: Host
    discovery: DiscoveryResult
    sources: tuple[SourceCheck, ...]
    #: The host's clock minus this machine's, in seconds, and how sure (half the round trip);
    #: None for a directory of logs, or a host that did not say.
    clock_offset: float | None = None
    clock_error: float | None = None

    @property
    def clock_note(self) -> str | None:
        """A note when the host's clock is off by more than the stamps' grain (2 s)."""
        if self.clock_offset is None or self.clock_error is None:
            return None
        if abs(self.clock_offset) - self.clock_error < CLOCK_NOTABLE:
            return None
        side = "ahead of" if self.clock_offset > 0 else "behind"
        return (f"its clock is {abs(self.clock_offset):.1f} s {side} this machine's "
                f"(within {self.clock_error:.2f} s): its log times are off by as much")


#: A clock offset worth a note (seconds): beyond the one-second grain of syslog stamps.
CLOCK_NOTABLE = 2.0
_CLOCK = re.compile(rb"(\d{9,11})\.(\d{1,9})\n?")


def clock_offset(session: Session) -> tuple[float | None, float | None]:
    """The host's clock minus this machine's (``date +%s.%N`` between two local readings)."""
    if session.host.is_directory:
        return None, None
    before = time.time()
    result = session.run(["date", "-u", "+%s.%N"], sudo=False)
    after = time.time()
    m = _CLOCK.fullmatch(result.stdout[:32]) if result.exit_code == 0 else None
    if m is None:
        return None, None
    remote = int(m.group(1)) + int(m.group(2).ljust(9, b"0")[:9]) / 1e9
    return round(remote - (before + after) / 2, 3), round((after - before) / 2, 3)


def _format_of(line: str, source: LogSource) -> str | None:
    """The envelope of a source's first line: rfc3339, postlogd, bsd (or journal).

    ``Jan 15`` looks the same from syslog and from postlogd; who wrote the file tells
    them apart (a ``maillog_file`` is postlogd's).
    """
    if source.kind == "journal":
        return "journal"
    if not line:
        return None
    head = line[:32]
    if head[:4].isdigit() and len(head) > 10 and head[4] == "-":
        return "rfc3339"
    if len(head) > 6 and head[3] == " " and (head[4] == " " or head[4:6].isdigit()):
        if head[15:16] == ".":
            return "bsd-precise"
        return "postlogd" if source.origin == "maillog_file" else "bsd"
    return "unknown"


def check_host(session: Session, reading: Reading | None = None) -> HostCheck:
    """Connect (done by the caller), discover, and read each source's first and last line;
    on a log host, also which hostnames each source holds."""
    host = session.host
    root = RootAccess(session)
    found = discover_host(session, host, root)
    zone = host_zone(host)
    now = datetime.now().astimezone()
    checks: list[SourceCheck] = []
    # Every source's edges in one round trip.
    asked = [edge_argvs(session, src, root.programs() if src.sudo else None)
             if src.readable or host.sudo else [] for src in found.sources]
    bounds = [(2 * EDGE_MAX if src.kind == "journal" else EDGE_MAX) + 4096
              for src, argvs in zip(found.sources, asked) for _ in argvs]
    answers = iter(run_batch(session, [argv for argvs in asked for argv in argvs],
                             most=bounds))
    for src, argvs in zip(found.sources, asked):
        needs_sudo = not src.readable and not host.sudo
        first = last = None
        fmt = None
        if not needs_sudo:
            outputs = [next(answers).stdout for _ in argvs]
            head, tail = edges_from(src, outputs)
            ref = datetime.fromtimestamp(src.mtime, tz=zone) if src.mtime else now
            ctx = TimeContext(tz=zone, reference=ref)
            first_rec = parse_line(head, ctx) if head is not None else None
            last_rec = parse_line(tail, ctx) if tail is not None else None
            if head is not None:
                fmt = _format_of(head, src)
            first = first_rec.time if first_rec else None
            last = last_rec.time if last_rec else None
        names = None
        resolver = reading.resolver() if reading is not None else None
        if resolver is not None and not needs_sudo:
            ref = datetime.fromtimestamp(src.mtime, tz=zone) if src.mtime else now
            seen = sample_hostnames(session, src, TimeContext(tz=zone, reference=ref),
                                    root.programs() if src.sudo else None)
            mapped: list[tuple[str, str | None]] = []
            for n in seen:
                h = resolver.origin(n, count=False)
                made = h is not None and n.casefold() not in resolver.carried.keys
                mapped.append((n, NEW if made else h))
            names = tuple(mapped)
        checks.append(SourceCheck(src, first, last, fmt, needs_sudo, names))
    offset, error = clock_offset(session)
    return HostCheck(host, found, tuple(checks), offset, error)


#: Hostnames ``--check`` lists for one source.
MAX_SAMPLED_NAMES = 50
#: What a hostname of a ``collects = ["*"]`` log host maps to when no inventory host is it.
NEW = "new"


def sample_hostnames(
    session: Session, src: LogSource, ctx: TimeContext, root: RootPrograms | None = None
) -> list[str]:
    """The hostnames of a source's last lines, in the order first seen: a file's last
    ``EDGE_MAX`` bytes, a journal's last :data:`SAMPLE_ENTRIES` entries (at most
    ``2 * EDGE_MAX`` bytes); at most :data:`MAX_SAMPLED_NAMES` names. ``root``: the source
    is read as root (``sudo -n cat`` / ``journalctl`` with their fixed flags: a journal is
    then read whole and cut by the login user, since sudoers allows no ``-n``)."""
    if src.kind == "journal":
        directory = source_path(session, src)
        if root is not None:
            inner = journal_command(None, since=None, until=None, directory=directory,
                                    root=root).argv
            argv = ["sh", "-c", _ROOT_TAIL, "sh", str(2 * EDGE_MAX), *inner]
        else:
            inner = journal_command(None, since=None, until=None, directory=directory).argv
            # the last entries only: journalctl -n, added before the match
            inner = (*inner[:3], inner[3].replace("-q ", f"-q -n {SAMPLE_ENTRIES} ", 1),
                     *inner[4:])
            argv = ["sh", "-c", _BOUNDED, "sh", str(2 * EDGE_MAX), *inner]
        data = session.run(argv, sudo=False).stdout
        lines = data.split(b"\n")[:-1]
        if root is not None and len(data) >= 2 * EDGE_MAX:
            lines = lines[1:]  # cut by tail -c: the first line may be a part
    else:
        path = session.path(src.path)
        argv = ["sh", "-c", _FILE_END, "sh", path, str(EDGE_MAX), "last"]
        if root is not None:
            argv = ["sh", "-c", _ROOT_FILE_END, "sh", path, str(EDGE_MAX), "last", root.cat]
        data = session.run(argv, sudo=False).stdout
        lines = data.split(b"\n")[1 if len(data) >= EDGE_MAX else 0 : -1]
    names: dict[str, None] = {}
    for raw in lines:
        rec = parse_line(_text(raw), ctx)
        if rec is not None and len(names) < MAX_SAMPLED_NAMES:
            names.setdefault(rec.host)
    return list(names)




def edge_lines(
    session: Session, src: LogSource, root: RootPrograms | None = None
) -> tuple[str | None, str | None]:
    """A source's first and last line; None for one longer than :data:`EDGE_MAX` (or none).

    Only ``EDGE_MAX`` bytes are read at each end, whatever the host sends. ``root``: the
    source is read as root with these programs (everything else runs as the login user).
    """
    results = [session.run(argv, sudo=False) for argv in edge_argvs(session, src, root)]
    return edges_from(src, [r.stdout for r in results])


def edge_argvs(
    session: Session, src: LogSource, root: RootPrograms | None = None
) -> list[list[str]]:
    """The commands :func:`edge_lines` runs for a source (one for a journal, two for a
    file), so that several sources' can run in one batch; :func:`edges_from` reads them."""
    if src.kind == "journal":
        inner = edge_lines_command(src, source_path(session, src), root).argv
        bounded = _BOUNDED if root is None else _ROOT_BOUNDED
        return [["sh", "-c", bounded, "sh", str(2 * EDGE_MAX), *inner]]
    path = session.path(src.path)
    argvs = []
    for end in ("first", "last"):
        argv = ["sh", "-c", _FILE_END, "sh", path, str(EDGE_MAX), end]
        if root is not None:
            argv = ["sh", "-c", _ROOT_FILE_END, "sh", path, str(EDGE_MAX), end, root.cat]
        argvs.append(argv)
    return argvs


def edges_from(src: LogSource, outputs: Sequence[bytes]) -> tuple[str | None, str | None]:
    """A source's first and last line from the output of its :func:`edge_argvs`."""
    if src.kind == "journal":
        data = outputs[0]
        lines = data.split(b"\n")
        if len(data) >= 2 * EDGE_MAX or not lines[-1]:
            lines.pop()  # cut by the bound, or the empty rest after the last newline
        return (_text(lines[0]), _text(lines[-1])) if lines else (None, None)
    return _first_line(outputs[0]), _last_line(outputs[1])


def _first_line(data: bytes) -> str | None:
    """The first line of a file's first ``EDGE_MAX`` bytes (None: longer, or no line)."""
    end = data.find(b"\n")
    if end >= 0:
        return _text(data[:end])
    return _text(data) if data and len(data) < EDGE_MAX else None


def _last_line(data: bytes) -> str | None:
    """The last line of a file's last ``EDGE_MAX`` bytes (None: longer, or no line)."""
    body = data[:-1] if data.endswith(b"\n") else data
    start = body.rfind(b"\n")
    if start >= 0:
        return _text(body[start + 1 :])
    return _text(body) if body and len(data) < EDGE_MAX else None


def _text(line: bytes) -> str:
    return line.rstrip(b"\r").decode("utf-8", "replace")


def check_rows(
    results: Sequence[HostResult[HostCheck]],
) -> tuple[list[str], list[list[str]], list[dict[str, Any]]]:
    """The ``--check`` table (one row per source) and its JSON (one object per host)."""
    headers = ["host", "status", "postfix", "source", "size", "first", "last", "format"]
    rows: list[list[str]] = []
    payload: list[dict[str, Any]] = []
    for r in results:
        if r.value is None:
            assert r.error is not None
            # Cut to 70 shown characters: escaped first, so that the cut measures what is shown.
            shown = Escaped(printable(f"{r.error.where}: {r.error.message}")[:70])
            rows.append([r.host, shown, "", "", "", "", "", ""])
            payload.append(
                {
                    "name": r.host,
                    "ok": False,
                    "reachable": r.error.stage not in ("connect",),
                    "error": {"stage": r.error.stage.value, "message": r.error.message},
                    "sources": [],
                }
            )
            continue
        rows.extend(_check_table(r.host, r.value))
        payload.append(_check_dict(r.host, r.value))
    return headers, rows, payload


def carried_rows(
    results: Sequence[HostResult[HostCheck]], carried: Sequence[Host]
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """``--check`` rows of hosts read on a log host: never connected to, they are as
    reachable as their log host (which the rows above show)."""
    by_name = {r.host: r for r in results}
    rows: list[list[str]] = []
    payload: list[dict[str, Any]] = []
    for h in carried:
        r = by_name.get(h.via or "")
        error = r.error if r is not None else None
        status = f"via {h.via}" + (f": {error.stage}" if error is not None else "")
        rows.append([h.name, status, "", "", "", "", "", ""])
        payload.append({
            "name": h.name, "ok": error is None, "via": h.via,
            "error": None if error is None else {"stage": error.stage.value,
                                                 "message": error.message},
            "sources": [],
        })  # fmt: skip
    return rows, payload


def _check_table(name: str, c: HostCheck) -> list[list[str]]:
    version = c.discovery.postfix_version or "-"
    if not c.sources:
        return [[name, "ok: no log source found", version, "", "", "", "", ""]]
    rows: list[list[str]] = []
    for i, s in enumerate(c.sources):
        status = "ok" if not s.needs_sudo else "needs sudo"
        rows.append(
            [
                name if i == 0 else "",
                status if i == 0 or s.needs_sudo else "",
                version if i == 0 else "",
                s.source.path,
                _size(s.source.size),
                s.first.strftime("%Y-%m-%d %H:%M") if s.first else "-",
                s.last.strftime("%Y-%m-%d %H:%M") if s.last else "-",
                s.format or "-",
            ]
        )
        if s.hostnames is not None:
            shown = ", ".join(n if h == n else f"{n}={h or '-'}" for n, h in s.hostnames)
            rows.append(["", "", "", f"  holds: {shown or '-'}", "", "", "", ""])
    return rows


def _check_dict(name: str, c: HostCheck) -> dict[str, Any]:
    sources = [
        dict(source_dict(s.source), first=iso(s.first), last=iso(s.last), format=s.format,
             needs_sudo=s.needs_sudo)
        | ({} if s.hostnames is None else
           {"hostnames": [{"hostname": n, "host": n if h == NEW else h, "new": h == NEW}
                          for n, h in s.hostnames]})
        for s in c.sources
    ]
    return {
        "name": name,
        "ok": True,
        "reachable": True,
        "auth": "ok",
        "host_key": "ok" if c.host.transport is TransportKind.SSH else None,
        "postfix_version": c.discovery.postfix_version,
        "sudo": c.host.sudo,
        "error": None,
        "sources": sources,
        "notes": list(c.discovery.notes) + ([c.clock_note] if c.clock_note else []),
        "clock_offset": c.clock_offset,
    }


def _size(n: int | None) -> str:
    return "-" if n is None else short_bytes(n)
