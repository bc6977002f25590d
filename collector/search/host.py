"""One host's search: discover once, choose the sources, run the passes, parse, assemble.

A :class:`HostSearcher` is made for one host and one command and used by one thread, on that
host's own session. ``search``, ``fetch``, ``summary``, ``hosts --check`` and the trace loop
all read through it, so the choice of sources, which command reads which kind of source, and
what happens when a source cannot be read to its end are said once, here.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Protocol, TypeVar

from collector.errors import TransportError
from collector.inventory.origins import OriginResolver, Reading
from collector.logs.assemble import Assembler, Counter, assemble
from collector.logs.commands import (
    DELIVERY_LINE_RE,
    EXIT_DAMAGED,
    EXIT_VANISHED,
    Command,
    Needles,
    WindowRead,
    WindowsUnread,
    carries_id,
    edges_command,
    filter_offsets_command,
    ids_commands,
    match_command,
    pass1_needles,
    plan_windows,
    source_in_window,
    split_offset,
    window_ids_command,
    window_lines,
    window_reads,
    windows_worth_it,
)
from collector.logs.coverage import ledger, not_fetched, recorded, within
from collector.logs.discovery import DiscoveryResult, rotation_stem
from collector.logs.parse import LineParser, TimeContext, line_time
from collector.logs.select import group_selected, host_rows, reject_selected
from collector.models import (
    CommandResult,
    Compression,
    Coverage,
    HostLog,
    Kind,
    LogSource,
    MessageCount,
    ParseStats,
    Query,
    QueueGroup,
    ReadProblem,
    Record,
    Reject,
    Row,
    SourceKind,
    Stage,
    Unread,
)
from collector.search.view import RootAccess, discover_host, list_as_root, source_path
from collector.transport.base import Session, run_batch
from collector.transport.privilege import RootPrograms

ByteCounter = Callable[[int], None]
T = TypeVar("T")
L = TypeVar("L")


class _Lives(Protocol[L]):
    """What a whole-log scan feeds: an :class:`Assembler` or a :class:`Counter`."""

    def add(self, record: Record) -> list[L]: ...

    def held(self) -> int: ...


A = TypeVar("A", bound=_Lives[Any])


@dataclass(frozen=True, slots=True)
class SearchContext:
    """What every read of one host needs besides the session: its zone, now, a byte counter."""

    zone: tzinfo
    now: datetime
    on_bytes: ByteCounter | None = None


@dataclass(frozen=True, slots=True)
class HostSearch:
    """What one host gave for one query.

    ``unread`` lists the sources the host could not read to their end (and why): when it is
    not empty, the host's answer may be missing lines and the run is partial.
    """

    host: str
    log: HostLog
    sources: tuple[LogSource, ...]
    notes: tuple[str, ...]
    unread: tuple[Unread, ...] = ()
    commands: int = 0
    via: str | None = None  # the log host this host's lines were read on (``collects``)
    #: The rows the query selects (``logs.select.host_rows``), when the host's own worker
    #: made them: then ``log`` keeps only its stats (see :func:`with_rows`).
    rows: tuple[Row, ...] | None = None
    #: What of the time window asked the host's logs let this answer see (``logs.coverage``).
    coverage: Coverage | None = None


def with_rows(result: HostSearch, query: Query) -> HostSearch:
    """The answer as a search prints it: its selected rows, the log reduced to its stats (a
    worker process sends back a few rows instead of every parsed line)."""
    log = result.log
    rows = tuple(host_rows(log, query))
    return dataclasses.replace(result, log=HostLog(log.host, (), (), log.stats), rows=rows)


class HostSearcher:
    """Every read of one host for one command; records gathered so far are kept.

    A trace adds to the records round after round (``search`` for more selectors,
    ``fetch_ids`` for the queue IDs links point at); ``result()`` assembles them.

    On a log host (``origins``), records are parsed as anywhere, then each is given to the
    host its envelope names (see ``inventory.origins``) and assembled with that host's own:
    ``results()`` is one answer per origin host, and a queue ID of one host never meets the
    same ID of another. ``only`` (when set) names the origins whose lines pass 1 may start
    from (``--host mx1`` on mx1's log host).
    """

    def __init__(
        self,
        session: Session,
        context: SearchContext,
        *,
        found: DiscoveryResult | None = None,
        origins: OriginResolver | None = None,
    ) -> None:
        self.session = session
        self.host = session.host
        self.context = context
        self.origins = origins
        self.only: frozenset[str] | None = None
        self.root = RootAccess(session)
        self.ran: list[Command] = []
        self._found = found
        self._chosen: list[LogSource] | None = None
        self._notes: list[str] = []
        self._unread: dict[str, Unread] = {}
        self._loose: set[tuple[str, str, int]] = set()  # ID-less lines read (_Occurrences)
        self._before: dict[str, tuple[int, int]] | None = None  # (size, mtime) when planned
        self._per_id: dict[str, int] = {}  # records held per queue ID (see _hold)
        self._parsers: list[LineParser] = []
        self._records: list[Record] = []
        self._fetched: set[str] = set()
        self._scanned: list[HostLog] | None = None
        self._window: tuple[datetime | None, datetime | None] = (None, None)
        self._query = Query()  # the selectors the sources were planned for
        self._edges: dict[str, tuple[datetime | None, datetime | None]] = {}
        # While a search leaves delivery lines out of pass 2 (``search(drop_deliveries=)``):
        # per source pass 1 read, the delivery lines it printed (see _delivery_line); None
        # for a source whose lines went over the budget (its pass 2 then keeps them).
        self._delivered: dict[str, list[Record] | None] | None = None
        self._delivered_held = 0

    # ------------------------------------------------------------------ sources

    @property
    def found(self) -> DiscoveryResult:
        """The host's log sources, discovered on first use."""
        if self._found is None:
            self._found = discover_host(self.session, self.host, self.root)
        return self._found

    def plan(self, window: Query | None = None) -> list[LogSource]:
        """The readable sources that can hold lines inside the window (decided once).

        A source the login user cannot read (and no sudo) is recorded as unread; a rotated
        file outside the window is skipped with a note.
        """
        if self._chosen is not None:
            return self._chosen
        since, until = (window.since, window.until) if window is not None else (None, None)
        self._notes.extend(self.session.notes)  # e.g. known_hosts lines that were skipped
        self._notes.extend(self.found.notes)
        for unread in self.found.recorded:  # a fetched copy that was partial
            self.lose(unread)
        readable: list[LogSource] = []
        for src in self.found.sources:
            if src.readable or self.host.sudo:
                readable.append(src)
            else:
                self.lose(Unread(src.path, ReadProblem.PERMISSION))
        chosen: list[LogSource] = []
        last: dict[str, LogSource] = {}  # the newest file so far of each rotation stem
        for src in readable:
            older = None
            if src.kind is SourceKind.FILE:
                # The older file of the same stream: on a log host, files of other hosts are
                # written side by side and say nothing of this one's first line.
                older = last.get(rotation_stem(src.path))
                last[rotation_stem(src.path)] = src
            if source_in_window(src, older, since, until):
                chosen.append(src)
            else:
                self._notes.append(f"skipped {src.path}: outside the time window")
        self._chosen = chosen
        self._window = (since, until)
        self._query = window or Query()
        files = [s for s in chosen if s.kind is SourceKind.FILE]
        stat: CommandResult | None = None
        edges = b""
        if files:
            # The stat of what was planned and the files' edges: one round trip.
            try:
                stat, found = run_batch(self.session, [self._stat_argv(files),
                                                       self._edges_argv(files)])
                edges = found.stdout
            except TransportError:
                stat = None  # the stat is taken alone (and fails the host as it would)
        self._before = self._stat(files, stat)
        self._edges = self._read_edges(chosen, edges)
        return chosen

    def _edges_argv(self, files: Sequence[LogSource]) -> list[str]:
        words = []
        for src in files:
            root = self.root_programs(src)
            words.append((self.command_path(src), root.cat if root else None,
                          src.compression is Compression.NONE and root is None))
        return list(edges_command(words).argv)

    def _read_edges(
        self, chosen: Sequence[LogSource], data: bytes
    ) -> dict[str, tuple[datetime | None, datetime | None]]:
        """The times of the first and last lines of the chosen sources (``data``: what
        :meth:`_edges_argv` printed for the files; a journal's first entry by its own): what
        ``coverage`` says was seen. A host that cannot say leaves them unknown (the coverage
        is then the narrower)."""
        out: dict[str, tuple[datetime | None, datetime | None]] = {}
        files = [s for s in chosen if s.kind is SourceKind.FILE]
        if files:
            lines = data.split(b"\n")
            for i, src in enumerate(files):
                pair = lines[2 * i : 2 * i + 2]
                if len(pair) < 2:
                    break
                out[src.path] = (self._line_time(src, pair[0]), self._line_time(src, pair[1]))
        for src in chosen:
            if src.kind is SourceKind.JOURNAL:
                from collector.search.hostcheck import edge_lines  # (imports this module)

                try:
                    first, _ = edge_lines(self.session, src, self.root_programs(src))
                except TransportError:
                    first = None
                out[src.path] = (self._line_time(src, (first or "").encode()), None)
        return out

    def _line_time(self, source: LogSource, raw: bytes) -> datetime | None:
        reference = self.context.now
        if source.mtime is not None:
            reference = datetime.fromtimestamp(source.mtime, tz=self.context.zone)
        text = raw.decode("utf-8", "replace")
        return line_time(text, TimeContext(tz=self.context.zone, reference=reference))

    def coverage(self) -> Coverage | None:
        """What of the window the sources read so far cover (None before any plan)."""
        if self._chosen is None:
            return None
        found = self.found
        if found.fetched_at is not None:
            read_until: datetime | None = found.fetched_at
        elif self.host.is_directory:
            read_until = None
        else:
            read_until = self.context.now
        since, until = self._window
        now = self.context.now
        if found.coverage is not None:  # a fetched case: what its fetch saw
            coverage = recorded(found.coverage, since=since, until=until, now=now)
        else:
            coverage = ledger(
                found.sources, [s.path for s in self._chosen], self._unread, self._edges,
                since=since, until=until, now=now, read_until=read_until,
            )
        if found.selected is not None and not within(found.selected, self._query):
            coverage = not_fetched(coverage, found.selected, now=now)
        return coverage

    def command_path(self, source: LogSource) -> str:
        """The path a command on this host uses for a source (see ``view.source_path``)."""
        return source_path(self.session, source)

    def root_programs(self, source: LogSource) -> RootPrograms | None:
        """The programs that read this source as root; None: the login user reads it."""
        return self.root.programs() if source.sudo else None

    def match_command(self, source: LogSource, needles: Needles | None, query: Query) -> Command:
        """Pass 1 (or every line, without needles) for one source."""
        return match_command(source, self.command_path(source), needles, query,
                             self.root_programs(source))

    def ids_commands(
        self, source: LogSource, ids: Sequence[str], query: Query, *,
        drop_deliveries: bool = False,
    ) -> list[Command]:
        """Pass 2 for one source: every line of these queue IDs (but the delivery lines,
        with ``drop_deliveries``)."""
        return ids_commands(source, self.command_path(source), ids, query,
                            self.root_programs(source), drop_deliveries=drop_deliveries)

    # ------------------------------------------------------------------ reading

    def records(self, source: LogSource, command: Command) -> Iterator[Record]:
        """The parsed lines a command prints (parsed in blocks: the fast path)."""
        chunks = self._stream(command, chunks=True)
        yield from self._guarded(source, self.parser(source).parse_blocks(chunks))

    def records_with_offsets(
        self, source: LogSource, command: Command
    ) -> Iterator[tuple[int | None, Record]]:
        """Like :meth:`records` for ``grep -b`` output: each record with its line's offset."""
        parser = self.parser(source)
        lines = self._stream(command, chunks=False)

        def pairs() -> Iterator[tuple[int | None, Record]]:
            for raw in lines:
                offset, line = split_offset(raw)
                for rec in parser.feed_all(line):  # "message repeated N times": N records
                    yield offset, rec

        yield from self._guarded(source, pairs())

    def lines(self, source: LogSource, command: Command) -> Iterator[bytes]:
        """The raw lines a command prints, unparsed (``fetch`` writes them as they are)."""
        yield from self._guarded(source, self._stream(command, chunks=False))

    def chunks(self, source: LogSource, command: Command) -> Iterator[bytes]:
        """The raw bytes a command prints, cut anywhere (a byte-exact copy)."""
        yield from self._guarded(source, self._stream(command, chunks=True))

    def _stream(self, command: Command, *, chunks: bool) -> Iterator[bytes]:
        self.ran.append(command)
        read = self.session.stream_chunks if chunks else self.session.stream
        # Only a root source's reader runs as root, inside the command (sudo -n cat ...).
        return read(list(command.argv), sudo=False, on_bytes=self.context.on_bytes,
                    stdin=command.stdin)

    def parser(self, source: LogSource) -> LineParser:
        """A parser for one source's lines (its stats count in the host's)."""
        reference = self.context.now
        if source.mtime is not None:
            reference = datetime.fromtimestamp(source.mtime, tz=self.context.zone)
        parser = LineParser(TimeContext(tz=self.context.zone, reference=reference))
        self._parsers.append(parser)
        return parser

    def _guarded(self, source: LogSource, items: Iterator[T]) -> Iterator[T]:
        """Pass items on; a source that vanished or is damaged is recorded as unread.

        What was read before the problem stands. Any other failure of the command fails the
        host, with the source named.
        """
        try:
            yield from items
        except TransportError as exc:
            problem = read_problem(exc)
            if problem is None:
                raise TransportError(
                    exc.host,
                    exc.stage,
                    f"{source.path}: {exc.message}",
                    exit_code=exc.exit_code,
                    command=exc.command,
                ) from exc
            self.lose(Unread(source.path, problem))

    def lose(self, unread: Unread) -> None:
        """Record a source this host could not read to its end (the answer is partial)."""
        if unread.path not in self._unread:
            self._unread[unread.path] = unread
            self._notes.append(str(unread))

    # ------------------------------------------------------------------ the passes

    def search(
        self,
        query: Query,
        around: tuple[datetime, datetime] | None = None,
        *,
        drop_deliveries: bool = False,
    ) -> set[str]:
        """Pass 1 (lines with the selector's fixed string) then pass 2 (every line of their IDs).

        On plain files pass 2 first reads windows around pass 1's hits; IDs whose life is not
        complete there are then looked up in the whole of every chosen source. Returns the
        queue IDs pass 1 found. With no fixed string, every line is read in one pass.
        ``around`` keeps only the pass-1 hits logged in that span (a trace looking for one
        event, e.g. a refusal).

        ``drop_deliveries`` (``collector search`` asks for it; a trace, fetch or follow never
        does): when pass 1 searched for the recipients, the whole-source pass 2 of a source
        pass 1 read leaves every delivery line out on the host, and the ones it would have
        printed are taken from pass 1 instead. A row of a ``--to`` query is one recipient
        whose delivery lines all hold ``to=<ADDR>`` (its own address or its ``orig_to``), so
        pass 1 printed every one of them; another recipient's lines only make rows the query
        does not select. The rows are the same; pass 2 sends far fewer lines.
        """
        chosen = self.plan(query)
        needles = pass1_needles(query)
        if needles is None:
            self._read_whole(chosen, query)
            return set()
        self._delivered = {} if drop_deliveries and needles.recipients else None
        self._delivered_held = 0
        try:
            return self._search(chosen, needles, query, around)
        finally:
            self._delivered = None
            self._delivered_held = 0

    def _search(
        self,
        chosen: Sequence[LogSource],
        needles: Needles,
        query: Query,
        around: tuple[datetime, datetime] | None,
    ) -> set[str]:
        ids: set[str] = set()
        windowed: list[tuple[LogSource, dict[str, list[int]]]] = []
        for src in chosen:
            if _windowable(src):
                hits = self._pass1_offsets(src, needles, around)
                ids.update(hits)
                # An ID read before (an earlier search of a trace) is not read again.
                hits = {q: offs for q, offs in hits.items() if q not in self._fetched}
                if hits:
                    windowed.append((src, hits))
            else:
                ids |= self._pass1(src, needles, query, around)
        complete: set[str] = set()
        for src, hits in windowed:
            complete |= self._pass2_windows(src, hits)
        self._fetched.update(complete)
        self.fetch_ids(ids - complete, query)
        return ids

    def _starts(self, rec: Record) -> bool:
        """Whether a pass-1 hit may start a search: on a log host, a line of a host it
        carries (of one of ``only``, when set)."""
        if self.origins is None:
            return True
        origin = self.origins.origin(rec.host, count=False)
        return origin is not None and (self.only is None or origin in self.only)

    def _hold(self, src: LogSource, rec: Record) -> None:
        """Keep a record for the answer, within one host's budget (``MAX_HELD_RECORDS``, and
        ``MAX_OPEN_RECORDS`` for one queue ID); beyond it the answer is partial, and says so.
        On a log host, a line of no host it carries is not kept (see ``origins.notes``)."""
        if self.origins is not None and self.origins.origin(rec.host) is None:
            return
        qid = rec.queue_id or ""
        n = self._per_id.get(qid, 0)
        if len(self._records) >= MAX_HELD_RECORDS or (qid and n >= MAX_OPEN_RECORDS):
            self.lose(Unread(src.path, ReadProblem.TOO_LARGE))
            return
        self._per_id[qid] = n + 1
        self._records.append(rec)

    def _read_whole(self, chosen: Sequence[LogSource], query: Query) -> None:
        """Every line of the chosen sources, once: an ID read before keeps its earlier lines,
        and every ID read here counts as read whole."""
        before = set(self._fetched)
        seen: set[str] = set()
        for src in chosen:
            occurrences = _Occurrences(src.path)
            for rec in self.records(src, self.match_command(src, None, query)):
                if rec.queue_id is None:
                    if occurrences.first_time(rec, self._loose):
                        self._hold(src, rec)
                elif rec.queue_id not in before:
                    seen.add(rec.queue_id)
                    self._hold(src, rec)
        self._fetched |= seen

    def _pass1(
        self,
        src: LogSource,
        needles: Needles,
        query: Query,
        around: tuple[datetime, datetime] | None,
    ) -> set[str]:
        ids: set[str] = set()
        occurrences = _Occurrences(src.path)
        delivered = self._delivered_of(src)
        for rec in self.records(src, self.match_command(src, needles, query)):
            if delivered is not None and _delivery_line(rec):
                delivered = self._keep_delivered(src, delivered, rec)
            if around is not None and not around[0] <= rec.time <= around[1]:
                continue
            if not self._starts(rec):
                continue
            if rec.queue_id is not None:
                ids.add(rec.queue_id)
            elif occurrences.first_time(rec, self._loose):
                self._hold(src, rec)
        return ids

    def _pass1_offsets(
        self, src: LogSource, needles: Needles, around: tuple[datetime, datetime] | None
    ) -> dict[str, list[int]]:
        hits: dict[str, list[int]] = {}
        command = filter_offsets_command(self.command_path(src), needles, shown=src.path)
        occurrences = _Occurrences(src.path)
        delivered = self._delivered_of(src)
        for offset, rec in self.records_with_offsets(src, command):
            if delivered is not None and _delivery_line(rec):
                delivered = self._keep_delivered(src, delivered, rec)
            if around is not None and not around[0] <= rec.time <= around[1]:
                continue
            if not self._starts(rec):
                continue
            if rec.queue_id is None:
                if occurrences.first_time(rec, self._loose):
                    self._hold(src, rec)
            elif offset is not None:
                hits.setdefault(rec.queue_id, []).append(offset)
        return hits

    def _pass2_windows(self, src: LogSource, hits: dict[str, list[int]]) -> set[str]:
        """Pass 2 in windows around the hits; returns the IDs whose whole life was there."""
        wins = plan_windows([o for offs in hits.values() for o in offs], src.size)
        if not windows_worth_it(wins, src.size):
            return set()  # hits all over the file: one whole-file pass 2 is cheaper
        reads = window_reads(wins, src.size)
        # As in fetch_ids: pass 1 kept this source's delivery lines, the windows leave them out.
        delivered = self._delivered.get(src.path) if self._delivered is not None else None
        drop = delivered is not None
        found: list[tuple[int, Record]] = []
        command = window_ids_command(self.command_path(src), wins, sorted(hits), size=src.size,
                                     shown=src.path, drop_deliveries=drop)
        try:
            found.extend((i, r) for i, r in self._window_records(src, command, reads)
                         if not (drop and _delivery_line(r)))
        except WindowsUnread:
            return set()  # the file changed under the windows: every ID is read whole
        done = complete_in_windows(
            found, windows=len(wins), reaches_end=reads[-1].length is None,
            origins=self.origins,
        ) & hits.keys()
        # An ID not complete here is fetched whole: keep none of its window lines, so each
        # ID's lines come from one pass, in file order (a BSD second holds many lines).
        for _, r in found:
            if r.queue_id in done:
                self._hold(src, r)
        # Then pass 1's delivery lines of those IDs (each in the window of its ID's life).
        for r in delivered or ():
            if r.queue_id in done:
                self._hold(src, r)
        return done

    def _window_records(
        self, src: LogSource, command: Command, reads: Sequence[WindowRead]
    ) -> Iterator[tuple[int, Record]]:
        """Pass 2's records, each with the index of the window it was read in."""
        parser = self.parser(src)
        lines = self._stream(command, chunks=False)

        def numbered() -> Iterator[tuple[int, Record]]:
            for index, line in window_lines(lines, reads):
                for rec in parser.feed_all(line):
                    yield index, rec

        yield from self._guarded(src, numbered())

    def _delivered_of(self, src: LogSource) -> list[Record] | None:
        """Where pass 1 of this source keeps its delivery lines (None: no drop)."""
        if self._delivered is None:
            return None
        return self._delivered.setdefault(src.path, [])

    def _keep_delivered(
        self, src: LogSource, delivered: list[Record], rec: Record
    ) -> list[Record] | None:
        """Keep one of pass 1's delivery lines, within ``MAX_DELIVERED`` for the host: a
        host that prints more is not trusted with memory, and that source's pass 2 keeps its
        delivery lines instead (returns None: keep no more)."""
        if self._delivered is None or self._delivered_held >= MAX_DELIVERED:
            if self._delivered is not None:
                self._delivered_held -= len(delivered)
                self._delivered[src.path] = None
            delivered.clear()
            return None
        self._delivered_held += 1
        delivered.append(rec)
        return delivered

    def fetch_ids(self, queue_ids: Iterable[str], query: Query | None = None) -> None:
        """Every line of these queue IDs in every chosen source (a message can straddle a
        rotation); IDs fetched before are not fetched again.

        A source whose pass 1 kept its delivery lines (see :meth:`search`) is read without
        them, and pass 1's that this read would have printed are taken, after the others:
        each line once, and one recipient's lines in the order they were logged."""
        ids = sorted(set(queue_ids) - self._fetched)
        if not ids:
            return
        # An ID read whole before (in a window, or an earlier round) keeps the lines it has: a
        # line of it that also carries one of these IDs' strings (a reply, a Message-ID) is
        # printed again here and would be one event twice.
        before = set(self._fetched)
        self._fetched.update(ids)
        window = query or Query()
        wanted = set(ids)
        for src in self.plan(window):
            delivered = self._delivered.get(src.path) if self._delivered is not None else None
            drop = delivered is not None
            was = self._unread.get(src.path)
            for command in self.ids_commands(src, ids, window, drop_deliveries=drop):
                for rec in self.records(src, command):
                    # A line the host kept that reads as a delivery line here (NULs dropped
                    # before parsing) comes from pass 1, like the others.
                    if (drop and _delivery_line(rec)) or rec.queue_id in before:
                        continue
                    self._hold(src, rec)
            if delivered is None:
                continue
            now = self._unread.get(src.path)
            if now is not was and now is not None and now.problem is ReadProblem.VANISHED:
                continue  # gone before pass 2 read it: nothing of it is read
            # After this source's other lines: ``logs()`` sorts by time and keeps this order
            # within a second, so a recipient's attempts keep their order among themselves and
            # a `removed` of the same second still closes the life they join (a short queue ID
            # is never reused within one second). A line logged between the two passes is
            # missing here, as it would be from a search a moment earlier.
            for rec in delivered:
                if carries_id(rec.line, wanted) and rec.queue_id not in before:
                    self._hold(src, rec)

    def _stat_argv(self, files: Sequence[LogSource]) -> list[str]:
        return ["stat", "-L", "-c", "%s %Y %n", "--", *(self.command_path(s) for s in files)]

    def _stat(
        self, files: Sequence[LogSource], result: CommandResult | None = None
    ) -> dict[str, tuple[int, int]] | None:
        """``(size, mtime)`` of each file now (one ``stat``, or its ``result`` when it ran
        already); a file gone is absent; None when the host cannot say (no GNU ``stat``)."""
        if not files:
            return {}
        if result is None:
            result = self.session.run(self._stat_argv(files), sudo=False)
        if result.exit_code not in (0, 1):
            return None
        by_path = {self.command_path(s): s.path for s in files}
        out: dict[str, tuple[int, int]] = {}
        for line in result.stdout.decode("utf-8", "surrogateescape").split("\n"):
            size, _, rest = line.partition(" ")
            mtime, _, name = rest.partition(" ")
            if size.isdigit() and mtime.isdigit() and name in by_path:
                out[by_path[name]] = (int(size), int(mtime))
        out.update(self._stat_as_root([s for s in files if s.sudo and s.path not in out]))
        return out

    def _stat_as_root(self, files: Sequence[LogSource]) -> dict[str, tuple[int, int]]:
        """``(size, mtime)`` of root files in directories the login user cannot search, from
        ``sudo -n ls`` of those directories (the listing discovery used)."""
        programs = self.root.programs() if files else None
        if programs is None:
            return {}
        out: dict[str, tuple[int, int]] = {}
        for directory in sorted({posixpath.dirname(s.path) for s in files}):
            listed = list_as_root(self.session, programs, self.session.path(directory))
            for entry in listed:
                out[posixpath.join(directory, entry.name)] = (entry.size, int(entry.mtime))
        return {s.path: out[s.path] for s in files if s.path in out}

    def check_unchanged(self) -> tuple[str, ...]:
        """After reading: the chosen files that were replaced or cut meanwhile (logrotate).

        Compared with a ``stat`` taken when the sources were chosen: a file that is gone or
        shrank, or any file but the live log of its directory whose size or mtime changed, is
        no longer the file that was planned: its lines may have moved to another name, so the
        answer is partial (recorded as unread, ``rotated``). A host without GNU ``stat`` is not
        checked (a note says so).
        """
        before = self._before
        files = [s for s in (self._chosen or []) if s.kind is SourceKind.FILE and s.path in (before or {})]
        if before is None or not files:
            return ()
        now = self._stat(files)
        if now is None:
            self._notes.append("could not check whether the logs were rotated while read")
            return ()
        live = _newest_per_directory(files)
        changed = [
            s.path for s in files
            if s.path not in now or _replaced(before[s.path], now[s.path], live=s.path in live)
        ]
        for path in changed:
            self.lose(Unread(path, ReadProblem.ROTATED))
        return tuple(changed)

    def fetched(self, queue_id: str) -> bool:
        """Whether every line of this queue ID has been read already."""
        return queue_id in self._fetched

    def scan(
        self,
        query: Query,
        *,
        keep: Callable[[QueueGroup], bool],
        keep_reject: Callable[[Reject], bool],
        on_group: Callable[[QueueGroup], None] | None = None,
    ) -> HostSearch:
        """Read every line of the chosen sources, streaming: memory stays flat as logs grow.

        Each finished group goes to ``on_group`` (if given) and is kept only when ``keep``
        says so; each NOQUEUE reject is kept only when ``keep_reject`` says so (it may count
        it too).
        """
        kept: list[QueueGroup] = []

        def take(groups: Iterable[QueueGroup]) -> None:
            for g in groups:
                if on_group is not None:
                    on_group(g)
                if keep(g):
                    kept.append(g)

        asms, counts = self._feed(query, lambda name: Assembler(name, keep_reject=keep_reject),
                                  take)
        logs: dict[str, HostLog] = {}
        for name, a in asms.items():
            tail = a.finish()
            take(tail.groups)
            logs[name] = HostLog(name, (), tail.rejects)
        kept.sort(key=lambda g: (g.first_time, g.instance, g.queue_id))
        return self._scan_result(logs, kept, counts)

    def count(
        self,
        query: Query,
        *,
        on_count: Callable[[MessageCount], None],
        keep_reject: Callable[[Reject], bool],
    ) -> HostSearch:
        """:meth:`scan` for ``summary``: every finished life goes to ``on_count`` as a
        :class:`MessageCount`, and no line is kept (a message queued for days costs its
        recipients, not its retries)."""

        def take(done: Iterable[MessageCount]) -> None:
            for c in done:
                on_count(c)

        counters, counts = self._feed(
            query, lambda name: Counter(name, keep_reject=keep_reject), take
        )
        logs: dict[str, HostLog] = {}
        for name, c in counters.items():
            tail, rejects = c.finish()
            take(tail)
            logs[name] = HostLog(name, (), tuple(rejects))
        return self._scan_result(logs, [], counts)

    def _feed(
        self,
        query: Query,
        make: Callable[[str], A],
        take: Callable[[Any], None],
    ) -> tuple[dict[str, A], dict[str, int]]:
        """Every record of the chosen sources into one assembler per (origin) host, made by
        ``make``; what they finish goes to ``take``. Returns the assemblers and, on a log
        host, the records kept per origin."""
        asms: dict[str, A] = {}
        origins = self.origins
        if origins is None:
            asms[self.host.name] = make(self.host.name)
        counts: dict[str, int] = {}
        # The budget is looked at every few thousand records, not per record (the hot loop).
        every = max(1, min(4096, MAX_OPEN_RECORDS // 8))
        countdown, over = every, False
        asm = asms.get(self.host.name)
        for src in self.plan(query):
            for rec in self.records(src, self.match_command(src, None, query)):
                countdown -= 1
                if not countdown:
                    held = sum(a.held() for a in asms.values())
                    countdown, over = every, held >= MAX_OPEN_RECORDS
                if over and rec.queue_id is not None:
                    self.lose(Unread(src.path, ReadProblem.TOO_LARGE))
                    continue
                if origins is not None:
                    origin = origins.origin(rec.host)
                    if origin is None or (self.only is not None and origin not in self.only):
                        continue
                    counts[origin] = counts.get(origin, 0) + 1
                    asm = asms.get(origin)
                    if asm is None:
                        asm = asms[origin] = make(origin)
                assert asm is not None
                done = asm.add(rec)
                if done:
                    take(done)
        return asms, counts

    def _scan_result(
        self, logs: dict[str, HostLog], kept: list[QueueGroup], counts: dict[str, int]
    ) -> HostSearch:
        origins = self.origins
        if origins is None:
            log = logs[self.host.name]
            self._scanned = [HostLog(log.host, tuple(kept), log.rejects, self.stats())]
        else:
            by_origin: dict[str, list[QueueGroup]] = {}
            for g in kept:
                by_origin.setdefault(g.host, []).append(g)
            self._scanned = [
                HostLog(name, tuple(by_origin.get(name, ())),
                        logs[name].rejects if name in logs else (),
                        self._origin_stats(name, counts.get(name, 0)))
                for name in origins.origins()
            ]
        return self._result(self._scanned[0])

    # ------------------------------------------------------------------ results

    def stats(self) -> ParseStats:
        return sum_stats(p.stats for p in self._parsers)

    def log(self) -> HostLog:
        """The records read so far, assembled (each logged line once: see ``_Occurrences``).

        On a log host: its own lines only (see :meth:`logs`)."""
        return self.logs()[0]

    def logs(self) -> list[HostLog]:
        """The records read so far, assembled per origin host: the host itself first, then
        (on a log host) each host it carries, then the hosts made of its lines' names."""
        ordered = sorted(self._records, key=lambda r: r.time)
        origins = self.origins
        if origins is None:
            return [assemble(self.host.name, ordered, self.stats())]
        split: dict[str, list[Record]] = {}
        for rec in ordered:
            origin = origins.origin(rec.host, count=False)
            if origin is not None:
                split.setdefault(origin, []).append(rec)
        return [
            assemble(name, split.get(name, ()), self._origin_stats(name, len(split.get(name, ()))))
            for name in origins.origins()
        ]

    def _origin_stats(self, name: str, records: int) -> ParseStats:
        """One origin's share of the log host's read: the lines kept for it; the log host's
        own answer also counts the lines that belong to nobody (not understood, bad, blank)."""
        if name != self.host.name:
            return ParseStats(lines=records, parsed=records)
        s = self.stats()
        return ParseStats(records + s.unknown + s.bad + s.blank, records, s.unknown, s.bad,
                          s.blank, s.unknown_samples)

    def result(self) -> HostSearch:
        return self._result(self.log())

    def results(self) -> list[HostSearch]:
        """One answer per origin host (one, on an ordinary host); ``scan``'s when it ran."""
        logs = self._scanned if self._scanned is not None else self.logs()
        return [self._result(log) for log in logs]

    def unread(self) -> tuple[Unread, ...]:
        """The sources not read to their end so far."""
        return tuple(self._unread.values())

    def notes(self) -> tuple[str, ...]:
        """Discovery's notes, skipped sources and unread ones, in the order they arose (on a
        log host, then the lines that belong to none of its hosts)."""
        extra = self.origins.notes() if self.origins is not None else ()
        return (*self._notes, *extra)

    def _result(self, log: HostLog) -> HostSearch:
        sources = tuple(self._found.sources) if self._found is not None else ()
        via = self.host.name if log.host != self.host.name else None
        return HostSearch(
            log.host, log, sources, self.notes(), self.unread(), len(self.ran), via,
            coverage=self.coverage(),
        )


def _delivery_line(rec: Record) -> bool:
    """Whether pass 2 with ``drop_deliveries`` leaves this line out: the host's regex
    (``DELIVERY_LINE``) on the line as parsed. Only a delivery line (or one whose fields did
    not parse) can match it."""
    kind = rec.kind
    return (kind is Kind.DELIVERY or kind is Kind.OTHER) and (
        DELIVERY_LINE_RE.match(rec.line) is not None
    )


def _newest_per_directory(files: Sequence[LogSource]) -> set[str]:
    """The live log of each stream (rotation stem): its newest uncompressed file."""
    best: dict[str, LogSource] = {}
    for src in files:
        if src.compression is not Compression.NONE:
            continue
        directory = rotation_stem(src.path)
        old = best.get(directory)
        if old is None or (src.mtime or 0) > (old.mtime or 0):
            best[directory] = src
    return {s.path for s in best.values()}


def _replaced(before: tuple[int, int], now: tuple[int, int], *, live: bool) -> bool:
    """Whether a file is no longer the one planned (see ``check_unchanged``)."""
    if now[0] < before[0]:
        return True
    return False if live else now != before  # the live log grows and is touched


def read_problem(exc: TransportError) -> ReadProblem | None:
    """Why a source could not be read to its end, from the command's exit status; None when
    the failure is not about the source (a timeout, a lost connection, sudo)."""
    if exc.stage is not Stage.READ:
        return None
    if exc.exit_code == EXIT_DAMAGED:
        return ReadProblem.DAMAGED
    if exc.exit_code == EXIT_VANISHED:
        return ReadProblem.VANISHED
    return None


def sum_stats(all_stats: Iterable[ParseStats]) -> ParseStats:
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


#: Lines of messages still open (no ``removed`` yet) that one host's scan may hold (about
#: 140 MiB: a parsed line costs ~1.4 kB). A real log stays far below (a message's life is a
#: few dozen lines; a 30,000-recipient list message about 60k); a host that sends endless
#: lines of one queue ID would otherwise grow collector until its timeout.
MAX_OPEN_RECORDS = 100_000
#: Records one host's search may hold in all (about 420 MiB): the heaviest recipient of the
#: 1 GB benchmark fleet needs 214,336 on its busiest host (22,888 queue IDs), which 150,000
#: cut short (that search was partial).
MAX_HELD_RECORDS = 300_000
#: Pass 1's delivery lines one host's ``search --to`` may keep for pass 2 (see
#: ``HostSearcher.search``); beyond it, pass 2 keeps the delivery lines of the sources left.
MAX_DELIVERED = MAX_HELD_RECORDS


class _Occurrences:
    """Tells the n-th occurrence of a line in one command's output from a line read before.

    A line without a queue ID (a NOQUEUE reject) can be printed by several pass-1 commands
    of one host (two searches of a trace). Each logged line counts once, and every logged
    line counts: a client that repeats the same refused RCPT in one second logs identical
    lines, which are as many events. A line is known by its source, its text and how many
    identical lines came before it in the same output: identical lines pass the same filter
    together, so the n-th of them is the same line in every command that prints it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts: dict[str, int] = {}

    def first_time(self, rec: Record, seen: set[tuple[str, str, int]]) -> bool:
        n = self.counts.get(rec.line, 0)
        self.counts[rec.line] = n + 1
        key = (self.path, rec.line, n)
        if key in seen:
            return False
        seen.add(key)
        return True


def complete_in_windows(
    found: Sequence[tuple[int, Record]],
    *,
    windows: int,
    reaches_end: bool,
    origins: OriginResolver | None = None,
) -> set[str]:
    """Queue IDs whose whole life was read in pass 2's windows: proven, not assumed.

    A window is one contiguous stretch of the file, so a life whose first line and
    ``removed`` are in the *same* window has every line in it. A life seen in two windows
    may have lines in the gap between them (a slow delivery, a retry, a second recipient):
    it is read whole instead.

    On a log host (``origins``) each origin's lives are judged apart: an ID counts as
    complete only when it is complete for every host whose lines carry it.
    """
    if origins is not None:
        split: dict[str | None, list[tuple[int, Record]]] = {}
        for index, r in found:
            split.setdefault(origins.origin(r.host, count=False), []).append((index, r))
        split.pop(None, None)
        every: set[str] = set()
        broken: set[str] = set()
        for part in split.values():
            ids = {r.queue_id for _, r in part if r.queue_id is not None}
            every |= ids
            broken |= ids - complete_in_windows(part, windows=windows, reaches_end=reaches_end)
        return every - broken
    where: dict[str, set[int]] = {}
    for index, r in found:
        if r.queue_id is not None:
            where.setdefault(r.queue_id, set()).add(index)
    one = {q for q, ws in where.items() if len(ws) == 1}
    # Each window proves only the lives it holds (a parent's notice in one window says
    # nothing of a life of the same ID in another).
    per_window: dict[int, list[Record]] = {}
    for index, r in found:
        if r.queue_id in one:
            per_window.setdefault(index, []).append(r)
    done: set[str] = set()
    for index, records in per_window.items():
        done |= complete_lives(records, reaches_end=reaches_end and index == windows - 1)
    return done


def _windowable(src: LogSource) -> bool:
    """A plain file read by the login user: pass 2 can seek into windows of it (a root file
    reaches the login user through a pipe, where each window would cost a whole read)."""
    return (src.kind is SourceKind.FILE and src.compression is Compression.NONE
            and bool(src.size) and not src.sudo)


def complete_lives(records: Sequence[Record], *, reaches_end: bool = False) -> set[str]:
    """Queue IDs whose whole life is in ``records``: its first line and its ``removed``.

    A life starts with smtpd's client= or pickup's uid= line; one made by Postfix itself (a
    bounce notification, a local forward, named so by its parent's line here) starts with
    cleanup's message-id= line and names no client. A null sender alone proves nothing: a
    notification relayed from another host arrives through smtpd like any message. Without
    ``removed`` the message may still be queued: complete only when the records reach the
    end of the file.
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


def search_host(
    session: Session,
    query: Query,
    zone: tzinfo,
    now: datetime,
    *,
    on_bytes: ByteCounter | None = None,
    found: DiscoveryResult | None = None,
    drop_deliveries: bool = False,
) -> HostSearch:
    """``collector search`` on one host: two passes (or, without a fixed string, one
    streaming scan of every line), then parse and assemble locally. ``drop_deliveries``:
    see :meth:`HostSearcher.search` (for the rows of a search only)."""
    return search_reader(session, query, zone, now, on_bytes=on_bytes, found=found,
                         drop_deliveries=drop_deliveries)[0]


def search_reader(
    session: Session,
    query: Query,
    zone: tzinfo,
    now: datetime,
    *,
    on_bytes: ByteCounter | None = None,
    found: DiscoveryResult | None = None,
    reading: Reading | None = None,
    drop_deliveries: bool = False,
) -> list[HostSearch]:
    """:func:`search_host` on a host that may be a log host: one answer per origin host
    (see ``inventory.origins.Reading``)."""
    for attempt in (1, 2):
        searcher = HostSearcher(
            session, SearchContext(zone, now, on_bytes), found=found,
            origins=reading.resolver() if reading is not None else None,
        )  # fmt: skip
        searcher.only = reading.only if reading is not None else None
        if pass1_needles(query) is None:
            scanned = searcher.scan(
                query,
                keep=lambda g: group_selected(g, query),
                keep_reject=lambda r: reject_selected(r, query),
            )
        else:
            searcher.search(query, drop_deliveries=drop_deliveries)
            scanned = None
        rotated = searcher.check_unchanged()
        if not rotated or attempt == 2 or found is not None:
            if scanned is None:
                return searcher.results()
            return [
                dataclasses.replace(r, notes=searcher.notes(), unread=searcher.unread())
                for r in searcher.results()
            ]
        # Rotated while read: discover again (the moved file has its new name now) and read
        # once more; a second rotation in one search is reported as it is.
    raise AssertionError("unreachable")
