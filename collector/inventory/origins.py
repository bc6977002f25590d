"""Whose line is it? The inventory host a line read on a log host belongs to (``collects``).

Pure. A log host's files (or its journal) hold the lines of every host that sends it its
syslog; each line names its origin in its envelope (the syslog hostname). That name is
resolved against the inventory: a host's ``name``, its name's first label, or one of its
``aliases``, case-insensitive. The log host's own names keep its own lines. With
``collects = ["*"]`` a name no inventory host claims becomes a host of its own, named as
logged (lower-cased): a log line is attacker-controlled, so such a name must be a strict
DNS hostname, and at most :data:`MAX_DYNAMIC` of them are made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from collector.models import Host

#: Hosts a ``collects = ["*"]`` log host may make of the names in its lines.
MAX_DYNAMIC = 1000
#: Distinct hostnames remembered per log host (the rest are resolved each time).
_CACHE_MAX = 20_000
#: Hostnames named in a note about lines that were not kept.
_SAMPLES = 5

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\Z")


def dns_hostname(name: str) -> bool:
    """A strict DNS hostname (RFC 1123 labels, lower case, at most 253 characters)."""
    return _DNS_NAME.match(name) is not None


def reader_of(host: Host) -> str:
    """The inventory host whose logs hold this host's lines (itself, or its log host)."""
    return host.via or host.name


def _first_label(name: str) -> str:
    return name.split(".", 1)[0]


@dataclass(frozen=True, slots=True)
class Carried:
    """What the lines on one log host may belong to.

    ``keys`` maps a casefolded line hostname to the inventory host it is (the log host
    itself, or one it carries); ``foreign`` are names of inventory hosts read elsewhere (their
    lines here are not this log host's to report); ``ambiguous`` are first labels shared by
    several inventory hosts. ``hosts`` lists the inventory hosts carried, in inventory order.
    """

    reader: str
    hosts: tuple[str, ...]
    keys: Mapping[str, str]
    foreign: frozenset[str] = frozenset()
    ambiguous: frozenset[str] = frozenset()
    wildcard: bool = False


def carried_by(inventory: Sequence[Host], reader: Host, own: Iterable[str] = ()) -> Carried:
    """The hosts a log host carries, and the names its lines may call each of them by.

    ``own``: more names that mean the log host itself (the machine's hostname, when the log
    host is this machine).
    """
    mine = {reader.name} | {h.name for h in inventory if h.via == reader.name}
    exact: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    for h in inventory:
        for name in (h.name, *h.aliases):
            exact.setdefault(name.casefold(), h.name)
        labels.setdefault(_first_label(h.name).casefold(), set()).add(h.name)
    for name in own:
        exact.setdefault(name.casefold(), reader.name)
    keys: dict[str, str] = {}
    foreign: set[str] = set()
    ambiguous: set[str] = set()
    for key, host in exact.items():
        if host in mine:
            keys[key] = host
        else:
            foreign.add(key)
    for key, hosts in labels.items():
        if key in exact:
            continue
        if len(hosts) > 1:
            ambiguous.add(key)
        elif (host := next(iter(hosts))) in mine:
            keys[key] = host
        else:
            foreign.add(key)
    return Carried(
        reader=reader.name,
        hosts=tuple(h.name for h in inventory if h.via == reader.name),
        keys=keys,
        foreign=frozenset(foreign),
        ambiguous=frozenset(ambiguous),
        wildcard="*" in reader.collects,
    )


@dataclass(slots=True)
class _Dropped:
    lines: int = 0
    names: list[str] = field(default_factory=list)
    more: bool = False  # other names than these

    def add(self, name: str) -> None:
        self.lines += 1
        if name not in self.names:
            if len(self.names) < _SAMPLES:
                self.names.append(name)
            else:
                self.more = True


_WHY = {
    "foreign": "of hosts read on another log host",
    "unknown": "of hostnames this log host does not collect",
    "invalid": "whose hostname is not a valid DNS name",
    "ambiguous": "whose hostname is the first label of several inventory hosts",
    "overflow": f"of hostnames beyond the first {MAX_DYNAMIC} made hosts of",
}


