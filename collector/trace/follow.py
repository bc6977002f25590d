"""The trace retrieval loop: search, then follow every hand-off to a fixed point.

Round 0 runs the query's two passes on the selected hosts. Each later round asks correlate
which (host, queue ID) groups the links point at but nobody has fetched yet (forward), and
which fleet hosts handed over a message whose parent is still unknown (backward), then fetches
exactly those, all hosts in parallel, one round per hop depth, until nothing new turns up or
the depth limit is reached. Each host keeps one session for the whole loop, used by one thread
at a time.

A host whose lines are on a log host (``collects``) is searched there: every request for it
goes to its log host, which is read once per round for all the hosts it carries.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from collector.inventory.origins import OriginResolver, carried_by, reader_of
from collector.logs.select import (
    group_matches,
    normalize_message_id,
    row_matches,
    rows_of_group,
)
from collector.models import (
    Host,
    HostError,
    HostLog,
    HostResult,
    Query,
    QueueGroup,
    RefusalHint,
    Trace,
)
from collector.search.fleet import run_on_hosts
from collector.search.host import HostSearch, HostSearcher, SearchContext
from collector.trace.correlate import (
    DEFAULT_SKEW,
    Leads,
    build_host_index,
    correlate,
    leads,
    select_traces,
)
from collector.transport.base import Session

SessionOpener = Callable[[Host], Session]

#: Hop depth explored after the first search (each round is one hop further).
DEFAULT_DEPTH = 12


@dataclass(slots=True)
class _HostState:
    host: Host
    searcher: HostSearcher | None = None
    error: HostError | None = None
    wanted_ids: set[str] = field(default_factory=set)
    # (what to look for, the time span it must be logged in), and what was already asked
    wanted_searches: list[tuple[Query, tuple[datetime, datetime]]] = field(default_factory=list)
    asked: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class TraceRun:
    """What a trace found, and what it cost."""

    traces: tuple[Trace, ...]
    results: tuple[HostResult[HostSearch], ...]  # every host touched, in inventory order
    rounds: int
    round_trips: int  # commands run over all hosts (each one SSH exec round trip)
    notes: tuple[str, ...]


def trace_matches(query: Query) -> Callable[[QueueGroup], bool]:
    """The predicate a group must meet for its whole trace to be shown."""

    def matches(group: QueueGroup) -> bool:
        if not group_matches(group, query):
            return False
        if query.recipients or query.statuses or query.since or query.until:
            return any(row_matches(r, query) for r in rows_of_group(group))
        return True

    return matches


def trace_fleet(
    inventory_hosts: Sequence[Host],
    start_hosts: Sequence[Host],
    query: Query,
    *,
    open_session: SessionOpener,
    zone_of: Callable[[Host], tzinfo],
    now: datetime,
    max_skew: timedelta = DEFAULT_SKEW,
    depth: int = DEFAULT_DEPTH,
    workers: int = 16,
    on_round: Callable[[int, int], None] | None = None,
) -> TraceRun:
    """Search ``start_hosts`` for ``query`` and follow the message over ``inventory_hosts``."""
    readers = [h for h in inventory_hosts if h.via is None]
    states = {h.name: _HostState(h) for h in readers}
    order = [h.name for h in readers]
    route = {h.name: reader_of(h) for h in inventory_hosts}
    index = build_host_index(list(inventory_hosts))
    notes: list[str] = []
    everything = {h.name for h in start_hosts} >= set(route)
    starts: dict[str, set[str]] = {}
    for h in start_hosts:
        starts.setdefault(reader_of(h), set()).add(h.name)

    def ensure(state: _HostState) -> HostSearcher:
        if state.searcher is None:
            host = state.host
            origins = OriginResolver(carried_by(inventory_hosts, host)) if host.collects else None
            session = open_session(host)
            state.searcher = HostSearcher(
                session, SearchContext(zone_of(host), now), origins=origins
            )
        return state.searcher

    def first_round(host: Host) -> None:
        searcher = ensure(states[host.name])
        searcher.plan(query)  # the start hosts read only the sources of the query's window
        searcher.only = None if everything else frozenset(starts[host.name])
        searcher.search(query)
        searcher.only = None  # later rounds follow the message to any host here

    def follow(host: Host) -> None:
        state = states[host.name]
        searcher = ensure(state)
        for search, span in state.wanted_searches:
            state.wanted_ids |= searcher.search(search, span)
        state.wanted_searches.clear()
        searcher.fetch_ids(state.wanted_ids)
        state.wanted_ids.clear()

    # Message-IDs round 0 looked for on the start hosts already (see _speculate)
    speculated = {normalize_message_id(t) for t in (*query.message_ids, *query.terms)}
    try:
        _run_round(states, [states[n].host for n in order if n in starts], first_round, workers)
        rounds = 1
        while rounds <= depth:
            logs = _logs(states, order)
            route.update((log.host, r) for r, log in logs if log.host not in route)
            found = leads([log for _, log in logs], index, max_skew)
            work = _plan_next(states, _routed(found, route), max_skew)
            if not work:
                break
            work |= _speculate(states, order, logs, speculated, max_skew)
            if on_round is not None:
                on_round(rounds, len(work))
            _run_round(states, [states[n].host for n in order if n in work], follow, workers)
            rounds += 1
        else:
            notes.append(f"stopped following after {depth} rounds (depth limit)")
        _check_rotations(states, order, workers)
    finally:
        _close(states)
    return _finish(states, inventory_hosts, route, query, max_skew, rounds, notes)


def _routed(found: Leads, route: dict[str, str]) -> Leads:
    """The leads, each addressed to the host that reads the lines of the host it names."""
    return dataclasses.replace(
        found,
        pending=frozenset(
            dataclasses.replace(r, host=route.get(r.host, r.host)) for r in found.pending
        ),
        backward=tuple(
            dataclasses.replace(b, host=route.get(b.host, b.host)) for b in found.backward
        ),
        refusals=tuple(
            dataclasses.replace(r, host=route.get(r.host, r.host)) for r in found.refusals
        ),
    )


def _check_rotations(states: dict[str, _HostState], order: Sequence[str], workers: int) -> None:
    """Every host read: was a log rotated meanwhile? Then that host's answer is partial."""

    def check(host: Host) -> None:
        searcher = states[host.name].searcher
        if searcher is not None:
            searcher.check_unchanged()

    read = [states[n].host for n in order if states[n].searcher is not None]
    _run_round(states, read, check, workers)


