"""The per-host pipeline: discover -> retrieve (two passes) -> parse -> assemble.

Each function here runs for one host inside the fleet pool, on that host's own session.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TypeVar

from collector.errors import TransportError
from collector.logs.assemble import Assembler, assemble
from collector.logs.commands import (
    Needles,
    filter_file_command,
    filter_offsets_command,
    ids_file_commands,
    journal_command,
    journal_ids_command,
    journal_match,
    pass1_needles,
    source_in_window,
    split_offset,
    window_ids_commands,
    windows_around,
    windows_worth_it,
)
from collector.logs.discovery import DiscoveryResult, FileInfo, discover
from collector.logs.parse import LineParser, TimeContext
from collector.logs.select import group_selected, reject_selected, tally
from collector.models import (
    CommandResult,
    Compression,
    Host,
    HostLog,
    Kind,
    LogSource,
    ParseStats,
    Query,
    QueueGroup,
    Record,
    Reject,
    Stage,
    TransportKind,
)
from collector.transport.base import Session

#: A local host root may carry this file (written by ``collector fetch``): the original
#: mtimes and sizes of the files copied there, since a copy (or git) loses them.
MANIFEST = "collector-manifest.json"

ByteCounter = Callable[[int], None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HostSearch:
    """What one host gave for one query."""

    host: str
    log: HostLog
    sources: tuple[LogSource, ...]
    notes: tuple[str, ...]


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


def _load_manifest(session: Session) -> dict[str, dict[str, float]]:
    host = session.host
    if host.transport is not TransportKind.LOCAL:
        return {}
    result = session.run(["cat", "--", session.path("/" + MANIFEST)])
    if result.exit_code != 0:
        return {}
    try:
        data = json.loads(result.stdout)
        files = data.get("files", {})
        return {str(k): dict(v) for k, v in files.items() if isinstance(v, dict)}
    except (ValueError, AttributeError, TypeError):
        return {}


def _context(source: LogSource, zone: tzinfo, now: datetime) -> TimeContext:
    reference = now
    if source.mtime is not None:
        reference = datetime.fromtimestamp(source.mtime, tz=zone)
    return TimeContext(tz=zone, reference=reference)


class _Reader:
    """Streams commands' lines through per-source parsers and keeps the stats."""

    def __init__(self, session: Session, zone: tzinfo, now: datetime, on_bytes: ByteCounter | None):
        self.session = session
        self.zone = zone
        self.now = now
        self.on_bytes = on_bytes
        self.parsers: list[LineParser] = []
        self.notes: list[str] = []

    def records(self, source: LogSource, argv: Sequence[str]) -> Iterator[Record]:
        parser = LineParser(_context(source, self.zone, self.now))
        self.parsers.append(parser)
        sudo = self.session.host.sudo
        chunks = self.session.stream_chunks(list(argv), sudo=sudo, on_bytes=self.on_bytes)
        yield from self._guarded(source, parser.parse_blocks(chunks))

    def records_with_offsets(
        self, source: LogSource, argv: Sequence[str]
    ) -> Iterator[tuple[int | None, Record]]:
        """Like ``records`` for ``grep -b`` output: each record with its line's byte offset."""
        parser = LineParser(_context(source, self.zone, self.now))
        self.parsers.append(parser)
        lines = self.session.stream(list(argv), sudo=self.session.host.sudo, on_bytes=self.on_bytes)

        def pairs() -> Iterator[tuple[int | None, Record]]:
            for raw in lines:
                offset, line = split_offset(raw)
                rec = parser.feed(line)
                if rec is not None:
                    yield offset, rec

        yield from self._guarded(source, pairs())

    def _guarded(self, source: LogSource, items: Iterator[T]) -> Iterator[T]:
        """Pass items on; a source that vanished or is damaged becomes a note, not a failure.

        What was read before the problem stands.
        """
        try:
            yield from items
        except TransportError as exc:
            note = _read_problem(source, exc)
            if note is None:
                raise
            if note not in self.notes:
                self.notes.append(note)

    def stats(self) -> ParseStats:
        return _sum_stats(p.stats for p in self.parsers)


