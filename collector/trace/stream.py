"""``collector follow``'s I/O: one reader thread per host read, one loop that traces live.

Each reader connects, discovers the host's logs as ``search`` does, and runs one command that
prints the Postfix lines logged from now on (``tail -n0 -F`` of each live file, following
rotation; ``journalctl -f`` for a journal; filtered on the host, see
``logs.commands.follow_command``). It parses them and hands the records, each with its origin
host (a log host's lines are split by origin, ``inventory.origins``), to the loop through an
:class:`Inbox` bounded in records (not batches): a slow consumer slows the reading (the lines
wait in the pipe, or on the host), never grows memory. A host that cannot be
reached, or that is lost, is said once; the reader tries again with backoff and says when the
host is back (the lines logged in between were not read).

The loop feeds :class:`~collector.trace.live.LiveTracer` and hands each completed trace on.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

from collector.errors import CollectorError, TransportError
from collector.inventory.origins import Reading, plan_readings
from collector.logs.commands import (
    FOLLOW_BEAT,
    FOLLOW_MARK,
    Command,
    follow_command,
    journal_match,
)
from collector.logs.discovery import DiscoveryResult, rotation_stem
from collector.logs.parse import LineParser, TimeContext
from collector.models import (
    Compression,
    Host,
    HostError,
    LogSource,
    Query,
    QueueGroup,
    Record,
    SourceKind,
    Stage,
    Trace,
)
from collector.search.fleet import InternalError, describe_failure, expected_errors
from collector.search.view import RootAccess, discover_host, source_path
from collector.trace.live import Awaited, Fates, LiveTracer
from collector.transport.base import Session

if TYPE_CHECKING:
    from collector.trace.follow import TraceRun

SessionOpener = Callable[[Host], Session]

#: Seconds between two tries to reach a host that is down: doubling from the first, at most
#: the last.
BACKOFF = (1.0, 60.0)
#: A host that sent nothing, not even its heartbeat, for this many heartbeats is lost.
SILENT_BEATS = 3
#: Records in flight between the readers and the loop (about 1 KB each): the readers wait
#: while the loop is this far behind.
_QUEUE_MAX = 10_000
_BATCH = 256  # records a reader hands over at once
_TICK = 0.5  # seconds between two looks at the clock
#: Seconds ``follow_fleet`` waits for every host to answer before ``on_ready`` runs anyway.
READY_WAIT = 15.0


@dataclass(frozen=True, slots=True)
class Event:
    """What a reader says: records arrived, or the host went down, came (back) up."""

    host: str
    records: tuple[tuple[str, Record], ...] = ()
    wall: float = 0.0
    down: HostError | None = None
    up: str | None = None  # what the reader says about it ("following N sources", ...)
    origins: tuple[str, ...] = ()  # the hosts this read reports
    bug: InternalError | None = None  # not a host problem: the run ends with it


class Inbox:
    """The readers' events on their way to the loop, bounded by the records they carry.

    ``put`` waits while ``max_records`` records are in flight; an event that carries no
    record (a host down or up) is never held back by them, and an event larger than the bound
    passes when nothing is in flight. Thread-safe: readers put, the loop gets.
    """

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self._events: deque[Event] = deque()
        self._records = 0
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._ready = threading.Condition(self._lock)

    @property
    def records(self) -> int:
        """Records in flight now."""
        return self._records

    def empty(self) -> bool:
        return not self._events

    def _fits(self, n: int) -> bool:
        return n == 0 or not self._events or self._records + n <= self.max_records

    def put(self, event: Event, timeout: float) -> bool:
        """Hand ``event`` on; False when there was no room for it within ``timeout``."""
        n = len(event.records)
        with self._room:
            if not self._room.wait_for(lambda: self._fits(n), timeout):
                return False
            self._events.append(event)
            self._records += n
            self._ready.notify()
            return True

    def get(self, timeout: float) -> Event | None:
        """The oldest event, or None when none came within ``timeout``."""
        with self._ready:
            if not self._ready.wait_for(lambda: bool(self._events), timeout):
                return None
            event = self._events.popleft()
            self._records -= len(event.records)
            self._room.notify_all()
            return event


@dataclass(frozen=True, slots=True)
class FollowResult:
    """How a follow ended: the hosts that were down at the end, the traces shown."""

    down: tuple[HostError, ...]
    shown: int
    lines: int


class _Reader:
    """One host's reading, in a thread of its own, until ``stop``."""

    def __init__(
        self,
        reading: Reading,
        open_session: SessionOpener,
        zone: tzinfo,
        out: Inbox,
        stop: threading.Event,
        beat: int,
    ) -> None:
        self.reading = reading
        self.host = reading.host
        self._open = open_session
        self._zone = zone
        self._out = out
        self._stop = stop
        self._beat = beat
        self.session: Session | None = None
        self.last_heard = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"follow-{self.host.name}",
                                       daemon=True)

    def _run(self) -> None:
        delay = BACKOFF[0]
        while not self._stop.is_set():
            try:
                self._follow()
                if self._stop.is_set():
                    return
                raise TransportError(self.host.name, Stage.READ, "the follow command ended")
            except expected_errors() as exc:  # this host's failure, said once
                if self._stop.is_set():
                    return
                self._put(Event(self.host.name, down=_failure(self.host.name, exc)))
            except Exception as exc:  # a bug in collector: not retried, the run ends with it
                bug = InternalError(self.host.name, f"{type(exc).__name__}: {exc}",
                                    traceback.format_exc())
                self._put(Event(self.host.name, bug=bug))
                return
            finally:
                self._close()
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, BACKOFF[1])
        return

    def _follow(self) -> None:
        session = self._open(self.host)
        self.session = session
        if self._stop.is_set():
            return
        root = RootAccess(session)
        found = discover_host(session, self.host, root)
        command, said = follow_plan(session, found, root, self._beat)
        resolver = self.reading.resolver()
        origins = resolver.origins() if resolver is not None else (self.host.name,)
        self._put(Event(self.host.name, up=said, origins=tuple(origins)))
        self.last_heard = time.monotonic()
        parser, hour = self._parser(), _hour()
        batch: list[tuple[str, Record]] = []
        only = self.reading.only
        lines = session.stream(list(command.argv), timeout=math.inf, sudo=False)
        try:
            for raw in lines:
                self.last_heard = time.monotonic()
                if self._stop.is_set():
                    return
                if raw == _MARK:
                    if batch:
                        self._put(Event(self.host.name, tuple(batch), time.time()))
                        batch = []
                    continue
                if _hour() != hour:  # year-less stamps are placed near now: keep now fresh
                    parser, hour = self._parser(), _hour()
                for rec in parser.feed_all(raw):
                    origin = self.host.name
                    if resolver is not None:
                        found_origin = resolver.origin(rec.host)
                        if found_origin is None or (only is not None and found_origin not in only):
                            continue
                        origin = found_origin
                    batch.append((origin, rec))
                if len(batch) >= _BATCH or (batch and self._out.empty()):
                    self._put(Event(self.host.name, tuple(batch), time.time()))
                    batch = []
        finally:
            close = getattr(lines, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def _parser(self) -> LineParser:
        return LineParser(TimeContext(tz=self._zone, reference=datetime.now(self._zone)))

    def _put(self, event: Event) -> None:
        while not self._stop.is_set():
            if self._out.put(event, timeout=_TICK):
                return
            # held back by the loop, not silent: the host's lines wait in the stream
            self.last_heard = time.monotonic()

    def _close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    def interrupt(self) -> None:
        """End the current connection from outside (a silent host, or the end): the reading
        thread sees its stream end."""
        session = self.session
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()


_MARK = FOLLOW_MARK.encode()


def _hour() -> int:
    return int(time.time() // 3600)


def _failure(host: str, exc: BaseException) -> HostError:
    if isinstance(exc, CollectorError | OSError):
        return describe_failure(host, exc)
    name = type(exc).__name__
    if name.endswith(("SSHException", "EOFError")):
        return describe_failure(host, exc)
    return HostError(host, Stage.READ, f"internal error: {name}: {exc}")


def _live_files(sources: Sequence[LogSource]) -> set[str]:
    """The file each stream (rotation stem) is written to now: its newest plain file."""
    best: dict[str, LogSource] = {}
    for src in sources:
        if src.kind is not SourceKind.FILE or src.compression is not Compression.NONE:
            continue
        stem = rotation_stem(src.path)
        old = best.get(stem)
        if old is None or (src.mtime or 0) > (old.mtime or 0):
            best[stem] = src
    return {s.path for s in best.values()}


def follow_plan(
    session: Session, found: DiscoveryResult, root: RootAccess, beat: int = FOLLOW_BEAT
) -> tuple[Command, str]:
    """The one command that follows a host's live logs, and what it follows in words.

    Raises :class:`TransportError` when the host has nothing followable.
    """
    host = session.host
    live = _live_files(found.sources)
    files: list[str] = []
    as_root: list[str] = []
    unreadable: list[str] = []
    journal, journal_dir, journal_root = "", "", False
    for src in found.sources:
        if src.kind is SourceKind.FILE and src.path in live:
            if src.sudo or (not src.readable and host.sudo):
                as_root.append(session.path(src.path))
            elif src.readable:
                files.append(session.path(src.path))
            else:
                unreadable.append(src.path)
        elif src.kind is SourceKind.JOURNAL and not journal:
            journal, journal_dir = journal_match(src), source_path(session, src)
            journal_root = src.sudo
    programs = root.programs() if (as_root or journal_root) else None
    if programs is None:  # the login user is root, or sudo is off: it reads them itself
        files += as_root
        as_root, journal_root = [], False
    if not files and not as_root and not journal:
        why = f" (not readable: {', '.join(unreadable)})" if unreadable else ""
        raise TransportError(host.name, Stage.DISCOVER, f"no log to follow{why}")
    patterns = sorted({i.instance + "/" for i in found.instances} | {"postfix/"})
    command = follow_command(files, patterns=patterns, journal=journal, journal_dir=journal_dir,
                             root_files=as_root, root=programs, journal_as_root=journal_root,
                             beat=beat)
    said = f"following {command.path}"
    if unreadable:
        said += f"; not readable, not followed: {', '.join(unreadable)}"
    return command, said


def follow_fleet(
    inventory: Sequence[Host],
    selected: Sequence[Host],
    tracer: LiveTracer,
    *,
    open_session: SessionOpener,
    zone_of: Callable[[Host], tzinfo],
    on_trace: Callable[[Trace], bool],
    on_problem: Callable[[str], None],
    stop: threading.Event,
    everything: bool,
    deadline: float | None = None,
    beat: int = FOLLOW_BEAT,
    on_ready: Callable[[], bool] | None = None,
    on_fates: Callable[[Fates], bool] | None = None,
) -> FollowResult:
    """Follow ``selected`` (each on its own or on its log host) until ``stop`` is set, the
    ``deadline`` (``time.monotonic()``) passes or ``on_trace`` answers True (done).

    ``on_problem`` gets one line per host going down and coming back. ``on_ready`` is called
    once every host has answered (followed, or down) or after :data:`READY_WAIT` seconds,
    while their lines wait (``wait`` reads the past then: the readers go on until
    :data:`_QUEUE_MAX` records are in flight, the rest waits in the stream); True ends the follow.
    ``on_fates``, when given, gets what the tracer makes known instead of ``on_trace``: each
    message done and, with the tracer's ``early``, recipients done before their message.
    """
    readings = plan_readings(inventory, selected, everything=everything)
    events = Inbox(_QUEUE_MAX)
    halt = threading.Event()
    readers = [_Reader(r, open_session, zone_of(r.host), events, halt, beat) for r in readings]
    state: dict[str, str] = {}  # host -> "up" | "down" | "lost" (down after being up)
    down: dict[str, HostError] = {}
    origins_of: dict[str, tuple[str, ...]] = {r.host.name: r.report for r in readings}
    shown = lines = 0
    for reader in readers:
        reader.thread.start()
    ready_by = time.monotonic() + READY_WAIT
    try:
        next_tick = time.monotonic()
        done = False
        while not done and not stop.is_set():
            now = time.monotonic()
            if on_ready is not None and (len(state) == len(readers) or now >= ready_by):
                ready, on_ready = on_ready, None
                if ready():
                    break
                continue
            if deadline is not None and now >= deadline:
                break
            wait = max(0.0, min(next_tick - now, (deadline - now) if deadline else _TICK))
            event = events.get(timeout=wait)
            if event is not None:
                if event.bug is not None:
                    raise event.bug
                lines += len(event.records)
                for origin, rec in event.records:
                    tracer.add(origin, rec, event.wall)
                if event.down is not None:
                    _went_down(event, state, down, tracer, origins_of, on_problem)
                elif event.up is not None:
                    _came_up(event, state, down, tracer, origins_of, on_problem)
            if time.monotonic() >= next_tick or event is None:
                next_tick = time.monotonic() + _TICK
                if on_fates is not None:
                    for fates in tracer.fates(time.time()):
                        shown += fates.complete
                        if on_fates(fates):
                            done = True
                            break
                else:
                    for trace in tracer.tick(time.time()):
                        shown += 1
                        if on_trace(trace):
                            done = True
                            break
                silent = time.monotonic() - beat * SILENT_BEATS - 5
                for reader in readers:
                    if state.get(reader.host.name) == "up" and reader.last_heard < silent:
                        reader.last_heard = time.monotonic()
                        reader.interrupt()  # its thread reports it lost, and reconnects
    finally:
        halt.set()
        for reader in readers:
            reader.interrupt()
        for reader in readers:
            reader.thread.join(timeout=2.0)
    return FollowResult(tuple(down.values()), shown, lines)


def _went_down(event: Event, state: dict[str, str], down: dict[str, HostError],
               tracer: LiveTracer, origins_of: dict[str, tuple[str, ...]],
               on_problem: Callable[[str], None]) -> None:
    name = event.host
    assert event.down is not None
    before = state.get(name)
    if before in ("down", "lost"):
        return  # said once
    state[name] = "lost" if before == "up" else "down"
    down[name] = event.down
    why = f"{event.down.where}: {event.down.message}"
    for origin in origins_of.get(name, (name,)):
        tracer.failed[origin] = why
    if before == "up":
        on_problem(f"{name}: {why} (lost; reconnecting)")
    else:
        on_problem(f"{name}: {why} (retrying)")


def _came_up(event: Event, state: dict[str, str], down: dict[str, HostError],
             tracer: LiveTracer, origins_of: dict[str, tuple[str, ...]],
             on_problem: Callable[[str], None]) -> None:
    name = event.host
    before = state.get(name)
    state[name] = "up"
    down.pop(name, None)
    if event.origins:
        origins_of[name] = tuple(dict.fromkeys((*origins_of.get(name, ()), *event.origins)))
    for origin in origins_of.get(name, (name,)):
        tracer.failed.pop(origin, None)
    if before == "lost":
        on_problem(f"{name}: back ({event.up}); the lines it logged while it was "
                   "unreachable were missed")
    elif before == "down":
        on_problem(f"{name}: reachable now ({event.up})")


@dataclass(frozen=True, slots=True)
class WaitResult:
    """How a wait ended: the traces of the message(s), whether every recipient reached a
    final outcome, whether any ended badly, and the hosts that failed."""

    traces: tuple[Trace, ...]
    done: bool
    failed: bool
    past: TraceRun | None
    down: tuple[HostError, ...]


def wait_fleet(
    inventory: Sequence[Host],
    selected: Sequence[Host],
    query: Query,
    tracer: LiveTracer,
    *,
    open_session: SessionOpener,
    zone_of: Callable[[Host], tzinfo],
    on_problem: Callable[[str], None],
    stop: threading.Event,
    everything: bool,
    timeout: float,
    beat: int = FOLLOW_BEAT,
) -> WaitResult:
    """``wait``: follow from now, read the past (as ``trace``), then follow until every
    recipient of the matching message(s) has a final outcome, or ``timeout`` seconds pass.

    The follow starts first, so that nothing logged while the past is read is missed.
    """
    from collector.trace.follow import trace_fleet, trace_matches

    predicate = trace_matches(query)
    awaited = Awaited(lambda t: any(predicate(g) for g in _all_groups(t)))
    past: list[TraceRun] = []

    def read_past() -> bool:
        run = trace_fleet(inventory, selected, query, open_session=open_session,
                          zone_of=zone_of, now=datetime.now().astimezone(),
                          max_skew=tracer.settings.max_skew)
        past.append(run)
        for trace in run.traces:
            awaited.take(trace)
        return awaited.done

    follow = follow_fleet(
        inventory, selected, tracer, open_session=open_session, zone_of=zone_of,
        on_trace=lambda t: awaited.take(t) and awaited.done, on_problem=on_problem,
        stop=stop, everything=everything, deadline=time.monotonic() + timeout, beat=beat,
        on_ready=read_past,
    )
    return WaitResult(tuple(awaited.traces), awaited.done, awaited.failed,
                      past[0] if past else None, follow.down)


def _all_groups(trace: Trace) -> Iterator[QueueGroup]:
    for hop in trace.hops:
        yield hop.group
    for child in trace.notifications:
        yield from _all_groups(child)