def _close(states: dict[str, _HostState]) -> None:
    for state in states.values():
        if state.searcher is not None:
            with contextlib.suppress(Exception):  # closing must not hide the outcome
                state.searcher.session.close()


def _finish(
    states: dict[str, _HostState],
    inventory_hosts: Sequence[Host],
    route: dict[str, str],
    query: Query,
    max_skew: timedelta,
    rounds: int,
    notes: Sequence[str],
) -> TraceRun:
    """Correlate everything the rounds fetched and keep the traces the query asks for.

    Every host read on a log host that was read is in the results (with ``via``); when a
    log host failed, so did each host it carries.
    """
    by_host: dict[str, HostSearch] = {}
    trips = 0
    for state in states.values():
        if state.searcher is not None:
            trips += len(state.searcher.ran)
            by_host.update((r.host, r) for r in state.searcher.results())
    logs = [r.log for r in by_host.values()]
    errors: dict[str, HostError] = {}
    for name, reader in route.items():
        error = states[reader].error
        if error is not None:
            errors[name] = dataclasses.replace(
                error, host=name, via=reader if name != reader else None
            )
    failed = {n: f"{e.where}: {e.message}" for n, e in errors.items()}
    index = build_host_index(list(inventory_hosts), logs)
    traces = correlate(logs, index, max_skew=max_skew, failed_hosts=failed)
    chosen = select_traces(traces, trace_matches(query))
    order = [h.name for h in inventory_hosts] + [n for n in by_host if n not in route]
    order += [n for n in route if n not in order]
    results = tuple(
        HostResult(n, value=by_host.get(n), error=errors.get(n))
        for n in order
        if n in by_host or n in errors
    )
    return TraceRun(tuple(chosen), results, rounds, trips, tuple(notes))


def _logs(states: dict[str, _HostState], order: Sequence[str]) -> list[tuple[str, HostLog]]:
    """Every log read so far, per origin host, with the host it was read on."""
    return [
        (n, log) for n in order if (s := states[n].searcher) is not None for log in s.logs()
    ]


