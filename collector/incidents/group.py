"""Problems (one logged deferral, bounce, expiry or refusal) and incidents (problems alike).

A *problem* is one line's worth of trouble: a recipient's ``status=deferred``, ``bounced`` or
``expired`` attempt, or a refusal (smtpd, cleanup, milter, before-queue proxy). An *incident*
is every problem with the same kind, direction, peer, DSN code and reply template, fleet-wide.

The fleet's view, not a host's: a message counts once in an incident however many hosts and
retries logged it (a message is known by its Message-ID across hosts, else by its host and
queue ID; a refusal without a queue file by its client and sender). A refusal of a delivery that a fleet
host made (or a content filter on loopback) is the same problem that host logged as its
attempt's bounce or deferral: when that host was read, it is not counted again.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from collector.incidents.template import reply_template
from collector.logs.fields import dsn_of, parse_endpoint
from collector.logs.select import normalize_message_id
from collector.models import Attempt, HostLog, QueueGroup, Reject, Status
from collector.trace.correlate import HostIndex, resolve_peer


class Direction(enum.StrEnum):
    """Which way the mail was going when the problem happened."""

    INBOUND = "inbound"  # refused on receipt (smtpd, postscreen, cleanup, milter, proxy)
    OUTBOUND = "outbound"  # to a server outside the fleet
    INTERNAL = "internal"  # from one fleet host to another
    LOCAL = "local"  # on the host itself: mailbox delivery, a pipe, a local content filter


#: The statuses an incident is made of (``search --status`` words).
KINDS: tuple[Status, ...] = (Status.DEFERRED, Status.BOUNCED, Status.EXPIRED, Status.REJECTED)
_ATTEMPT_KINDS = frozenset({Status.DEFERRED, Status.BOUNCED, Status.EXPIRED})
_LOCAL_PROGRAMS = frozenset({"local", "virtual", "pipe"})
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_DELIVERED = frozenset({Status.SENT, Status.DELIVERABLE})


@dataclass(frozen=True, slots=True)
class Problem:
    """One logged problem of one recipient (or one refusal) on one host."""

    kind: Status
    host: str
    time: datetime
    queue_id: str | None
    message: str  # who the message is across hosts (see the module docstring)
    recipient: str | None
    direction: Direction
    peer: str  # the fleet host, the local service, or "@domain" of the recipient ("-": none)
    dsn: str | None
    template: str
    response: str
    #: the recipient got through later in this queue file, by the window's end (a deferral)
    recovered: bool = False
    #: the next hop as logged (``relay=``'s name) when it is not the peer
    relay: str | None = None
    #: a refusal of a fleet host's delivery (or of this host's own content filter): the host
    #: that logged the same problem as its attempt's bounce or deferral
    sent_by: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.kind, self.direction, self.peer, self.dsn or "", self.template)


# An enhanced status code as the whole of a dsn= value (anything else there is not one).
_DSN = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def _dsn(value: str | None, response: str) -> str | None:
    if value is not None and _DSN.fullmatch(value):
        return value
    return dsn_of(response)


def _domain(address: str | None) -> str:
    if not address or "@" not in address:
        return ""
    return "@" + address.rsplit("@", 1)[1].lower()


def _message_key(group: QueueGroup) -> str:
    """The message across hosts: its Message-ID and sender; without a Message-ID (cleanup
    logs ``message-id=<>``), this queue file."""
    mid = normalize_message_id(group.message_id or "")
    if mid:
        return f"<{mid}> {(group.sender or '').lower()}"
    return f"{group.host}:{group.queue_id}"


def _where(
    attempt: Attempt, recipient: str, host: str, index: HostIndex
) -> tuple[Direction, str, str | None]:
    """The direction, the peer and the relay's name (outbound) of one delivery attempt."""
    relay = attempt.relay
    if attempt.program in _LOCAL_PROGRAMS:
        return Direction.LOCAL, parse_endpoint(relay).label if relay else attempt.program, None
    if not relay or relay == "none":
        return Direction.OUTBOUND, _domain(recipient) or "-", None
    peer = parse_endpoint(relay)
    if (peer.address or "").startswith(("private/", "public/")):  # LMTP on a UNIX socket
        return Direction.LOCAL, peer.label, None
    fleet = resolve_peer(index, relay, host)
    if fleet is not None and fleet != host:
        return Direction.INTERNAL, fleet, None
    if fleet == host or (peer.address or "") in _LOOPBACK:
        return Direction.LOCAL, peer.label, None
    # Outside the fleet: by the recipient's domain (one domain's MXs are one problem),
    # the MX named apart.
    return Direction.OUTBOUND, _domain(recipient) or peer.label.lower(), peer.label.lower()