def _read_problem(source: LogSource, exc: TransportError) -> str | None:
    """The note for a source that could not be read to its end, or None for other errors."""
    if exc.stage is not Stage.READ:
        return None
    # The message quotes the command, whose script holds these words too, but never with the
    # file's path filled in: only stderr has "PATH: No such file..." (a local host's real
    # path ends with the host path).
    if f"{source.path}: No such file or directory" in exc.message:
        # Rotated away between discovery and reading: its lines are in the next file.
        return f"{source.path} vanished while being read (rotated?)"
    if f"{source.path} completely: the lines after the damage are missing" in exc.message:
        return f"{source.path} is damaged: lines after the damage are missing"
    return None


def _sum_stats(all_stats: Iterable[ParseStats]) -> ParseStats:
    lines = parsed = unknown = bad = blank = 0
    samples: list[str] = []
    for s in all_stats:
        lines += s.lines
        parsed += s.parsed
        unknown += s.unknown
        bad += s.bad
        blank += s.blank
        samples.extend(s.unknown_samples[: max(0, 5 - len(samples))])
    return ParseStats(lines, parsed, unknown, bad, blank, tuple(samples))


def discover_host(session: Session, host: Host) -> DiscoveryResult:
    return discover(SessionView(session), host)


@dataclass(slots=True)
class HostRecords:
    """Records gathered on one host so far (a trace adds to them round after round)."""

    host: Host
    found: DiscoveryResult
    chosen: list[LogSource]
    notes: list[str]
    reader: _Reader
    records: list[Record]
    fetched_ids: set[str]
    commands: int = 0

    def log(self) -> HostLog:
        ordered = sorted(_dedupe(self.records), key=lambda r: r.time)
        return assemble(self.host.name, ordered, self.reader.stats())

    def result(self) -> HostSearch:
        notes = tuple(self.notes) + tuple(n for n in self.reader.notes if n not in self.notes)
        return HostSearch(self.host.name, self.log(), tuple(self.found.sources), notes)


def _dedupe(records: Iterable[Record]) -> list[Record]:
    """The same line fetched twice (by two passes or two rounds) counts once."""
    seen: set[tuple[datetime, str]] = set()
    out: list[Record] = []
    for r in records:
        key = (r.time, r.line)
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out


def start_host(
    session: Session,
    query: Query,
    zone: tzinfo,
    now: datetime,
    *,
    on_bytes: ByteCounter | None = None,
    found: DiscoveryResult | None = None,
) -> HostRecords:
    """Discover, then pick the sources that can hold lines in the query's time window."""
    host = session.host
    if found is None:
        found = discover_host(session, host)
    sources = [s for s in found.sources if s.readable or host.sudo]
    notes = list(found.notes)
    for s in found.sources:
        if not (s.readable or host.sudo):
            notes.append(f"cannot read {s.path} (permission denied; set sudo = true?)")
    chosen: list[LogSource] = []
    for i, src in enumerate(sources):
        older = sources[i - 1] if i > 0 and sources[i - 1].kind == "file" else None
        if source_in_window(src, older, query.since, query.until):
            chosen.append(src)
        else:
            notes.append(f"skipped {src.path}: outside the time window")
    reader = _Reader(session, zone, now, on_bytes)
    return HostRecords(host, found, chosen, notes, reader, [], set())


