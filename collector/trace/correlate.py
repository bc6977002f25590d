"""Link per-host queue groups into message traces across the fleet.

A queue ID names a queue file only on one host and only for one life (short IDs are reused after
``removed``), so every link is chosen by host *and* time, and confirmed by whatever else was
logged (``client=``, message-id). Nothing here links two groups by a queue ID alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from collector.logs.fields import dsn_of, parse_endpoint
from collector.logs.select import fold
from collector.models import (
    Attempt,
    BackwardHint,
    GroupRef,
    Hop,
    HopVia,
    Host,
    HostLog,
    Link,
    LinkStrength,
    Outcome,
    QueueGroup,
    Recipient,
    RecipientOutcome,
    RefusalHint,
    Reject,
    Trace,
)

DEFAULT_SKEW = timedelta(minutes=5)
MAX_DEPTH = 64  # hops (and nested notifications) per trace; a mail loop must not recurse forever

# A Message-ID that cleanup added: <YYYYMMDDHHMMSS.QUEUEID@myhostname> (short IDs) or
# <QUEUEID@myhostname> (long IDs). It names the origin host's myhostname.
_ADDED_MSGID_RE = re.compile(r"^<(?:\d{14}\.)?(?P<qid>[0-9A-Za-z]+)@(?P<host>[^>@\s]+)>$")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "localhost6"})
# Only the canonical loopback addresses mean "this host": a lab may put each host on its own
# 127.0.0.x, and those must resolve through the inventory like any other address.
_LOOPBACK_ADDRS = frozenset({"127.0.0.1", "::1"})
_FINAL_PROGRAMS = frozenset({"local", "virtual", "lmtp", "pipe"})
_FINAL_RELAYS = frozenset({"local", "virtual", "dovecot", "maildrop", "cyrus"})
# How a trace's first group got the message, by the group's origin (anything else: entry).
_ROOT_VIA = {"pickup": HopVia.PICKUP, "local": HopVia.LOCAL}


# --------------------------------------------------------------------------- host index


def _norm(key: str) -> str:
    key = key.strip().strip("[]").rstrip(".").lower()
    # IPv4-mapped IPv6 (::ffff:192.0.2.1) names the IPv4 address.
    if key.startswith("::ffff:") and "." in key:
        key = key[len("::ffff:") :]
    return key


@dataclass(frozen=True)
class HostIndex:
    """Names, addresses and aliases of fleet hosts, each mapped to the inventory name."""

    keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()

    def candidates(self, name_or_ip: str) -> tuple[str, ...]:
        return self.keys.get(_norm(name_or_ip), ())

    def resolve(self, name_or_ip: str) -> str | None:
        """The one fleet host that name or address stands for; None if unknown or ambiguous."""
        found = self.candidates(name_or_ip)
        return found[0] if len(found) == 1 else None


def build_host_index(hosts: Sequence[Host], logs: Sequence[HostLog] = ()) -> HostIndex:
    """Index the inventory, then learn the names each host calls itself in its own logs.

    Learned: the line envelope's host name, the ``myhostname`` in Message-IDs that cleanup
    added (they embed the host's own queue ID) and in LMTP-over-socket relays.
    """
    keys: dict[str, list[str]] = {}

    def add(key: str | None, host: str) -> None:
        if not key:
            return
        found = keys.setdefault(_norm(key), [])
        if host not in found:
            found.append(host)

    names = [h.name for h in hosts]
    for h in hosts:
        add(h.name, h.name)
        add(h.address, h.name)
        for alias in h.aliases:
            add(alias, h.name)
    for log in logs:
        if log.host not in names:
            names.append(log.host)
        add(log.host, log.host)
        for group in log.groups:
            for record in group.records:
                add(record.host, log.host)
            m = _ADDED_MSGID_RE.match(group.message_id or "")
            if m and m.group("qid") == group.queue_id:
                add(m.group("host"), log.host)
            for rcpt in group.recipients:
                for attempt in rcpt.attempts:
                    peer = parse_endpoint(attempt.relay or "")
                    if peer.address and peer.address.startswith(("private/", "public/")):
                        add(peer.name, log.host)
        for reject in log.rejects:
            add(reject.host, log.host)
    return HostIndex({k: tuple(v) for k, v in keys.items()}, tuple(names))


def _split_namaddr(text: str | None) -> tuple[str, str]:
    """The name and the address (``""`` when none) of a relay= or client= value."""
    peer = parse_endpoint(text or "")
    return (peer.name, peer.address or "")


def _is_loopback(name: str, addr: str) -> bool:
    return _norm(addr) in _LOOPBACK_ADDRS or _norm(name) in _LOOPBACK_NAMES


def resolve_peer(index: HostIndex, namaddr: str | None, here: str) -> str | None:
    """The fleet host a relay= or client= value names, seen from host ``here``."""
    name, addr = _split_namaddr(namaddr)
    found: tuple[str, ...] = ()
    if addr:
        found = index.candidates(addr)
    if not found and name and name != "unknown":
        found = index.candidates(name)
    if here in found:
        return here
    if len(found) == 1:
        return found[0]
    if not found and _is_loopback(name, addr):
        return here
    return None


def refused_by(index: HostIndex, host: str, attempt: Attempt) -> str | None:
    """The fleet host whose reply refused ``attempt`` (made on ``host``), or None.

    Postfix logs a refusal by the next hop as a bounce or deferral that quotes the reply
    (``host X[addr] said: 550 ...``); X logged the same refusal as a reject. Both the links and
    the trace loop, which fetches that reject, ask this one question.
    """
    return refusing_host(index, host, attempt.status, attempt.response, attempt.relay)


def refusing_host(
    index: HostIndex, host: str, status: str, response: str, relay: str | None
) -> str | None:
    """:func:`refused_by` for an attempt's parts (a delivery line not folded yet)."""
    if status not in ("bounced", "deferred") or " said: " not in response:
        return None
    return resolve_peer(index, relay, host)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- graph


@dataclass(slots=True)
class _Edge:
    parent: int
    child: int
    via: HopVia
    evidence: list[str]
    strength: LinkStrength
    recipients: set[str]  # parent recipient addresses that continue in the child
    refused: set[str] = field(default_factory=set)  # parent recipients the child refused


@dataclass(frozen=True, slots=True)
class _Missing:
    """A hand-off whose target group is not (yet) in the logs."""

    parent: int
    target: GroupRef
    time: datetime
    recipients: frozenset[str]
    note: str


@dataclass(slots=True)
class _Graph:
    groups: list[QueueGroup]
    edges: dict[tuple[int, int], _Edge] = field(default_factory=dict)
    parent_of: dict[int, _Edge] = field(default_factory=dict)
    missing: list[_Missing] = field(default_factory=list)
    no_id: dict[tuple[int, str], str] = field(default_factory=dict)  # fleet reply without an ID


@dataclass(frozen=True, slots=True)
class _Handoff:
    queue_id: str
    kind: str  # queued-as | forwarded-as | notification
    time: datetime
    relay: str | None
    recipient: str | None
    detail: str


def _handoffs(group: QueueGroup) -> list[_Handoff]:
    out: list[_Handoff] = []
    seen: set[tuple[str, str | None]] = set()
    for rcpt in group.recipients:
        for a in rcpt.attempts:
            if a.next_queue_id and a.status == "sent":
                kind = "forwarded-as" if _is_forward(a) else "queued-as"
                out.append(_Handoff(a.next_queue_id, kind, a.time, a.relay, rcpt.address, ""))
                seen.add((a.next_queue_id, rcpt.address))
    for child in group.children:
        if child.via == "notification":
            out.append(
                _Handoff(
                    child.queue_id,
                    "notification",
                    child.time or group.last_time,
                    None,
                    None,
                    child.detail,
                )
            )
        elif child.via in ("queued-as", "forwarded-as") and (
            (child.queue_id, child.recipient) not in seen
        ):
            time = child.time or group.last_time
            out.append(_Handoff(child.queue_id, child.via, time, child.relay, child.recipient, ""))
    for v in group.verdicts:
        # amavis's `queued_as:` names the re-injected copy on this host, also when the reply
        # Postfix logged for the hand-off does not.
        if v.next_queue_id and v.next_queue_id != group.queue_id:
            out.append(_Handoff(v.next_queue_id, "verdict", v.time, None, None, v.filter))
    return out


def _is_forward(a: Attempt) -> bool:
    return a.program == "local" or a.response.startswith("forwarded as")


def _delta(later: datetime, earlier: datetime) -> str:
    return f"time{(later - earlier).total_seconds():+.1f}s"


def _fmt_delta(d: timedelta) -> str:
    secs = int(abs(d.total_seconds()))
    return f"{secs // 60}m{secs % 60:02d}s"


def _addresses(group: QueueGroup) -> set[str]:
    out: set[str] = set()
    for r in group.recipients:
        out.add(fold(r.address))
        if r.orig_address:
            out.add(fold(r.orig_address))
    return out


class _Linker:
    def __init__(self, logs: Sequence[HostLog], index: HostIndex, max_skew: timedelta) -> None:
        self.index = index
        self.skew = max_skew
        groups = [g for log in logs for g in log.groups]
        # A NOQUEUE reject is a node too: an entry reject is a one-hop trace, and a refusal by
        # the next fleet hop belongs to the trace of the message it refused.
        groups += [_noqueue_group(log.host, rej) for log in logs for rej in log.rejects]
        groups.sort(key=lambda g: (g.first_time, g.host, g.queue_id, g.instance))
        self.graph = _Graph(groups)
        self.logged_hosts = {log.host for log in logs}
        self.lives: dict[tuple[str, str], list[int]] = {}
        self.on_host: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            self.lives.setdefault((g.host, g.queue_id), []).append(i)
            if g.rejects:
                self.on_host.setdefault(g.host, []).append(i)

    def run(self) -> _Graph:
        candidates: list[_Edge] = []
        for i, g in enumerate(self.graph.groups):
            for h in _handoffs(g):
                edge = self._follow(i, g, h)
                if edge:
                    candidates.append(edge)
        for i, g in enumerate(self.graph.groups):
            candidates.extend(self._refusals(i, g))
        for i, g in enumerate(self.graph.groups):
            if g.orig_queue_id:
                candidates.extend(self._backward(i, g, g.orig_queue_id, HopVia.REINJECTION))
            if g.requeued_from:
                candidates.extend(self._backward(i, g, g.requeued_from, HopVia.REQUEUE))
        for edge in candidates:
            self._merge(edge)
        self._choose_parents()
        self._inferred_reinjections()
        self._message_id_fallback()
        return self.graph

    # ---- a content filter's re-injection without a logged hand-off

    def _inferred_reinjections(self) -> None:
        """Link a parentless group that a loopback client handed in (a content filter
        re-injecting: ``client=localhost[127.0.0.1]``, no ``orig_queue_id=``) to the group on
        the same host that handed the same message to a filter on a loopback address.

        Every fact must agree: same host, loopback client, the same message-id, sender and
        recipients, and the re-injection within the skew of the hand-off. The link is
        ``inferred``; its evidence lists each fact.
        """
        groups = self.graph.groups
        by_key: dict[tuple[str, str], list[int]] = {}
        for i, g in enumerate(groups):
            if g.message_id and g.message_id != "<>" and g.queue_id != "NOQUEUE":
                by_key.setdefault((g.host, g.message_id), []).append(i)
        routed = {(e.parent, r) for e in self.graph.edges.values() for r in e.recipients}
        for c, child in enumerate(groups):
            if c in self.graph.parent_of or child.orig_queue_id or not child.message_id:
                continue
            name, addr = _split_namaddr(child.client)
            if not child.client or not _is_loopback(name, addr) or child.sender is None:
                continue
            wanted = {fold(r.address) for r in child.recipients}
            found: list[tuple[timedelta, int, Attempt]] = []
            for p in by_key.get((child.host, child.message_id), []):
                parent = groups[p]
                if p == c or parent.sender != child.sender or parent.first_time > child.first_time:
                    continue
                handed = {
                    fold(r.address): r.last
                    for r in parent.recipients
                    if _to_loopback_filter(r.last) and (p, fold(r.address)) not in routed
                }
                if not handed or not wanted <= set(handed):
                    continue
                a = max((handed[w] for w in wanted), key=lambda x: x.time)
                d = abs(child.first_time - a.time)
                if d <= self.skew:
                    found.append((d, p, a))
            if not wanted or not found:
                continue
            _, p, a = min(found, key=lambda f: (f[0], f[1]))
            if self._is_ancestor(c, p):
                continue
            recipients = wanted
            evidence = [
                "same-host",
                f"client={child.client}",
                "message-id",
                "sender",
                "recipients",
                f"relay={a.relay}",
                _delta(child.first_time, a.time),
            ]
            edge = _Edge(p, c, HopVia.REINJECTION, evidence, LinkStrength.INFERRED, recipients)
            self.graph.edges[(p, c)] = edge
            self.graph.parent_of[c] = edge
            routed |= {(p, r) for r in recipients}

    # ---- forward hand-offs: queued as / forwarded as / notification

    def _follow(self, i: int, g: QueueGroup, h: _Handoff) -> _Edge | None:
        recipients = {fold(h.recipient)} if h.recipient else set()
        if h.kind == "queued-as":
            target = resolve_peer(self.index, h.relay, g.host)
            if target is None:
                return None  # a server outside the inventory: the recipient left the fleet
            via = HopVia.REINJECTION if target == g.host else HopVia.SMTP
            evidence = ["queued-as"]
        elif h.kind == "forwarded-as":
            target, via, evidence = g.host, HopVia.FORWARD, ["forwarded-as"]
        elif h.kind == "verdict":
            target, via, evidence = g.host, HopVia.REINJECTION, [f"{h.detail} queued_as"]
            recipients = {fold(r.address) for r in g.recipients if r.last.status == "sent"}
        else:
            target, via = g.host, HopVia.NOTIFICATION
            evidence = [h.detail or "notification"]
        chosen: int | None = None
        outside: timedelta | None = None
        for j in self._by_time(target, h.queue_id, h.time):
            child = self.graph.groups[j]
            if j == i:
                continue
            d = child.first_time - h.time
            if abs(d) > self.skew:
                outside = d if outside is None or abs(d) < abs(outside) else outside
                continue
            extra = self._confirm(g, child, via)
            if extra is None:
                continue
            chosen = j
            evidence += extra
            evidence.append(_delta(child.first_time, h.time))
            break
        if chosen is None:
            ref = GroupRef(target, h.queue_id)
            if outside is not None:
                note = (
                    f"lost at {target}: queue ID {h.queue_id} is logged only "
                    f"{_fmt_delta(outside)} away from the hand-off by {g.host}/{g.queue_id} "
                    f"(beyond max skew {_fmt_delta(self.skew)})"
                )
            else:
                note = f"lost at {target}: no log of queue ID {h.queue_id}"
            self.graph.missing.append(_Missing(i, ref, h.time, frozenset(recipients), note))
            return None
        return _Edge(i, chosen, via, evidence, LinkStrength.STRONG, recipients)

    def _refusals(self, i: int, g: QueueGroup) -> list[_Edge]:
        """Link a bounced/deferred attempt to the reject the next fleet host logged for it."""
        edges: list[_Edge] = []
        for r in g.recipients:
            addr = fold(r.address)
            for a in r.attempts:
                target = refused_by(self.index, g.host, a)
                if target is None:
                    continue
                best: tuple[timedelta, int, Reject] | None = None
                for j in self.on_host.get(target, []):
                    for rej in self.graph.groups[j].rejects:
                        d = abs(rej.time - a.time)
                        if (
                            d > self.skew
                            or fold(rej.recipient or addr) != addr
                            or (
                                rej.sender is not None
                                and g.sender is not None
                                and rej.sender != g.sender
                            )
                            or resolve_peer(self.index, rej.client, target) != g.host
                            or j == i
                        ):
                            continue
                        if best is None or (d, j) < (best[0], best[1]):
                            best = (d, j, rej)
                if best is not None:
                    _, j, rej = best
                    evidence = ["refused", f"client={rej.client}", _delta(rej.time, a.time)]
                    edge = _Edge(i, j, HopVia.REFUSED, evidence, LinkStrength.STRONG, set(), {addr})
                    edges.append(edge)
        return edges

    def _by_time(self, host: str, qid: str, t: datetime) -> list[int]:
        lives = self.lives.get((host, qid), [])
        return sorted(lives, key=lambda j: (abs(self.graph.groups[j].first_time - t), j))

    def _confirm(self, parent: QueueGroup, child: QueueGroup, via: HopVia) -> list[str] | None:
        """Extra evidence for a hand-off, or None when the child contradicts it."""
        extra: list[str] = []
        if via in (HopVia.SMTP, HopVia.REINJECTION) and child.client:
            came_from = resolve_peer(self.index, child.client, child.host)
            if came_from == parent.host:
                extra.append(f"client={child.client}")
            elif came_from is not None and came_from != child.host:
                return None  # the child came from another fleet host: another message
        if via is HopVia.NOTIFICATION:
            # Notifications come from the null sender; a postmaster notice about a failed
            # notification (a double bounce) comes from double_bounce_sender (double-bounce@).
            sender = child.sender or ""
            if sender and not sender.lower().startswith("double-bounce@"):
                return None
        elif parent.message_id and child.message_id:
            if parent.message_id != child.message_id:
                return None
            extra.append("message-id")
        return extra

    # ---- backward links: orig_queue_id= (XFORWARD), orig_id= (postsuper -r)

    def _backward(self, i: int, g: QueueGroup, qid: str, via: HopVia) -> list[_Edge]:
        lives = [
            j
            for j in self.lives.get((g.host, qid), [])
            if j != i and self.graph.groups[j].first_time <= g.first_time + self.skew
        ]
        if not lives:
            self.graph.missing.append(
                _Missing(
                    i,
                    GroupRef(g.host, qid),
                    g.first_time,
                    frozenset(),
                    f"lost at {g.host}: no log of queue ID {qid} (origin of {g.queue_id})",
                )
            )
            return []
        # The newest life that began before this one is the one that handed it on.
        j = max(lives, key=lambda k: (self.graph.groups[k].first_time, k))
        parent = self.graph.groups[j]
        if via is HopVia.REQUEUE:
            evidence = ["orig_id"]
            final = {"sent", "bounced"}
            recipients = {fold(r.address) for r in parent.recipients if r.status not in final}
        else:
            evidence = ["orig_queue_id"]
            if parent.message_id and g.message_id:
                if parent.message_id != g.message_id:
                    return []
                evidence.append("message-id")
            wanted = _addresses(g)
            recipients = {
                fold(r.address)
                for r in parent.recipients
                if r.status == "sent" and fold(r.address) in wanted
            }
        return [_Edge(j, i, via, evidence, LinkStrength.STRONG, recipients)]

    def _merge(self, edge: _Edge) -> None:
        key = (edge.parent, edge.child)
        old = self.graph.edges.get(key)
        if old is None:
            self.graph.edges[key] = edge
            return
        old.evidence += [e for e in edge.evidence if e not in old.evidence]
        old.recipients |= edge.recipients
        old.refused |= edge.refused
        if old.via is HopVia.REINJECTION or edge.via is HopVia.NOTIFICATION:
            return
        if edge.via is HopVia.REINJECTION:
            old.via = HopVia.REINJECTION

    def _choose_parents(self) -> None:
        by_child: dict[int, list[_Edge]] = {}
        for edge in self.graph.edges.values():
            by_child.setdefault(edge.child, []).append(edge)
        for child in sorted(by_child):
            edges = sorted(by_child[child], key=lambda e: (-len(e.evidence), e.parent))
            for edge in edges:
                if not self._is_ancestor(child, edge.parent):
                    self.graph.parent_of[child] = edge
                    break
        # Edges that lost the choice are dropped: their recipients end at the parent.
        self.graph.edges = {(e.parent, e.child): e for e in self.graph.parent_of.values()}

    def _is_ancestor(self, node: int, of: int) -> bool:
        seen: set[int] = set()
        cur: int | None = of
        while cur is not None and cur not in seen:
            if cur == node:
                return True
            seen.add(cur)
            edge = self.graph.parent_of.get(cur)
            cur = edge.parent if edge else None
        return False

    # ---- fallback: same message-id + sender + recipient within the skew window

    def _message_id_fallback(self) -> None:
        groups = self.graph.groups
        by_msgid: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            if g.message_id and g.message_id != "<>":
                by_msgid.setdefault(g.message_id, []).append(i)
        routed = {(e.parent, r) for e in self.graph.edges.values() for r in e.recipients}
        for c, child in enumerate(groups):
            if c in self.graph.parent_of or not child.message_id or child.sender is None:
                continue
            if child.client and resolve_peer(self.index, child.client, child.host) is None:
                continue  # it came from outside the fleet: a genuine entry
            wanted = _addresses(child)
            best: tuple[timedelta, int, str, Attempt] | None = None
            for p in by_msgid.get(child.message_id, []):
                parent = groups[p]
                if p == c or parent.sender != child.sender:
                    continue
                for r in parent.recipients:
                    a = r.last
                    addr = fold(r.address)
                    if a.status != "sent" or addr not in wanted or (p, addr) in routed:
                        continue
                    if parent.host != child.host and (
                        resolve_peer(self.index, a.relay, parent.host) != child.host
                    ):
                        continue
                    d = abs(child.first_time - a.time)
                    if d <= self.skew and (best is None or (d, p) < (best[0], best[1])):
                        best = (d, p, addr, a)
            if best is None or self._is_ancestor(c, best[1]):
                continue
            _, p, addr, a = best
            parent = groups[p]
            recipients = {
                fold(r.address)
                for r in parent.recipients
                if r.last.status == "sent"
                and fold(r.address) in wanted
                and (p, fold(r.address)) not in routed
            }
            edge = _Edge(
                p,
                c,
                HopVia.MESSAGE_ID,
                ["message-id-match", _delta(child.first_time, a.time)],
                LinkStrength.WEAK,
                recipients,
            )
            self.graph.edges[(p, c)] = edge
            self.graph.parent_of[c] = edge
            routed |= {(p, r) for r in recipients}


def _to_loopback_filter(a: Attempt) -> bool:
    """A delivery accepted by an SMTP/LMTP server on a loopback address and port that gave no
    queue ID: how a hand-off to a content filter on the same host is logged."""
    if a.status != "sent" or a.next_queue_id or a.program not in ("smtp", "lmtp"):
        return False
    peer = parse_endpoint(a.relay or "")
    return peer.port is not None and _is_loopback(peer.name, peer.address or "")


def _ref(g: QueueGroup) -> GroupRef:
    return GroupRef(g.host, g.queue_id)


def link_groups(
    logs: Sequence[HostLog], index: HostIndex, max_skew: timedelta = DEFAULT_SKEW
) -> list[Link]:
    """Every parent→child link the logs prove (strong) or suggest by message-id (weak)."""
    graph = _Linker(logs, index, max_skew).run()
    links = [
        Link(
            _ref(graph.groups[e.parent]),
            _ref(graph.groups[e.child]),
            e.via,
            tuple(e.evidence),
            e.strength,
            graph.groups[e.parent].first_time,
            graph.groups[e.child].first_time,
        )
        for e in graph.edges.values()
    ]
    links.sort(key=lambda k: (k.child_time or k.parent_time, k.child, k.parent))
    return links


@dataclass(frozen=True, slots=True)
class Leads:
    """What the logs read so far say to fetch next; one build of the link graph per round."""

    pending: frozenset[GroupRef]  # groups links point at that the logs do not hold yet
    backward: tuple[BackwardHint, ...]  # parentless groups handed over by a fleet host
    refusals: tuple[RefusalHint, ...]  # attempts a fleet host refused: it logged a reject
    # groups handed to a content filter on their own host with no re-injection linked yet: the
    # same host holds it under the same message-id
    filtered: tuple[BackwardHint, ...] = ()


def leads(
    logs: Sequence[HostLog], index: HostIndex, max_skew: timedelta = DEFAULT_SKEW
) -> Leads:
    """Forward, backward and refusal leads of one round of the trace loop."""
    graph = _Linker(logs, index, max_skew).run()
    return Leads(
        frozenset(m.target for m in graph.missing),
        tuple(_backward_hints(graph, index)),
        tuple(_refusal_hints(logs, index)),
        tuple(_filter_hints(graph)),
    )


def _filter_hints(graph: _Graph) -> Iterator[BackwardHint]:
    parents = {e.parent for e in graph.edges.values()}
    for i, g in enumerate(graph.groups):
        if i in parents or not g.message_id:
            continue
        handed = [r.last for r in g.recipients if _to_loopback_filter(r.last)]
        if handed:
            yield BackwardHint(g.host, g.message_id, max(a.time for a in handed), _ref(g))


def pending_refs(
    logs: Sequence[HostLog], index: HostIndex, max_skew: timedelta = DEFAULT_SKEW
) -> set[GroupRef]:
    """Groups that links point at but that the logs do not hold yet: fetch these next."""
    return set(leads(logs, index, max_skew).pending)


def backward_hints(
    logs: Sequence[HostLog], index: HostIndex, max_skew: timedelta = DEFAULT_SKEW
) -> list[BackwardHint]:
    """Parentless groups whose ``client=`` is a fleet host: the previous hop to fetch."""
    return list(leads(logs, index, max_skew).backward)


def _backward_hints(graph: _Graph, index: HostIndex) -> Iterator[BackwardHint]:
    for i, g in enumerate(graph.groups):
        if i in graph.parent_of or not g.client or g.queue_id == "NOQUEUE":
            continue
        prev = resolve_peer(index, g.client, g.host)
        if prev is not None:
            yield BackwardHint(prev, g.message_id, g.first_time, _ref(g))


def _refusal_hints(logs: Sequence[HostLog], index: HostIndex) -> Iterator[RefusalHint]:
    """Every attempt a fleet host refused, linked to its reject or not (yet)."""
    for log in logs:
        for group in log.groups:
            for rcpt in group.recipients:
                for a in rcpt.attempts:
                    host = refused_by(index, group.host, a)
                    if host is not None:
                        yield RefusalHint(host, rcpt.address, a.time)


# --------------------------------------------------------------------------- traces


@dataclass(slots=True)
class _TraceBuilder:
    graph: _Graph
    index: HostIndex
    failed_hosts: Mapping[str, str]
    logged_hosts: set[str]
    children: dict[int, list[_Edge]] = field(default_factory=dict)
    missing_by_parent: dict[int, list[_Missing]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for edge in self.graph.edges.values():
            self.children.setdefault(edge.parent, []).append(edge)
        for kids in self.children.values():
            kids.sort(key=lambda e: (self.graph.groups[e.child].first_time, e.child))
        for m in self.graph.missing:
            self.missing_by_parent.setdefault(m.parent, []).append(m)

    def build(
        self, root: int, entry: _Edge | None, depth: int = 0, anchor: int | None = None
    ) -> Trace:
        """The trace rooted at group ``root``; ``entry`` is the edge into it (a notification's).

        The tree is walked depth first, so a hop's parent always comes before it in ``hops``.
        """
        walk = _Walk()
        stack: list[_Visit] = [_Visit(root, entry, None, (), frozenset())]
        while stack:
            visit = stack.pop()
            here = len(walk.hops)
            path = visit.path + (_ref(self.graph.groups[visit.node]),)
            onward = self._visit(walk, visit, path, depth)
            for kid in reversed(onward):
                stack.append(_Visit(kid.child, kid, here, path, frozenset(kid.recipients)))
        return _trace(self.graph.groups[root], walk, anchor)

    def _visit(
        self, walk: _Walk, visit: _Visit, path: tuple[GroupRef, ...], depth: int
    ) -> list[_Edge]:
        """Add one group's hop, notifications and outcomes to ``walk``; the edges onward."""
        group = self.graph.groups[visit.node]
        here = len(walk.hops)
        walk.hops.append(self._hop(group, visit))
        if len(path) > MAX_DEPTH:
            walk.notes.append(f"depth limit {MAX_DEPTH} reached at {group.host}/{group.queue_id}")
            return []
        onward: list[_Edge] = []
        for kid in self.children.get(visit.node, []):
            if kid.via is not HopVia.NOTIFICATION:
                onward.append(kid)
            elif depth + 1 > MAX_DEPTH:
                walk.notes.append(
                    f"depth limit {MAX_DEPTH} reached at notification of "
                    f"{group.host}/{group.queue_id}"
                )
            else:
                walk.notifications.append(self.build(kid.child, kid, depth + 1, here))
        for m in self.missing_by_parent.get(visit.node, []):
            if not m.recipients:
                walk.notes.append(self._lost_note(m))
        place = _Place(visit.node, here, path)
        walk.outcomes += self._outcomes(place, visit, onward, walk.notes)
        return onward

    def _lost_note(self, m: _Missing) -> str:
        host = m.target.host
        reason = self.failed_hosts.get(host)
        if reason is not None:
            return f"lost at {host}: host failed: {reason} (queue ID {m.target.queue_id})"
        if host not in self.logged_hosts:
            return f"lost at {host}: no logs from this host (queue ID {m.target.queue_id})"
        return m.note

    def _hop(self, group: QueueGroup, visit: _Visit) -> Hop:
        edge = visit.edge
        if edge is None:
            return Hop(
                host=group.host,
                queue_id=group.queue_id,
                time=group.first_time,
                client=group.client,
                parent=None,
                via=_ROOT_VIA.get(group.origin, HopVia.ENTRY),
                evidence=(),
                group=group,
            )
        parent = self.graph.groups[edge.parent]
        # A notification's first hop has its parent in the enclosing trace: no index, and no
        # delivery of the parent hands the message to it.
        up = visit.parent_hop
        return Hop(
            host=group.host,
            queue_id=group.queue_id,
            time=group.first_time,
            client=group.client,
            parent=_ref(parent),
            via=edge.via,
            evidence=tuple(edge.evidence),
            group=group,
            parent_index=up,
            handoff=_handoff_attempt(parent, group.queue_id) if up is not None else None,
            strength=edge.strength,
        )

    def _outcomes(
        self, place: _Place, visit: _Visit, onward: list[_Edge], notes: list[str]
    ) -> list[RecipientOutcome]:
        """Where each recipient of the group at ``place`` ended, unless it went ``onward``."""
        group = self.graph.groups[place.node]
        seen: set[str] = set()  # addresses the group accounts for; grows below
        out = self._recipient_outcomes(place, group, onward, seen, notes)
        refused_here = visit.edge.refused if visit.edge is not None else set()
        for rej in group.rejects:
            if rej.recipient and fold(rej.recipient) in seen:
                continue
            if fold((rej.recipient or "")) in refused_here or (
                refused_here and not rej.recipient
            ):
                continue  # the sending host logged this refusal as its own bounce or deferral
            out.append(_reject_outcome(rej, group, place))
            if rej.recipient:
                seen.add(fold(rej.recipient))
        out += _unlogged_outcomes(group, place, visit.arriving, seen)
        return out

    def _recipient_outcomes(
        self,
        place: _Place,
        group: QueueGroup,
        onward: list[_Edge],
        seen: set[str],
        notes: list[str],
    ) -> list[RecipientOutcome]:
        """The outcomes of the group's own recipients; adds their addresses to ``seen``."""
        routed = {r for kid in onward for r in kid.recipients}
        # The path of a refused recipient ends at the group that logged the refusal.
        refusers: dict[str, GroupRef] = {}
        for kid in sorted(onward, key=lambda e: self.graph.groups[e.child].first_time):
            for addr in kid.refused:
                refusers[addr] = _ref(self.graph.groups[kid.child])
        missing = {
            addr: m for m in self.missing_by_parent.get(place.node, []) for addr in m.recipients
        }
        out: list[RecipientOutcome] = []
        for r in group.recipients:
            addr = fold(r.address)
            seen.add(addr)
            if r.orig_address:
                seen.add(fold(r.orig_address))
            if addr in routed:
                continue
            refuser = refusers.get(addr)
            path = place.path + (refuser,) if refuser else place.path
            a = r.last
            out.append(
                RecipientOutcome(
                    address=r.address,
                    orig_address=r.orig_address,
                    status=a.status,
                    outcome=self._classify(group, r, a, missing.get(addr), notes),
                    host=group.host,
                    queue_id=group.queue_id,
                    dsn=a.dsn,
                    response=a.response,
                    time=a.time,
                    path=path,
                    hop_index=place.hop,
                    attempt=a,
                )
            )
        return out

    def _classify(
        self,
        group: QueueGroup,
        r: Recipient,
        a: Attempt,
        missing: _Missing | None,
        notes: list[str],
    ) -> Outcome:
        if a.status == "bounced":
            return Outcome.EXPIRED if group.expired else Outcome.BOUNCED
        if a.status in ("expired", "force-expired"):
            return Outcome.EXPIRED  # qmgr's "status=expired, returned to sender"
        if a.status == "deferred":
            if group.expired:
                return Outcome.EXPIRED
            return Outcome.UNKNOWN if group.removed else Outcome.QUEUED
        if a.status != "sent":
            return Outcome.UNKNOWN
        relay = fold((a.relay or ""))
        if a.program == "discard" or (a.program == "local" and a.response == "discarded"):
            return Outcome.DISCARDED
        if missing is not None:
            notes.append(self._lost_note(missing))
            return Outcome.LOST
        if a.program in _FINAL_PROGRAMS - {"lmtp"} or relay in _FINAL_RELAYS:
            return Outcome.DELIVERED
        if group.verdicts and _to_loopback_filter(a):
            # LMTP or SMTP to a content filter that judged the message: a hand-off, never a
            # final delivery, even when its re-injection is not in the logs.
            notes.append(
                f"unknown at {group.host}: {group.queue_id} was handed to a content filter "
                f"({a.relay}) and its re-injection is not in the logs"
            )
            return Outcome.UNKNOWN
        name, addr = _split_namaddr(a.relay)
        if a.program == "lmtp" and (not addr or not _is_ip(addr)):
            return Outcome.DELIVERED  # LMTP over a UNIX socket: the mailbox server is this host
        target = resolve_peer(self.index, a.relay, group.host)
        if target is None:
            if a.program == "lmtp" and _is_loopback(name, addr):
                return Outcome.DELIVERED
            return Outcome.RELAYED_OUT
        if a.program == "lmtp":
            return Outcome.DELIVERED
        notes.append(
            f"unknown at {target}: the reply to {group.host}/{group.queue_id} carries no "
            f"queue ID ({a.response})"
        )
        return Outcome.UNKNOWN


@dataclass(frozen=True, slots=True)
class _Visit:
    """A group the walk of a trace has still to visit, and how it got there."""

    node: int
    edge: _Edge | None  # the edge into it (None for a root)
    parent_hop: int | None  # the index of the parent's hop in this trace
    path: tuple[GroupRef, ...]  # the refs from the root to the parent
    arriving: frozenset[str]  # recipients the parent handed on to it


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a group sits in the trace being built."""

    node: int
    hop: int  # its index in the trace's hops
    path: tuple[GroupRef, ...]  # the refs from the root to it


@dataclass(slots=True)
class _Walk:
    """What the walk of one trace has collected so far."""

    hops: list[Hop] = field(default_factory=list)
    outcomes: list[RecipientOutcome] = field(default_factory=list)
    notifications: list[Trace] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _trace(first: QueueGroup, walk: _Walk, anchor: int | None) -> Trace:
    hops = walk.hops
    return Trace(
        message_id=next((h.group.message_id for h in hops if h.group.message_id), None),
        sender=first.sender,
        first_seen=min(h.group.first_time for h in hops),
        last_seen=max(h.group.last_time for h in hops),
        size=next((h.group.size for h in hops if h.group.size is not None), None),
        hops=tuple(hops),
        recipients=tuple(walk.outcomes),
        notifications=tuple(walk.notifications),
        notes=tuple(dict.fromkeys(walk.notes)),
        anchor=anchor,
        subject=next((h.group.subject for h in hops if h.group.subject is not None), None),
    )


def _handoff_attempt(parent: QueueGroup, queue_id: str) -> Attempt | None:
    """The parent's delivery attempt that names ``queue_id`` as the next queue file."""
    for r in parent.recipients:
        for a in r.attempts:
            if a.next_queue_id == queue_id:
                return a
    return None


def _unlogged_outcomes(
    group: QueueGroup, place: _Place, arriving: frozenset[str], seen: set[str]
) -> list[RecipientOutcome]:
    """Addresses handed on to this group that it logged no delivery for (yet)."""
    # orig_to keeps an alias as written before expansion, often unqualified (orig_to=<root>
    # for root@host): an arriving address is accounted for by its local part then too.
    bare = {a for a in seen if "@" not in a}
    return [
        RecipientOutcome(
            address=addr,
            orig_address=None,
            status="unknown",
            outcome=Outcome.UNKNOWN if group.removed else Outcome.QUEUED,
            host=group.host,
            queue_id=group.queue_id,
            dsn=None,
            response="",
            time=None,
            path=place.path,
            hop_index=place.hop,
        )
        for addr in sorted(arriving - seen)
        if addr.partition("@")[0] not in bare
    ]


def _reject_outcome(rej: Reject, group: QueueGroup, place: _Place) -> RecipientOutcome:
    discarded = rej.action == "discard"
    return RecipientOutcome(
        address=rej.recipient or "",
        orig_address=None,
        status="unknown" if discarded else "rejected",
        outcome=Outcome.DISCARDED if discarded else Outcome.REJECTED,
        host=group.host,
        queue_id=group.queue_id,
        dsn=dsn_of(rej.response),
        response=rej.response,
        time=rej.time,
        path=place.path,
        hop_index=place.hop,
    )


def correlate(
    logs: Sequence[HostLog],
    index: HostIndex,
    *,
    max_skew: timedelta = DEFAULT_SKEW,
    failed_hosts: Mapping[str, str] | None = None,
) -> list[Trace]:
    """One trace per message; every group belongs to exactly one trace.

    Roots are groups with no parent; notification (DSN) traces are nested under the trace of
    the message they report on. NOQUEUE rejects become one-hop traces. Ordered by
    (first_seen, host, queue_id).
    """
    linker = _Linker(logs, index, max_skew)
    graph = linker.run()
    builder = _TraceBuilder(graph, index, failed_hosts or {}, linker.logged_hosts)
    traces = [builder.build(i, None) for i in range(len(graph.groups)) if i not in graph.parent_of]
    traces.sort(
        key=lambda t: (
            t.first_seen,
            t.hops[0].host,
            t.hops[0].queue_id,
            tuple(r.address for r in t.recipients),
        )
    )
    return traces


def _noqueue_group(host: str, rej: Reject) -> QueueGroup:
    """A reject without a queue file, as a group on the inventory host that logged it."""
    return QueueGroup(
        host=host,
        instance="",
        queue_id="NOQUEUE",
        first_time=rej.time,
        last_time=rej.time,
        client=rej.client,
        client_ip=parse_endpoint(rej.client or "").address or None,
        origin="smtp",
        sender=rej.sender,
        rejects=(rej,),
    )


def _iter_groups(trace: Trace) -> Iterable[QueueGroup]:
    for hop in trace.hops:
        yield hop.group
    for child in trace.notifications:
        yield from _iter_groups(child)


def select_traces(traces: Sequence[Trace], predicate: Callable[[QueueGroup], bool]) -> list[Trace]:
    """Keep whole traces in which at least one group (notifications included) matches."""
    return [t for t in traces if any(predicate(g) for g in _iter_groups(t))]


@dataclass(frozen=True, slots=True)
class Waiting:
    """A trace of the logs so far, and what a live follow would wait for before showing it.

    ``wanted``: the groups its hand-offs name that the logs do not hold (yet); ``upstream``:
    the fleet host its first hop came from (its ``client=``) when no parent was linked.
    """

    trace: Trace
    wanted: tuple[GroupRef, ...]
    upstream: str | None


def correlate_waiting(
    logs: Sequence[HostLog],
    index: HostIndex,
    *,
    max_skew: timedelta = DEFAULT_SKEW,
    failed_hosts: Mapping[str, str] | None = None,
) -> list[Waiting]:
    """:func:`correlate`, each trace with what is missing around it (see :class:`Waiting`)."""
    linker = _Linker(logs, index, max_skew)
    graph = linker.run()
    builder = _TraceBuilder(graph, index, failed_hosts or {}, linker.logged_hosts)
    position = {id(g): i for i, g in enumerate(graph.groups)}
    missing: dict[int, list[GroupRef]] = {}
    for m in graph.missing:
        missing.setdefault(m.parent, []).append(m.target)
    out: list[Waiting] = []
    for i, root in enumerate(graph.groups):
        if i in graph.parent_of:
            continue
        trace = builder.build(i, None)
        wanted = [ref for g in _iter_groups(trace)
                  for ref in missing.get(position.get(id(g), -1), ())]
        upstream = None
        if root.client and root.queue_id != "NOQUEUE" and root.origin == "smtp":
            upstream = resolve_peer(index, root.client, root.host)
        out.append(Waiting(trace, tuple(dict.fromkeys(wanted)), upstream))
    out.sort(key=lambda w: (w.trace.first_seen, w.trace.hops[0].host, w.trace.hops[0].queue_id))
    return out