def _plan_next(states: dict[str, _HostState], found: Leads, max_skew: timedelta) -> set[str]:
    """Decide what each host must fetch next; returns the hosts with work."""
    work: set[str] = set()
    for ref in found.pending:
        state = states.get(ref.host)
        if state is None or state.error is not None:
            continue
        if state.searcher is not None and state.searcher.fetched(ref.queue_id):
            continue
        state.wanted_ids.add(ref.queue_id)
        work.add(ref.host)
    for hint in found.backward:
        # The parent's delivery line names the child: "... queued as CHILDID)".
        span = (hint.time - max_skew, hint.time + max_skew)
        if _ask(states, hint.host, Query(terms=(f"queued as {hint.child.queue_id}",)), span):
            work.add(hint.host)
    for hint in found.filtered:
        # A content filter re-injected the message on the same host without naming the new
        # queue ID: that host logged the copy under the same message-id.
        span = (hint.time - max_skew, hint.time + max_skew)
        if hint.message_id and _ask(states, hint.host, Query(message_ids=(hint.message_id,)),
                                    span):
            work.add(hint.host)
    work |= _ask_refusals(states, found.refusals, max_skew)
    return work


#: New Message-IDs a round may look for on every host (a query that finds more is a busy
#: address: following its links is cheaper than a search per Message-ID everywhere).
SPECULATE_IDS = 8
#: How long after its last known line a message's next hops are looked for by Message-ID.
SPECULATE_AFTER = timedelta(hours=1)


def _speculate(
    states: dict[str, _HostState],
    order: Sequence[str],
    logs: Sequence[tuple[str, HostLog]],
    asked: set[str],
    max_skew: timedelta,
) -> set[str]:
    """Each Message-ID met for the first time is looked for on every host that holds no group
    of it yet, in the next round: each hop's cleanup logged it, so a message's hops are found
    in one round, not one round each (a 4-hop ``trace HOST:QUEUEID``: 2 rounds, not 4; a
    bounce notification: one more).

    Only a shortcut: the links are followed as ever, and a hop later than
    :data:`SPECULATE_AFTER` is found by them. ``asked``: the Message-IDs looked for so far
    (grows). Returns the hosts given a search.
    """
    where: dict[str, set[str]] = {}  # Message-ID -> the hosts read that hold a group of it
    groups: dict[str, list[QueueGroup]] = {}
    for reader, log in logs:
        for g in log.groups:
            if g.message_id:
                mid = normalize_message_id(g.message_id)
                where.setdefault(mid, set()).add(reader)
                groups.setdefault(mid, []).append(g)
    new = [m for m in groups if m not in asked]
    asked.update(new)
    if not new or len(new) > SPECULATE_IDS:
        return set()
    work: set[str] = set()
    for name in order:
        mine = tuple(sorted(m for m in new if name not in where[m]))
        if not mine:
            continue
        seen = [g for m in mine for g in groups[m]]
        span = (min(g.first_time for g in seen) - max_skew,
                max(g.last_time for g in seen) + max_skew + SPECULATE_AFTER)
        if _ask(states, name, Query(message_ids=mine), span):
            work.add(name)
    return work


def _ask_refusals(
    states: dict[str, _HostState], refusals: Sequence[RefusalHint], max_skew: timedelta
) -> set[str]:
    """One search per refusing host for all the recipients it refused (not one each).

    "host X said: 550 ... (in reply to RCPT TO command)": X logged each refusal as a NOQUEUE
    reject (or a cleanup reject) naming the recipient. A message with hundreds of refused
    recipients costs one pass over X's logs, whose window spans all the refusals.
    """
    new: dict[str, list[RefusalHint]] = {}
    for refusal in refusals:
        state = states.get(refusal.host)
        if state is None or state.error is not None:
            continue
        key = repr(("refused", refusal.recipient, refusal.time))
        if key not in state.asked:
            state.asked.add(key)
            new.setdefault(refusal.host, []).append(refusal)
    for host, items in new.items():
        recipients = tuple(sorted({r.recipient for r in items}))
        span = (min(r.time for r in items) - max_skew, max(r.time for r in items) + max_skew)
        states[host].wanted_searches.append((Query(recipients=recipients), span))
    return set(new)


def _ask(
    states: dict[str, _HostState], host: str, search: Query, span: tuple[datetime, datetime]
) -> bool:
    """Queue one search on a host unless it was asked before; False if nothing to do."""
    state = states.get(host)
    if state is None or state.error is not None:
        return False
    key = repr((search, span))
    if key in state.asked:
        return False
    state.asked.add(key)
    state.wanted_searches.append((search, span))
    return True


def _run_round(
    states: dict[str, _HostState],
    hosts: Sequence[Host],
    task: Callable[[Host], None],
    workers: int,
) -> None:
    todo = [h for h in hosts if states[h.name].error is None]
    results = run_on_hosts(todo, task, workers=workers)
    for r in results:
        if r.error is not None:
            states[r.host].error = r.error


