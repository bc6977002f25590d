"""Live tracing: records as they are logged in, traces out as soon as every recipient's fate
is known. Pure: the caller (``trace.stream``) reads the hosts and says what the time is.

Each origin host's records are assembled as they arrive (one streaming ``Assembler`` each); a
group handed back (finished, or open longer than ``max_open`` of log time) joins a small pool
of finished groups, which is correlated across hosts. A trace leaves the pool, to be shown,
once nothing it waits for can still come:

* a hand-off it names (``queued as``, a notification) is in no finished group yet: it waits
  while that host's assembler holds the queue ID open (bounded by ``max_open``), or for
  ``hop_wait`` seconds when nobody holds it (a host not followed, lines lost);
* its first hop came from a fleet host (``client=``) and no parent was linked: it waits
  ``hop_wait`` seconds for the parent (whose ``removed`` may be logged a moment later). A
  NOQUEUE reject of a fleet host's delivery waits the same way for the attempt it refused
  (that host's bounce or deferral, logged after the reject), and once that attempt is seen,
  for as long as its queue file is open (a bounce beside recipients still queued): the
  reject is part of that message's trace, as ``trace`` has it, not a recipient's fate of
  its own (a temporary reject, 4xx, of an attempt in a file still queued is let go then: the
  file retries, its fate comes with it);
* a recipient of it was refused by a fleet host (``host X said: 5xx``) whose reject is not
  linked yet: it waits up to ``hop_wait`` seconds for that reject, which the other host's
  stream may bring a moment later (the path ends at the refusal, as ``trace`` has it). A
  host that logged nothing since the follow began, or is unreadable, is not waited for, nor
  the host itself (a refusal over loopback: its lines come in the same stream).

With ``early`` (``follow``'s lines), a recipient's fate is handed on as soon as it is final,
before the rest of its message: the traces still waiting are looked at too, and so are the
groups still open (in a queue) that logged a final status (``sent``, ``bounced``) at least
``grace`` ago, as their lines so far make them (``Assembler.peek``); each recipient is given
once, and the message's other recipients when it completes.

Memory is what is in flight: open groups (at most ``max_open`` old), the pool (traces waiting
on a hop) and, per origin, the keys of groups shown in the last ``recent`` of log time (their
late lines are dropped, not made a new group of). A log clock per origin host is the time of
its last line plus the wall time since it arrived: groups finish while the host is silent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from collector.logs.assemble import CLOSE_GRACE, Assembler
from collector.models import (
    GroupRef,
    Host,
    HostLog,
    Kind,
    Outcome,
    QueueGroup,
    RecipientOutcome,
    Record,
    Reject,
    Trace,
)
from collector.trace.correlate import (
    DEFAULT_SKEW,
    build_host_index,
    correlate_waiting,
    refused_by,
    refusing_host,
    resolve_peer,
)

#: ``--max-open``'s default: a message still open after a day of log time is shown as queued.
DEFAULT_MAX_OPEN = timedelta(hours=24)
#: How long (log time) a finished group takes more lines before it is handed on. Lines come
#: in as the host writes them: a few seconds hold every line Postfix logs after ``removed``.
LIVE_GRACE = timedelta(seconds=5)
#: Seconds a trace waits for a hop that nobody holds (see the module).
HOP_WAIT = 60.0

_GroupKey = tuple[str, str, str, datetime]  # host, instance, queue ID, first time
_OpenKey = tuple[str, str, str]  # origin host, instance, queue ID of a group still open
# a recipient's row: host, queue ID, address, original address, time of its fate
_RowKey = tuple[str, str, str, str | None, datetime | None]
_Row = tuple[Trace, RecipientOutcome]

#: The outcomes that end a recipient's way for ``wait``: delivered, or relayed out of the fleet.
SUCCESS = frozenset({Outcome.DELIVERED, Outcome.RELAYED_OUT})
#: ... and those that end it badly.
FAILURE = frozenset({Outcome.BOUNCED, Outcome.REJECTED, Outcome.EXPIRED, Outcome.DISCARDED})
#: A recipient at one of these is done: nothing logged later changes it.
FINAL = SUCCESS | FAILURE
# Postfix's status words after which a recipient may be done (the rest of its group waiting).
_FINAL_WORDS = frozenset({"sent", "bounced", "expired"})


@dataclass(frozen=True, slots=True)
class LiveSettings:
    max_open: timedelta = DEFAULT_MAX_OPEN
    max_skew: timedelta = DEFAULT_SKEW
    grace: timedelta = LIVE_GRACE
    hop_wait: float = HOP_WAIT
    recent: timedelta = CLOSE_GRACE
    #: hand on each recipient's fate as soon as it is final (``follow``'s lines), not only
    #: whole messages
    early: bool = False


@dataclass(frozen=True, slots=True)
class Fates:
    """What one look at the time made known of one message.

    ``rows``: the recipients (each with the trace it belongs to: the message's, or a
    notification's) whose fate is final and was not handed on before; when ``complete``,
    every row not handed on before, whatever its fate. ``trace`` is the message as far as
    it is known; it is the message's final trace when ``complete`` (handed on once).
    """

    trace: Trace
    rows: tuple[_Row, ...]
    complete: bool


@dataclass(slots=True)
class _Clock:
    last: datetime  # the latest time a line of the host carried
    wall: float  # when that line arrived (seconds, the caller's clock)

    def now(self, wall: float) -> datetime:
        return self.last + timedelta(seconds=max(0.0, wall - self.wall))


def _key(g: QueueGroup) -> _GroupKey:
    return (g.host, g.instance, g.queue_id, g.first_time)


def _groups(trace: Trace) -> Iterable[QueueGroup]:
    for hop in trace.hops:
        yield hop.group
    for child in trace.notifications:
        yield from _groups(child)


class LiveTracer:
    """Records in (per origin host), completed traces out, in the order they complete.

    ``show`` picks the traces to hand back (the selectors; whole traces, so a message that
    matches only on a later hop is shown); the others are dropped all the same.
    """

    def __init__(
        self,
        inventory: Sequence[Host],
        show: Callable[[Trace], bool] = lambda _t: True,
        settings: LiveSettings = LiveSettings(),
    ) -> None:
        self._index = build_host_index(list(inventory))
        self._show = show
        self.settings = settings
        self._asms: dict[str, Assembler] = {}
        self._clocks: dict[str, _Clock] = {}
        self._pool: dict[_GroupKey, tuple[QueueGroup, float]] = {}
        self._rejects: dict[Reject, float] = {}
        self._recent: dict[tuple[str, str, str], datetime] = {}  # shown: drop late lines
        # open longer than max_open, shown as queued: its later lines (retries) are dropped
        # while it goes on logging (until its last line + max_open), not made a new group of
        self._forgotten: dict[_OpenKey, datetime] = {}
        # (host, queue ID) of traces shown without their parent, kept ``max_open``: the
        # parent does not wait for them
        self._shown: dict[tuple[str, str], datetime] = {}
        self._since: dict[tuple[str, str, datetime], float] = {}  # trace -> waiting since
        self._dirty = False
        self._next_look: float | None = None  # when a waiting trace's hop_wait runs out
        # early: open groups that logged a final status -> when (wall); their peeks, by the
        # number of lines they were made of; the rows handed on before their message completed
        self._finals: dict[_OpenKey, float] = {}
        self._peeks: dict[_OpenKey, tuple[int, QueueGroup]] = {}
        self._given: dict[_RowKey, datetime] = {}
        # attempts refused by a fleet host (``host X said:``), by (X, recipient): when, and
        # the queue file that made it; kept hop_wait + max_skew of the sender's log time
        self._attempts: dict[tuple[str, str], list[tuple[datetime, GroupRef]]] = {}
        self._refused: dict[Reject, GroupRef] = {}  # a pooled reject -> the attempt's file
        self.failed: dict[str, str] = {}  # hosts unreadable now -> why (for the notes)
        self.dropped = 0  # late lines of groups already shown

    # ------------------------------------------------------------------ in

    def add(self, origin: str, record: Record, wall: float) -> None:
        """One record of ``origin`` that arrived at ``wall``."""
        clock = self._clocks.get(origin)
        if clock is None:
            self._clocks[origin] = _Clock(record.time, wall)
        elif record.time >= clock.last:
            clock.last, clock.wall = record.time, wall
        qid = record.queue_id
        if qid is not None and self._forgotten and self._forget(origin, record, qid):
            self.dropped += 1
            return
        if qid is not None and self._recent:
            until = self._recent.get((origin, record.instance, qid))
            if until is not None and record.time <= until and record.kind not in (
                Kind.CLIENT, Kind.PICKUP
            ):
                self.dropped += 1
                return
        asm = self._asms.get(origin)
        if asm is None:
            asm = self._asms[origin] = Assembler(
                origin, keep_reject=self._keep_reject(wall), grace=self.settings.grace
            )
        self._take(asm.add(record), wall)
        if qid is not None and record.kind is Kind.DELIVERY:
            self._note_refusal(origin, record, qid)
        if qid is not None and self.settings.early and (
            (record.kind is Kind.DELIVERY and record.fields.get("status") in _FINAL_WORDS)
            or record.kind is Kind.REJECT
        ):
            self._finals.setdefault((origin, record.instance, qid), wall)

    def _note_refusal(self, origin: str, record: Record, qid: str) -> None:
        """Remember a delivery attempt that a fleet host refused (its reject may be in the
        pool, waiting for it: :meth:`_attempt_of`)."""
        fields = record.fields
        refuser = refusing_host(self._index, origin, fields.get("status", ""), record.text,
                                fields.get("relay"))
        to = fields.get("to")
        if refuser is None or refuser == origin or not to:
            return
        self._attempts.setdefault((refuser, to), []).append(
            (record.time, GroupRef(origin, qid)))
        self._dirty = True  # a reject waiting for it is matched at the next look

    def _forget(self, origin: str, record: Record, qid: str) -> bool:
        """Whether ``record`` is a later line of a message forgotten (``max_open``)."""
        key = (origin, record.instance, qid)
        until = self._forgotten.get(key)
        if until is None:
            return False
        if record.kind in (Kind.CLIENT, Kind.PICKUP) or record.kind is Kind.REMOVED:
            del self._forgotten[key]  # a new life of the ID / the end of the old one
            return record.kind is Kind.REMOVED
        self._forgotten[key] = max(until, record.time + self.settings.max_open)
        return True

    def _keep_reject(self, wall: float) -> Callable[[Reject], bool]:
        def keep(rej: Reject) -> bool:
            self._rejects[rej] = wall  # into the pool now; the assembler keeps none
            self._dirty = True
            return False

        return keep

    def _take(self, groups: Iterable[QueueGroup], wall: float) -> None:
        for g in groups:
            self._pool[_key(g)] = (g, wall)
            self._dirty = True

    # ------------------------------------------------------------------ out

    def tick(self, wall: float) -> list[Trace]:
        """The time is ``wall``: finish what the hosts' silence finishes; the traces done."""
        return [f.trace for f in self.fates(wall) if f.complete]

    def fates(self, wall: float) -> list[Fates]:
        """The time is ``wall``: finish what the hosts' silence finishes; what is known now
        (messages done, and with ``early`` recipients done before their message)."""
        for origin, asm in self._asms.items():
            now = self._clocks[origin].now(wall)
            self._take(asm.advance(now), wall)
            forgotten = asm.expire(now - self.settings.max_open)
            for g in forgotten:
                self._forgotten[(origin, g.instance, g.queue_id)] = (
                    g.last_time + self.settings.max_open)
            self._take(forgotten, wall)
        if self._recent or self._shown or self._given or self._forgotten or self._attempts:
            self._prune_recent(wall)
        peeks = self._ripe_peeks(wall) if self._finals else []
        if not self._dirty and (self._next_look is None or wall < self._next_look):
            return []
        return self._settle(wall, peeks)

    def holds(self) -> int:
        """Records and groups held now (what memory grows with)."""
        return (sum(a.held() for a in self._asms.values()) + len(self._pool)
                + len(self._rejects) + len(self._recent) + len(self._shown)
                + len(self._finals) + len(self._given) + len(self._forgotten)
                + sum(len(v) for v in self._attempts.values()) + len(self._refused))

    def open_messages(self) -> int:
        """Queue files open now on the hosts followed (not yet finished)."""
        return sum(a.open_count() for a in self._asms.values())

    def _ripe_peeks(self, wall: float) -> list[QueueGroup]:
        """The open groups that logged a final status ``grace`` ago or more, as their lines
        so far make them (rebuilt when they got more lines); forgets the ones finished."""
        ripe_after = self.settings.grace.total_seconds()
        out: list[QueueGroup] = []
        for key, since in list(self._finals.items()):
            origin, instance, qid = key
            asm = self._asms[origin]
            n = asm.open_lines(instance, qid)
            if n is None:  # finished (or expired): it comes through the pool
                del self._finals[key]
                self._peeks.pop(key, None)
                continue
            if wall - since < ripe_after:
                continue
            cached = self._peeks.get(key)
            if cached is None or cached[0] != n:
                group = asm.peek(instance, qid)
                assert group is not None  # open, as open_lines said
                cached = self._peeks[key] = (n, group)
                self._dirty = True
            out.append(cached[1])
        return out

    def _settle(self, wall: float, peeks: Sequence[QueueGroup] = ()) -> list[Fates]:
        self._dirty = False
        self._next_look = None
        by_host: dict[str, list[QueueGroup]] = {}
        for g, _ in self._pool.values():
            by_host.setdefault(g.host, []).append(g)
        for g in peeks:
            by_host.setdefault(g.host, []).append(g)
        peeked = {id(g) for g in peeks}
        rejects: dict[str, list[Reject]] = {}
        for rej in self._rejects:
            rejects.setdefault(rej.host, []).append(rej)
        logs = [
            HostLog(h, tuple(sorted(by_host.get(h, ()), key=lambda g: g.first_time)),
                    tuple(rejects.get(h, ())))
            for h in sorted({*by_host, *rejects})
        ]
        done: list[Fates] = []
        since_kept: dict[tuple[str, str, datetime], float] = {}
        early = self.settings.early

        def patient(key: tuple[str, str, datetime]) -> bool:
            """Whether the trace ``key`` still waits (its hop_wait not run out)."""
            since = self._since.get(key, wall)
            # kept when run out too: a trace waits hop_wait once, not again at its next look
            since_kept[key] = since
            if wall - since >= self.settings.hop_wait:
                return False
            look = since + self.settings.hop_wait
            self._next_look = look if self._next_look is None else min(self._next_look, look)
            return True

        for w in correlate_waiting(logs, self._index, max_skew=self.settings.max_skew,
                                   failed_hosts=self.failed):
            first = w.trace.hops[0]
            key = (first.host, first.queue_id, w.trace.first_seen)
            # A hand-off to a group shown already (a delay notice, shown while its parent
            # was still queued) is not waited for.
            wanted = [r for r in w.wanted if (r.host, r.queue_id) not in self._shown]
            upstream = w.upstream or self._refused_from(w.trace)
            if upstream is not None and w.upstream is None and self._attempt_of(w.trace):
                # the attempt it refused is in a queue file still open: the recipient's fate
                # is that message's. A final refusal waits to join its trace (once per
                # recipient); a temporary one (4xx) is not kept: the file retries, and each
                # retry would be refused and kept again as long as it stays queued
                if w.trace.hops[0].group.rejects[0].response.startswith("4"):
                    self._release(w.trace)
                continue
            unjoined = self._unjoined(w.trace, wall)
            if unjoined and not patient(key):
                unjoined = set()  # the refusal did not come: shown without it
            open_ = bool(peeked) and any(id(g) in peeked for g in _groups(w.trace))
            if open_ or any(self._held(ref) for ref in wanted):
                # a hop is still being logged; its first hop may yet prove a later hop of a
                # message whose parent is late (then hop_wait runs out first)
                if early and (upstream is None or not patient(key)):
                    self._give(w.trace, done, unjoined)
                continue
            if (wanted or upstream is not None or unjoined) and patient(key):
                if early and upstream is None:
                    self._give(w.trace, done, unjoined)
                continue
            self._release(w.trace)
            if first.group.origin == "local" or w.upstream is not None:
                # shown before its parent (a notice sent while the message waits in a
                # queue): the parent, when it completes, does not wait for it
                self._shown[(first.host, first.queue_id)] = (
                    w.trace.last_seen + self.settings.max_open)
            rows = tuple(row for row in _rows(w.trace)
                         if self._given.pop(_row_key(row[1]), None) is None)
            if self._show(w.trace):
                done.append(Fates(w.trace, rows, True))
        self._since = since_kept
        return done

    def _give(self, trace: Trace, done: list[Fates], hold: set[_RowKey] | None = None
              ) -> None:
        """Hand on the recipients of a message not complete yet whose fate is final (but
        the ones in ``hold``: their path is not known yet)."""
        rows = tuple(row for row in _rows(trace)
                     if row[1].outcome in FINAL and (k := _row_key(row[1])) not in self._given
                     and not (hold and k in hold))
        if rows and self._show(trace):
            # kept until the message completes; at most twice --max-open of log time
            until = trace.last_seen + 2 * self.settings.max_open
            for _, r in rows:
                self._given[_row_key(r)] = until
            done.append(Fates(trace, rows, False))

    def _waits_for(self, host: str | None) -> bool:
        """Whether a line of ``host`` is worth waiting for: followed, logging, readable."""
        return host is not None and host in self._clocks and host not in self.failed

    def _refused_from(self, trace: Trace) -> str | None:
        """The fleet host whose delivery a NOQUEUE reject (the trace's one hop) refused:
        that host logs the bounce or deferral the reject joins, a moment after it."""
        first = trace.hops[0].group
        if first.queue_id != "NOQUEUE" or len(trace.hops) != 1 or not first.rejects:
            return None
        client = first.rejects[0].client
        if not client:
            return None
        peer = resolve_peer(self._index, client, first.host)
        # a client on this host itself (loopback) is no other stream's line to wait for
        return peer if peer != first.host and self._waits_for(peer) else None

    def _attempt_of(self, trace: Trace) -> GroupRef | None:
        """The queue file still open whose delivery attempt a NOQUEUE reject refused (its
        sender's bounce or deferral quoting it, logged within ``max_skew``)."""
        rej = trace.hops[0].group.rejects[0]
        ref = self._refused.get(rej)
        if ref is None:
            for time, seen in self._attempts.get((rej.host, rej.recipient or ""), ()):
                if abs(time - rej.time) <= self.settings.max_skew:
                    ref = self._refused[rej] = seen  # kept while the reject is pooled
                    break
        return ref if ref is not None and self._held(ref) else None

    def _unjoined(self, trace: Trace, wall: float) -> set[_RowKey]:
        """The recipients refused by a fleet host whose reject is not linked (yet), less than
        hop_wait ago (the sender's log time: a queue file that stayed open long after the
        refusal does not wait for it again when it completes)."""
        out: set[_RowKey] = set()
        wait = timedelta(seconds=self.settings.hop_wait)
        for _, r in _rows(trace):
            if r.attempt is None:
                continue
            clock = self._clocks.get(r.host)
            if clock is not None and clock.now(wall) - r.attempt.time >= wait:
                continue
            refuser = refused_by(self._index, r.host, r.attempt)
            if refuser == r.host or not self._waits_for(refuser):
                continue
            last = r.path[-1] if r.path else None
            if last is None or last == GroupRef(r.host, r.queue_id) or last.host != refuser:
                out.add(_row_key(r))
        return out

    def _held(self, ref: GroupRef) -> bool:
        asm = self._asms.get(ref.host)
        return asm is not None and ref.host not in self.failed and asm.holds(ref.queue_id)

    def _release(self, trace: Trace) -> None:
        for g in _groups(trace):
            self._pool.pop(_key(g), None)
            for rej in g.rejects:
                self._rejects.pop(rej, None)
                self._refused.pop(rej, None)
            if g.queue_id != "NOQUEUE":
                until = g.last_time + self.settings.recent
                self._recent[(g.host, g.instance, g.queue_id)] = until

    def _prune_recent(self, wall: float) -> None:
        old = [k for k, until in self._recent.items()
               if (c := self._clocks.get(k[0])) is None or c.now(wall) > until]
        for k in old:
            del self._recent[k]
        gone = [k for k, until in self._shown.items()
                if (c := self._clocks.get(k[0])) is None or c.now(wall) > until]
        for ref in gone:
            del self._shown[ref]
        stale = [k for k, until in self._given.items()
                 if (c := self._clocks.get(k[0])) is None or c.now(wall) > until]
        for row in stale:
            del self._given[row]
        quiet = [k for k, until in self._forgotten.items()
                 if (c := self._clocks.get(k[0])) is None or c.now(wall) > until]
        for key in quiet:
            del self._forgotten[key]
        keep = self.settings.max_skew + timedelta(seconds=self.settings.hop_wait)
        for pair, seen in list(self._attempts.items()):
            # an attempt's reject comes (at most) max_skew and hop_wait after it
            left = [(t, ref) for t, ref in seen
                    if (c := self._clocks.get(ref.host)) is not None and c.now(wall) <= t + keep]
            if left:
                self._attempts[pair] = left
            else:
                del self._attempts[pair]


def _rows(trace: Trace) -> Iterable[_Row]:
    """Each recipient of a trace, then its notifications' (the order ``follow`` prints)."""
    for r in trace.recipients:
        yield trace, r
    for child in trace.notifications:
        yield from _rows(child)


def _row_key(r: RecipientOutcome) -> _RowKey:
    return (r.host, r.queue_id, r.address, r.orig_address, r.time)


class Awaited:
    """What ``wait`` waits for: every recipient of the matching message(s) at a final outcome.

    The traces of the past come first (the message may be done, or on its way), then live
    ones: a live trace belongs when it matches, or when one of its hops is a queue file where
    a recipient was still open (the rest of a message that was in flight).
    """

    def __init__(self, matches: Callable[[Trace], bool]) -> None:
        self._matches = matches
        self.traces: list[Trace] = []
        self._fates: dict[str, Outcome] = {}  # recipient (as first addressed) -> outcome
        self._open_at: set[GroupRef] = set()

    def take(self, trace: Trace) -> bool:
        """Take a trace if it belongs; whether it did."""
        refs = {GroupRef(h.host, h.queue_id) for h in trace.hops}
        if not self._matches(trace) and not refs & self._open_at:
            return False
        self.traces.append(trace)
        for r in trace.recipients:
            self._fates[r.orig_address or r.address] = r.outcome
            if r.outcome not in SUCCESS | FAILURE:
                self._open_at.add(GroupRef(r.host, r.queue_id))
                self._open_at.update(r.path)
        return True

    @property
    def done(self) -> bool:
        return bool(self._fates) and all(o in SUCCESS | FAILURE for o in self._fates.values())

    @property
    def failed(self) -> bool:
        """Whether any recipient ended badly (bounced, rejected, expired, discarded)."""
        return any(o in FAILURE for o in self._fates.values())