def _inside(t: datetime, since: datetime | None, until: datetime | None) -> bool:
    """``t`` is in the window (both ends included; None: open)."""
    return (since is None or t >= since) and (until is None or t <= until)


def group_problems(
    group: QueueGroup,
    index: HostIndex,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[Problem]:
    """Every problem of one queue group that happened in the window."""
    message = _message_key(group)

    def inside(t: datetime) -> bool:
        return _inside(t, since, until)

    for rcpt in group.recipients:
        # got through, by the end of the window (what is logged later does not change it)
        recovered = any(a.status in _DELIVERED and (until is None or a.time <= until)
                        for a in rcpt.attempts)
        reason: Attempt | None = None  # the last deferral: why an expired message never left
        for a in rcpt.attempts:
            status = a.status
            if status not in _ATTEMPT_KINDS:
                continue
            why = reason if status == Status.EXPIRED and reason is not None else a
            if status == Status.DEFERRED:
                reason = a
            if not inside(a.time):
                continue
            direction, peer, relay = _where(why, rcpt.address, group.host, index)
            yield Problem(
                kind=Status(status), host=group.host, time=a.time, queue_id=group.queue_id,
                message=message, recipient=rcpt.address, direction=direction, peer=peer,
                dsn=_dsn(why.dsn, why.response), template=reply_template(why.response),
                response=why.response, recovered=recovered and status == Status.DEFERRED,
                relay=relay,
            )
    for rej in group.rejects:
        if inside(rej.time):
            yield _refusal(rej, message, group.recipients[0].address if (
                rej.recipient is None and group.recipients) else rej.recipient,
                _sender_of(index, rej.client or group.client, group.host))


def _sender_of(index: HostIndex, client: str | None, host: str) -> str | None:
    """The fleet host (this one, for a content filter on loopback) whose delivery a refusal
    on ``host`` refused; None for a client outside the fleet."""
    if not client:
        return None
    return resolve_peer(index, client, host)


def _refusal(rej: Reject, message: str, recipient: str | None, sent_by: str | None) -> Problem:
    return Problem(
        kind=Status.REJECTED, host=rej.host, time=rej.time, queue_id=rej.queue_id,
        message=message, recipient=recipient, direction=Direction.INBOUND,
        peer=_domain(recipient) or "-", dsn=dsn_of(rej.response),
        template=reply_template(rej.response), response=rej.response, sent_by=sent_by,
    )


def log_problems(
    log: HostLog,
    index: HostIndex,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Problem]:
    """Every problem of one host's assembled log in the window, in time order.

    A refusal of a fleet host's delivery names that host (``sent_by``): :func:`incidents`
    leaves it out when that host was read (it logged the same problem).
    """
    out = [p for g in log.groups for p in group_problems(g, index, since, until)]
    for rej in log.rejects:
        if not _inside(rej.time, since, until):
            continue
        who = f"{parse_endpoint(rej.client).address or rej.client}" if rej.client else "?"
        out.append(_refusal(rej, f"{who} {(rej.sender or '').lower()}", rej.recipient,
                            _sender_of(index, rej.client, log.host)))
    out.sort(key=lambda p: p.time)
    return out


@dataclass(frozen=True, slots=True)
class HostSeen:
    """When one host logged an incident's problems."""

    host: str
    first: datetime
    last: datetime
    events: int


@dataclass(frozen=True, slots=True)
class Incident:
    """Problems alike across the fleet (see the module docstring)."""

    kind: Status
    direction: Direction
    peer: str
    dsn: str | None
    template: str
    messages: int
    recipients: int
    events: int
    recovered: int  # recipients of a deferral that got through later
    hosts: tuple[HostSeen, ...]
    samples: tuple[str, ...]  # HOST:QUEUEID to trace, the latest first
    response: str  # the latest reply, as logged
    #: against the comparison window: "new", "grew", "same" or "fell"; "unknown" when a
    #: host of the incident could not be read in the whole compared window (None: not compared)
    change: str | None = None
    baseline_messages: int | None = None
    baseline_recipients: int | None = None
    relays: tuple[str, ...] = ()  # outbound: the next hops (MX names) seen, most problems first

    @property
    def first(self) -> datetime:
        return min(h.first for h in self.hosts)

    @property
    def last(self) -> datetime:
        return max(h.last for h in self.hosts)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.kind, self.direction, self.peer, self.dsn or "", self.template)