def select_records(
    state: HostRecords,
    session: Session,
    query: Query,
    around: tuple[datetime, datetime] | None = None,
) -> set[str]:
    """Pass 1 (lines with the selector's fixed string) then pass 2 (every line of their IDs).

    On plain files pass 2 first reads windows around pass 1's hits; IDs whose life is not
    complete there are then looked up in the whole of every chosen source. Returns the queue
    IDs pass 1 found. With no fixed string, every line is read in one pass. ``around`` keeps
    only the pass-1 hits logged in that span (a trace looking for one event, e.g. a refusal).
    """
    needles = pass1_needles(query)

    def wanted(rec: Record) -> bool:
        return around is None or around[0] <= rec.time <= around[1]

    if needles is None:
        for src in state.chosen:
            state.commands += 1
            state.records.extend(state.reader.records(src, _pass1_argv(session, src, None, query)))
        return set()
    ids: set[str] = set()
    windowed: list[tuple[LogSource, dict[str, list[int]]]] = []
    for src in state.chosen:
        state.commands += 1
        if _windowable(src):
            hits: dict[str, list[int]] = {}
            argv = filter_offsets_command(session.path(src.path), needles)
            for offset, rec in state.reader.records_with_offsets(src, argv):
                if not wanted(rec):
                    continue
                if rec.queue_id is None:
                    state.records.append(rec)
                elif offset is not None:
                    hits.setdefault(rec.queue_id, []).append(offset)
            ids.update(hits)
            if hits:
                windowed.append((src, hits))
            continue
        for rec in state.reader.records(src, _pass1_argv(session, src, needles, query)):
            if not wanted(rec):
                continue
            if rec.queue_id is not None:
                ids.add(rec.queue_id)
            else:
                state.records.append(rec)
    complete: set[str] = set()
    for src, hits in windowed:
        wins = windows_around([o for offs in hits.values() for o in offs], src.size)
        if not windows_worth_it(wins, src.size):
            continue  # hits all over the file: one whole-file pass 2 is cheaper
        found: list[Record] = []
        for argv in window_ids_commands(session.path(src.path), wins, sorted(hits)):
            state.commands += 1
            found.extend(state.reader.records(src, argv))
        done = complete_lives(found, reaches_end=wins[-1].end is None)
        # An ID not complete here is fetched whole below: keep none of its window lines, so
        # each ID's lines come from one pass, in file order (a BSD second holds many lines).
        state.records.extend(r for r in found if r.queue_id in done)
        complete |= done
    state.fetched_ids.update(complete)
    fetch_ids(state, session, ids - complete, query)
    return ids


def _windowable(src: LogSource) -> bool:
    return src.kind == "file" and src.compression is Compression.NONE and bool(src.size)


def complete_lives(records: Sequence[Record], *, reaches_end: bool = False) -> set[str]:
    """Queue IDs whose whole life is in ``records``: its first line and its ``removed``.

    A life starts with smtpd's client= or pickup's uid= line; one made by Postfix itself (a
    bounce notification, a local forward, named so by its parent's line here) starts with
    cleanup's message-id= line and names no client. A null sender alone proves nothing: a
    notification relayed from another host arrives through smtpd like any message. Without ``removed`` the message may still be queued: complete only when the
    records reach the end of the file.
    """
    kinds: dict[str, set[Kind]] = {}
    internal: set[str] = set()
    for r in records:
        if r.queue_id is None:
            continue
        kinds.setdefault(r.queue_id, set()).add(r.kind)
        # Children Postfix makes itself (no client= line): notifications and local forwards.
        # A "queued as" child came in through smtpd and must show its client= line.
        if r.child is not None and (
            r.kind is Kind.NOTIFICATION
            or (r.kind is Kind.DELIVERY and r.text.startswith("forwarded as"))
        ):
            internal.add(r.child)
    done: set[str] = set()
    for qid, ks in kinds.items():
        started = bool(ks & {Kind.CLIENT, Kind.PICKUP}) or (
            Kind.MESSAGE_ID in ks and qid in internal
        )
        if started and (Kind.REMOVED in ks or reaches_end):
            done.add(qid)
    return done


def fetch_ids(
    state: HostRecords, session: Session, queue_ids: Iterable[str], query: Query | None = None
) -> None:
    """Every line of these queue IDs in every chosen source (a message can straddle a rotation)."""
    ids = sorted(set(queue_ids) - state.fetched_ids)
    if not ids:
        return
    state.fetched_ids.update(ids)
    window = query or Query()
    for src in state.chosen:
        for argv in _pass2_argvs(session, src, ids, window):
            state.commands += 1
            state.records.extend(state.reader.records(src, argv))