class OriginResolver:
    """Line hostname -> the inventory (or made) host it belongs to, for one log host's reads.

    Made hosts are remembered in the order they were met; lines that belong to no host this
    log host carries are counted, by reason, for :meth:`notes`.
    """

    def __init__(self, carried: Carried, max_dynamic: int = MAX_DYNAMIC) -> None:
        self.carried = carried
        self.max_dynamic = max_dynamic
        self.dynamic: list[str] = []
        self._cache: dict[str, tuple[str | None, str]] = {}
        self._dropped: dict[str, _Dropped] = {}

    def origin(self, hostname: str, *, count: bool = True) -> str | None:
        """The host a line logged under ``hostname`` belongs to; None: not this log host's
        (counted for the notes unless ``count`` is false)."""
        hit = self._cache.get(hostname)
        if hit is None:
            hit = self._resolve(hostname)
            if len(self._cache) < _CACHE_MAX:
                self._cache[hostname] = hit
        if hit[0] is None and count:
            self._dropped.setdefault(hit[1], _Dropped()).add(hostname)
        return hit[0]

    def _resolve(self, hostname: str) -> tuple[str | None, str]:
        key = hostname.casefold()
        c = self.carried
        found = c.keys.get(key)
        if found is not None:
            return found, ""
        if key in c.foreign:
            return None, "foreign"
        if key in c.ambiguous:
            return None, "ambiguous"
        if not c.wildcard:
            return None, "unknown"
        name = hostname.lower()
        if not dns_hostname(name):
            return None, "invalid"
        if name in self.dynamic:
            return name, ""
        if len(self.dynamic) >= self.max_dynamic:
            return None, "overflow"
        self.dynamic.append(name)
        return name, ""

    def notes(self) -> tuple[str, ...]:
        """One note per reason some lines were not kept, with a few of their hostnames."""
        out = []
        for why, d in self._dropped.items():
            names = ", ".join(d.names) + (", ..." if d.more else "")
            out.append(f"{d.lines} lines {_WHY[why]} not kept ({names})")
        return tuple(out)

    def origins(self) -> tuple[str, ...]:
        """Every host this log host reports: itself, the hosts it carries, the made ones."""
        return (self.carried.reader, *self.carried.hosts, *self.dynamic)


@dataclass(frozen=True, slots=True)
class Reading:
    """One host to connect to and read, and whose answers that read gives.

    ``report``: the selected inventory hosts whose answers come from this read (the host
    itself, or hosts it carries); ``dynamic``: also the hosts made of its lines' names
    (``collects = ["*"]`` and no ``--host``/``--group``); ``only``: the origins whose lines
    the read keeps (None: all it carries).
    """

    host: Host
    report: tuple[str, ...]
    carried: Carried | None = None
    dynamic: bool = False
    only: frozenset[str] | None = None

    def resolver(self) -> OriginResolver | None:
        """A fresh resolver for one read (None: an ordinary host, its lines are its own)."""
        return OriginResolver(self.carried) if self.carried is not None else None

    def reports(self, name: str) -> bool:
        return name in self.report or (self.dynamic and name not in self.known)

    @property
    def known(self) -> frozenset[str]:
        c = self.carried
        return frozenset((c.reader, *c.hosts)) if c is not None else frozenset()


def plan_readings(
    inventory: Sequence[Host], selected: Sequence[Host], *, everything: bool
) -> list[Reading]:
    """The hosts to read for a selection: each selected host on its own, or on its log host
    (one read per log host, whatever the number of hosts it carries), in inventory order.

    ``everything``: no ``--host``/``--group`` was given (a ``"*"`` log host also reports the
    hosts made of its lines' names).
    """
    by_name = {h.name: h for h in inventory}
    wanted: dict[str, list[str]] = {}
    for h in selected:
        wanted.setdefault(reader_of(h), []).append(h.name)
    out: list[Reading] = []
    for h in inventory:
        if h.name not in wanted:
            continue
        names = tuple(wanted[h.name])
        reader = by_name[h.name]
        if not reader.collects:
            out.append(Reading(reader, names))
            continue
        carried = carried_by(inventory, reader)
        out.append(
            Reading(
                reader, names, carried, dynamic=everything and carried.wildcard,
                only=None if everything else frozenset(names),
            )
        )  # fmt: skip
    return out