@dataclass(slots=True)
class _Tally:
    messages: set[str] = field(default_factory=set)
    recipients: set[tuple[str, str]] = field(default_factory=set)
    recovered: set[tuple[str, str]] = field(default_factory=set)
    hosts: dict[str, list[Any]] = field(default_factory=dict)
    samples: dict[str, datetime] = field(default_factory=dict)  # HOST:QUEUEID -> latest
    relays: dict[str, int] = field(default_factory=dict)
    events: int = 0
    latest: Problem | None = None


SAMPLES = 3


#: Next hops an incident names (JSON ``relays``).
RELAYS = 3


def incidents(
    hosts_order: Sequence[str],
    problems: Iterable[Problem],
    baseline: Iterable[Problem] | None = None,
    *,
    answered: Collection[str] | None = None,
    baseline_partial: Collection[str] = (),
) -> list[Incident]:
    """Problems grouped into incidents, the most messages first; with ``baseline`` (the
    problems of the comparison window), each marked new, grew, same or fell ("unknown" when
    one of its hosts is in ``baseline_partial``: its compared window was not all seen).

    ``answered``: the hosts read (default: every host named in ``hosts_order``). A refusal of
    a delivery that one of them made is left out: that host logged the same problem.
    """
    read = set(hosts_order if answered is None else answered)
    partial = set(baseline_partial)
    tallies: dict[tuple[str, str, str, str, str], _Tally] = {}
    for p in problems:
        if p.sent_by is not None and p.sent_by in read:
            continue
        t = tallies.get(p.key)
        if t is None:
            t = tallies[p.key] = _Tally()
        _add(t, p)
    base = _counts(baseline, read) if baseline is not None else None
    rank = {h: i for i, h in enumerate(hosts_order)}
    out: list[Incident] = []
    for key, t in tallies.items():
        latest = t.latest
        assert latest is not None  # a tally has a problem
        seen = tuple(
            HostSeen(h, first, last, n)
            for h, (first, last, n) in sorted(t.hosts.items(),
                                              key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))
        )
        messages, recipients = len(t.messages), len(t.recipients)
        change = then_m = then_r = None
        if base is not None:
            then_m, then_r = base.get(key, (0, 0))
            change = ("new" if not then_m else "grew" if messages > then_m
                      else "same" if messages == then_m else "fell")
            if change in ("new", "grew") and partial.intersection(t.hosts):
                change = "unknown"  # more may have been there then, unseen
        out.append(Incident(
            kind=latest.kind, direction=latest.direction, peer=latest.peer, dsn=latest.dsn,
            template=latest.template, messages=messages, recipients=recipients,
            events=t.events, recovered=len(t.recovered), hosts=seen,
            samples=tuple(sorted(t.samples, key=t.samples.__getitem__, reverse=True)),
            response=latest.response,
            change=change, baseline_messages=then_m, baseline_recipients=then_r,
            relays=tuple(sorted(t.relays, key=lambda r: (-t.relays[r], r))[:RELAYS]),
        ))
    out.sort(key=lambda i: (-i.messages, -i.recipients, -i.last.timestamp(), i.key))
    return out


def _add(t: _Tally, p: Problem) -> None:
    t.events += 1
    if p.relay is not None and (p.relay in t.relays or len(t.relays) < 4 * RELAYS):
        t.relays[p.relay] = t.relays.get(p.relay, 0) + 1
    t.messages.add(p.message)
    who = (p.message, (p.recipient or "").lower())
    t.recipients.add(who)
    if p.recovered:
        t.recovered.add(who)
    seen = t.hosts.get(p.host)
    if seen is None:
        t.hosts[p.host] = [p.time, p.time, 1]
    else:
        seen[0] = min(seen[0], p.time)
        seen[1] = max(seen[1], p.time)
        seen[2] += 1
    if p.queue_id is not None:  # the latest few, however many there are
        samples = t.samples
        sample = f"{p.host}:{p.queue_id}"
        if p.time >= samples.get(sample, p.time):
            samples[sample] = p.time
        if len(samples) > SAMPLES:
            del samples[min(samples, key=samples.__getitem__)]
    if t.latest is None or p.time >= t.latest.time:
        t.latest = p


def _counts(
    problems: Iterable[Problem], read: set[str]
) -> dict[tuple[str, str, str, str, str], tuple[int, int]]:
    sets: dict[tuple[str, str, str, str, str], tuple[set[str], set[tuple[str, str]]]] = {}
    for p in problems:
        if p.sent_by is not None and p.sent_by in read:
            continue
        m, r = sets.setdefault(p.key, (set(), set()))
        m.add(p.message)
        r.add((p.message, (p.recipient or "").lower()))
    return {k: (len(m), len(r)) for k, (m, r) in sets.items()}