def scan_host(
    session: Session,
    query: Query,
    zone: tzinfo,
    now: datetime,
    *,
    keep: Callable[[QueueGroup], bool],
    keep_reject: Callable[[Reject], bool],
    on_group: Callable[[QueueGroup], None] | None = None,
    on_bytes: ByteCounter | None = None,
) -> HostSearch:
    """Read every line of the chosen sources, streaming: memory stays flat as logs grow.

    Each finished group goes to ``on_group`` (if given) and is kept only when ``keep`` says so;
    each NOQUEUE reject is kept only when ``keep_reject`` says so (it may count it too).
    """
    state = start_host(session, query, zone, now, on_bytes=on_bytes)
    asm = Assembler(session.host.name, keep_reject=keep_reject)
    kept: list[QueueGroup] = []

    def take(groups: Iterable[QueueGroup]) -> None:
        for g in groups:
            if on_group is not None:
                on_group(g)
            if keep(g):
                kept.append(g)

    for src in state.chosen:
        state.commands += 1
        for rec in state.reader.records(src, _pass1_argv(session, src, None, query)):
            done = asm.add(rec)
            if done:
                take(done)
    tail = asm.finish()
    take(tail.groups)
    kept.sort(key=lambda g: (g.first_time, g.instance, g.queue_id))
    log = HostLog(session.host.name, tuple(kept), tail.rejects, state.reader.stats())
    notes = tuple(state.notes) + tuple(state.reader.notes)
    return HostSearch(session.host.name, log, tuple(state.found.sources), notes)


def search_host(
    session: Session,
    query: Query,
    zone: tzinfo,
    now: datetime,
    *,
    on_bytes: ByteCounter | None = None,
    found: DiscoveryResult | None = None,
) -> HostSearch:
    """Two passes over every log source of one host, then parse and assemble locally."""
    if pass1_needles(query) is None:
        return scan_host(
            session,
            query,
            zone,
            now,
            keep=lambda g: group_selected(g, query),
            keep_reject=lambda r: reject_selected(r, query),
            on_bytes=on_bytes,
        )
    state = start_host(session, query, zone, now, on_bytes=on_bytes, found=found)
    select_records(state, session, query)
    return state.result()


def _pass1_argv(
    session: Session, src: LogSource, needles: Needles | None, query: Query
) -> list[str]:
    if src.kind == "journal":
        return journal_command(needles, since=query.since, until=query.until, match=journal_match(src))
    return filter_file_command(session.path(src.path), needles)


def _pass2_argvs(
    session: Session, src: LogSource, ids: Sequence[str], query: Query
) -> list[list[str]]:
    if src.kind == "journal":
        return [journal_ids_command(ids, since=query.since, until=query.until, match=journal_match(src))]
    return ids_file_commands(session.path(src.path), ids)


@dataclass(frozen=True, slots=True)
class HostSummary:
    search: HostSearch
    counts: dict[str, int]


def summarize_host(
    session: Session, query: Query, zone: tzinfo, now: datetime, *,
    on_bytes: ByteCounter | None = None,
) -> HostSummary:
    """Counts of one host's messages, recipients by status and rejects, in one streaming pass."""
    counts: dict[str, int] = {}

    def count_reject(r: Reject) -> bool:
        if (query.since is None or r.time >= query.since) and (
            query.until is None or r.time <= query.until
        ):
            counts["rejected"] = counts.get("rejected", 0) + 1
        return False  # counted, not kept

    result = scan_host(
        session,
        query,
        zone,
        now,
        keep=lambda g: False,
        keep_reject=count_reject,
        on_group=lambda g: tally(g, counts, query),
        on_bytes=on_bytes,
    )
    return HostSummary(result, counts)
